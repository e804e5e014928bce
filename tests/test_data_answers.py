"""The numeric answer extractor on realistic model outputs."""

from __future__ import annotations

import pytest
from qtune.data.answers import answers_match, extract_final_number, normalize_number

EXTRACT_CASES = [
    ("Natalia sold 24 clips in May.\nShe sold 48+24 = 72 clips.\n#### 72", "72"),
    ("The total cost is 1,000 + 250 = 1,250.\n#### 1,250", "1250"),
    ("#### $1,250.00", "1250"),
    ("She earns 2 * 9 = $18 a day. The answer is $18.", "18"),
    ("The temperature fell to -3", "-3"),
    ("It dropped by 5 degrees, so it is now −3 degrees.", "-3"),
    ("He has 3/4 of a pizza", "0.75"),
    ("So 0.5 hours = 30 minutes. The answer is 30", "30"),
    ("I think 12.00", "12"),
    ("Each costs 3.50 dollars", "3.5"),
    ("Her grade went up by 15%.", "15"),
    ("The rope is 12 cm long.", "12"),
    ("He paid 5 dollars for it.", "5"),
    ("Answer: 42", "42"),
    ("Final answer: **$7**", "7"),
    ("The final answer is approximately 3.14159 meters.", "3.14159"),
    ("Therefore \\boxed{56} apples.", "56"),
    ("So x = \\boxed{\\frac{1}{2}}", "0.5"),
    ("First 3 + 4 = 7, then 7 * 2 = 14. So he walked 14 miles.", "14"),
    ("There are 1,234,567 stars.", "1234567"),
    ("10 - 3 = 7 apples remain", "7"),
    ("Ingredients:\n- 3 eggs\n- 2 cups", "2"),
    ("The answer is 5. Wait, I made a mistake. The answer is 6.", "6"),
    ("#### 8\nThe answer is 9", "8"),
    ("The answer is 30 minutes, which is 0.5 hours.", "30"),
    ("She saves .25 of her pay", "0.25"),
    ("I am not sure how to solve this.", None),
    ("", None),
    (None, None),
]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_final_number(text: str | None, expected: str | None) -> None:
    assert extract_final_number(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1,250", "1250"),
        ("$18.", "18"),
        ("3.50", "3.5"),
        ("-3", "-3"),
        ("3/4", "0.75"),
        ("15%", "15"),
        ("0.000", "0"),
        ("1/3", "0.333333"),
        ("twelve", None),
        ("12 apples", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_number(raw: str | None, expected: str | None) -> None:
    assert normalize_number(raw) == expected


def test_answers_match_compares_values_not_text() -> None:
    assert answers_match("The answer is $1,250.00.", "1250")
    assert answers_match("#### 0.750", "3/4")
    assert answers_match("so the answer is 1250", "Some working\n#### 1,250")
    assert not answers_match("The answer is 1251", "1250")
    assert not answers_match("no idea", "5")
    assert not answers_match("#### 5", "not a number")
