"""Rouge-L and exact match of generated answers against reference answers.

Rouge-L is the F-measure of the longest common subsequence of the two token sequences (Lin,
2004), with the tokenization of Google's ``rouge_score`` without stemming (lower case, every
run of characters other than a-z and 0-9 a separator), the measure FedKSeed reports on held-out
instructions. Exact match compares the answers normalised as SQuAD's evaluation does (lower
case, punctuation and the articles a/an/the dropped, whitespace collapsed).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def rouge_tokens(text: str) -> list[str]:
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence of ``a`` and ``b`` (dynamic programming,
    one row kept)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """Rouge-L F1 of ``prediction`` against ``reference``; 0 when either has no token."""
    pred, ref = rouge_tokens(prediction), rouge_tokens(reference)
    common = lcs_length(pred, ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))
