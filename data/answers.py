"""Numeric answers: pull the final number out of a model's reply and compare it to gold.

The math assistant is trained to end with a ``#### N`` line (the GSM8K format), but a
small model does not always obey, so the extractor falls back, in order of trust, to
"the answer is N", "answer: N", ``\\boxed{N}`` and finally the last number in the text.
Numbers are normalised so that ``$1,250.00``, ``1250`` and ``1,250.`` compare equal.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# One number as people and models write it: optional minus and currency sign, digits
# with optional thousands commas, optional decimals, optional "/denominator", optional %.
# The look-behind stops a match from starting inside a word, a number or a date
# ("x2", "1.2.3", "3/4/2020") and stops "5-3" from reading as "-3".
_NUMBER = (
    r"(?<![\w.,/])"
    r"(?P<sign>-)?(?:[$€£]\s?)?"
    r"(?P<body>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<denominator>\d+(?:\.\d+)?)(?![\d/]))?"
    r"(?:\s?%)?"
)
NUMBER_RE = re.compile(_NUMBER)

_HASHES_RE = re.compile(r"####")
# "the answer is", "final answer:", "answer = ", "Answer: **" ... then the number on
# the same line, after at most a few words ("approximately", "$", "**").
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|was|would be|will be|[:=])\s*:?", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\s*\{(?P<rest>(?:[^{}]|\{[^{}]*\})*)\}")
_LATEX_FRAC_RE = re.compile(r"\\d?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}")
# How far after "answer is" the number may start (skips "approximately $", "**").
_ANSWER_WINDOW = 40

_DECIMALS = 6


def _clean(text: str) -> str:
    """Unify the characters models use for minus signs and LaTeX fractions."""
    text = text.replace("\u2212", "-").replace("\u2013", "-").replace("\u00a0", " ")
    return _LATEX_FRAC_RE.sub(r"\1/\2", text)


def _to_fraction(match: re.Match[str]) -> Fraction | None:
    try:
        value = Fraction(Decimal(match.group("body").replace(",", "")))
        denominator = match.group("denominator")
        if denominator is not None:
            divisor = Fraction(Decimal(denominator))
            if divisor == 0:
                return None
            value /= divisor
    except (InvalidOperation, ValueError):
        return None
    return -value if match.group("sign") else value


def _format(value: Fraction) -> str:
    """Integers without a decimal point, other values with up to six decimals."""
    if value.denominator == 1:
        return str(value.numerator)
    text = f"{float(value):.{_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def normalize_number(text: str | None) -> str | None:
    """Canonical string of one number (``"$1,250.00"`` -> ``"1250"``, ``"3/4"`` -> ``"0.75"``,
    ``"15%"`` -> ``"15"``); ``None`` when ``text`` is not a single number."""
    if text is None:
        return None
    cleaned = _clean(str(text)).strip().rstrip(".").strip()
    match = NUMBER_RE.fullmatch(cleaned)
    if match is None:
        return None
    value = _to_fraction(match)
    return None if value is None else _format(value)


def _first_number(text: str, window: int | None = None) -> str | None:
    for match in NUMBER_RE.finditer(text):
        if window is not None and match.start() > window:
            return None
        value = _to_fraction(match)
        if value is not None:
            return _format(value)
    return None


def _last_number(text: str) -> str | None:
    for match in reversed(list(NUMBER_RE.finditer(text))):
        value = _to_fraction(match)
        if value is not None:
            return _format(value)
    return None


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]


def extract_final_number(text: str | None) -> str | None:
    """The final numeric answer in a model reply, normalised; ``None`` if it holds no number.

    Preference: the last ``#### N``; the last "the answer is N" / "answer: N";
    the last ``\\boxed{N}``; otherwise the last number anywhere in the text.
    """
    if not text:
        return None
    text = _clean(text)
    for pattern, window in ((_HASHES_RE, None), (_ANSWER_IS_RE, _ANSWER_WINDOW)):
        for match in reversed(list(pattern.finditer(text))):
            found = _first_number(" " + _rest_of_line(text, match.end()), window)
            if found is not None:
                return found
    for match in reversed(list(_BOXED_RE.finditer(text))):
        found = _last_number(" " + match.group("rest"))
        if found is not None:
            return found
    return _last_number(text)


def answers_match(
    prediction_text: str | None, gold: str, rel_tol: float = 1e-6, abs_tol: float = 1e-6
) -> bool:
    """Whether the number extracted from ``prediction_text`` equals ``gold`` numerically.

    ``gold`` may be a bare number (``"1,250"``) or a whole GSM8K solution ending in ``#### N``.
    """
    predicted = extract_final_number(prediction_text)
    expected = normalize_number(gold)
    if expected is None:
        expected = extract_final_number(gold)
    if predicted is None or expected is None:
        return False
    return math.isclose(float(predicted), float(expected), rel_tol=rel_tol, abs_tol=abs_tol)
