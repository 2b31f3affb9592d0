"""One-run auditing's epsilon bound: a worked case, the δ term against its definition summed
by hand, and the attack's union bound over guess counts."""

from __future__ import annotations

import math
import random

import pytest

from federated.privacy.audit_bound import audit_epsilon, epsilon_lower_bound, p_value


def test_all_guesses_right_rule_out_the_epsilon_whose_q_to_the_r_is_the_significance() -> None:
    # 100 of 100 right under ε-DP has probability q¹⁰⁰; it is 0.05 at q = 0.05^(1/100):
    # ε = ln(q / (1 − q)) = 3.4930.
    q = 0.05 ** (1 / 100)
    assert epsilon_lower_bound(1000, 100, 100, delta=0.0) == pytest.approx(
        math.log(q / (1 - q)), abs=1e-5
    )
    assert epsilon_lower_bound(1000, 100, 100, delta=0.0) == pytest.approx(3.4930, abs=1e-4)


def _by_hand(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    q = math.exp(epsilon) / (1 + math.exp(epsilon))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    beta = sum(pmf[v:])
    alpha = max(sum(pmf[v - i : v]) / i for i in range(1, v + 1))
    return min(1.0, beta + 2 * m * delta * alpha)


@pytest.mark.parametrize(("r", "v", "epsilon"), [(10, 8, 1.0), (20, 17, 0.5), (15, 15, 2.0)])
def test_the_p_value_is_its_definition_summed_by_hand(r: int, v: int, epsilon: float) -> None:
    for delta in (0.0, 1e-5, 1e-2):
        assert p_value(500, r, v, epsilon, delta) == pytest.approx(
            _by_hand(500, r, v, epsilon, delta), rel=1e-9
        )


def test_the_bound_falls_with_delta_and_with_fewer_right_guesses() -> None:
    pure = epsilon_lower_bound(1000, 200, 180, delta=0.0)
    assert 0 < epsilon_lower_bound(1000, 200, 180, delta=1e-4) < pure
    assert epsilon_lower_bound(1000, 200, 150, delta=0.0) < pure
    assert epsilon_lower_bound(1000, 200, 100, delta=0.0) == 0.0  # chance rules nothing out
    # At the bound the p-value is the significance: the bisection found the edge.
    assert p_value(1000, 200, 180, pure, 0.0) == pytest.approx(0.05, abs=1e-4)


def test_the_attack_finds_leakage_where_scores_separate_and_none_where_they_are_noise() -> None:
    rng = random.Random(0)
    inserted = [rng.random() < 0.5 for _ in range(400)]
    separated = [float(x) + rng.gauss(0, 0.1) for x in inserted]
    bound, r, right = audit_epsilon(inserted, separated, [50, 100, 200], delta=1e-5)
    assert right == r and bound > 2.0
    # Union bound over three guess counts: each at 0.05 / 3, a stricter bound than one test.
    assert bound < epsilon_lower_bound(400, r, right, 1e-5, 0.05)
    noise = [rng.random() for _ in inserted]
    assert audit_epsilon(inserted, noise, [50, 100, 200], delta=1e-5)[0] < 0.5
