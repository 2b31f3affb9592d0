"""Per-example scores of the chatterbot_heldout tasks, loaded by lm-eval (``!function``) in its
own environment, so only lm-eval and its dependencies are imported here.

Exact match is lm-eval's (case and punctuation ignored, the answer stripped of surrounding
whitespace); Rouge-L is rouge_score's F-measure without stemming, the tokenization
``fedtune evaluate`` uses as well.
"""

from __future__ import annotations

from lm_eval.api.metrics import exact_match_hf_evaluate
from rouge_score import rouge_scorer

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """Exact match and Rouge-L of one generated answer."""
    answer, reference = results[0].strip(), doc["answer"].strip()
    matched = exact_match_hf_evaluate(
        [answer], [reference], ignore_case=True, ignore_punctuation=True
    )["exact_match"]
    return {
        "exact_match": float(matched),
        "rougeL": _ROUGE.score(reference, answer)["rougeL"].fmeasure,
    }


def process_loglikelihood(doc: dict, results: list[tuple[float, bool]]) -> dict[str, object]:
    """The reference answer's log-likelihood with its length in bytes (lm-eval's bits_per_byte
    and weighted_perplexity aggregations divide the sums), and whether it is greedy."""
    loglikelihood, is_greedy = results[0]
    weighted = (loglikelihood, len(doc["answer"].encode("utf-8")))
    return {"bits_per_byte": weighted, "byte_perplexity": weighted, "acc": float(is_greedy)}
