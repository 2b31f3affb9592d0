"""Rouge-L, exact match, macro-F1 and the confusion matrix against their definitions."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from federated.inference.class_metrics import accuracy, confusion_matrix, macro_f1, plot_confusion
from federated.inference.text_metrics import exact_match, lcs_length, rouge_l, rouge_tokens


def _lcs_by_search(a: list[str], b: list[str]) -> int:
    """The longest subsequence of ``a`` that is also one of ``b``, by trying every one."""
    for n in range(min(len(a), len(b)), 0, -1):
        subsequences_b = set(itertools.combinations(b, n))
        if any(s in subsequences_b for s in itertools.combinations(a, n)):
            return n
    return 0


def test_the_lcs_is_the_longest_common_subsequence() -> None:
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abc") for _ in range(rng.randint(0, 7))]
        assert lcs_length(a, b) == _lcs_by_search(a, b), (a, b)


def test_rouge_l_is_the_f_measure_of_the_lcs() -> None:
    # LCS "the cat on the mat": 5 of 6 tokens each way.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a", "c"): precision 2/2, recall 2/4.
    assert rouge_l("a c", "a b c d") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("Hello, WORLD!", "hello world") == 1.0
    assert rouge_tokens("It's 3:30 p.m.") == ["it", "s", "3", "30", "p", "m"]


def test_exact_match_ignores_case_punctuation_and_articles_only() -> None:
    assert exact_match("The answer is: Yes!", "answer is yes") == 1.0
    assert exact_match("  a   human. ", "Human") == 1.0
    assert exact_match("human beings", "human") == 0.0


def test_macro_f1_and_the_matrix_agree_with_scikit_learn() -> None:
    rng = random.Random(1)
    for classes in (2, 3, 5):
        labels = [rng.randrange(classes) for _ in range(60)]
        predicted = [y if rng.random() < 0.6 else rng.randrange(classes) for y in labels]
        matrix = confusion_matrix(labels, predicted, classes)
        expected = sk_confusion(labels, predicted, labels=range(classes))
        assert matrix.tolist() == expected.tolist()
        assert macro_f1(matrix) == pytest.approx(f1_score(labels, predicted, average="macro"))
        assert accuracy(matrix) == pytest.approx(
            sum(a == b for a, b in zip(labels, predicted, strict=True)) / 60
        )
    few, guessed = [0, 1, 1, 0, 1], [0, 1, 3, 0, 0]  # a partition holding 2 of 8 classes
    assert macro_f1(confusion_matrix(few, guessed, 8)) == pytest.approx(
        f1_score(few, guessed, average="macro")
    )
    # Class 2 is neither held nor predicted: it does not count; class 1 predicted, never true: 0.
    assert macro_f1(confusion_matrix([0, 0, 0], [0, 0, 0], 3)) == 1.0
    assert macro_f1(confusion_matrix([0, 0, 0], [0, 0, 1], 3)) == pytest.approx((0.8 + 0) / 2)


def test_the_confusion_picture_is_written(tmp_path) -> None:
    path = plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["noun", "verb"], "t", tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
