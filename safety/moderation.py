"""Moderation results in OpenAI's schema (``POST /v1/moderations``), from the crisis detector.

Only the self-harm categories are screened, so only they are reported; a category this
detector does not judge is left out rather than reported as "not flagged".

* ``self-harm/intent``: the text reads as the writer's own suicidal thoughts or plan
  (the pattern first line, then the EN/ZH classifier at its per-language threshold).
* ``self-harm/instructions``: the text encourages self-harm or describes how to do it
  (the answer screen's patterns).
* ``self-harm``: either of the two.

Scores are probabilities: the classifier's for intent (1.0 when a pattern matched),
1.0 or 0.0 for the instruction patterns.
"""

from __future__ import annotations

from qtune.safety.classifier import script_of
from qtune.safety.detector import crisis_model
from qtune.safety.patterns import matches_crisis_pattern, matches_unsafe_answer

#: The model name reported in moderation responses.
MODERATION_MODEL = "qtune-crisis-screen"
CATEGORIES = ("self-harm", "self-harm/intent", "self-harm/instructions")


def moderate(texts: list[str]) -> list[dict]:
    """One OpenAI moderation result per text (``flagged``, ``categories``,
    ``category_scores``), scored in one classifier batch."""
    model = crisis_model()
    probabilities = model.probabilities(texts) if texts else []
    results = []
    for text, probability in zip(texts, probabilities, strict=True):
        pattern = matches_crisis_pattern(text)
        intent_score = 1.0 if pattern else float(probability)
        intent = pattern or (bool(text.strip())
                             and probability >= model.thresholds[script_of(text)])
        instructions = matches_unsafe_answer(text)
        flags = {"self-harm/intent": bool(intent), "self-harm/instructions": instructions}
        flags["self-harm"] = bool(intent or instructions)
        scores = {"self-harm/intent": round(intent_score, 6),
                  "self-harm/instructions": 1.0 if instructions else 0.0}
        scores["self-harm"] = max(scores.values())
        results.append({
            "flagged": flags["self-harm"],
            "categories": {name: flags[name] for name in CATEGORIES},
            "category_scores": {name: scores[name] for name in CATEGORIES},
        })
    return results


def moderation_inputs(body: object) -> list[str]:
    """The texts of a moderation request: ``input`` as a string, a list of strings, or a
    list of content parts (``{"type": "text", "text": ...}``; images are refused).
    Raises ValueError with the reason a client sees."""
    if not isinstance(body, dict) or "input" not in body:
        raise ValueError("the request body must be a JSON object with an 'input' field")
    given = body["input"]
    items = [given] if isinstance(given, str) else given
    if not isinstance(items, list) or not items:
        raise ValueError("'input' must be a string or a non-empty list of strings")
    texts = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "text":
            item = item.get("text")
        if not isinstance(item, str):
            raise ValueError("each input must be a string or a {'type': 'text', 'text': ...} "
                             "part; this screen reads text only")
        texts.append(item)
    return texts
