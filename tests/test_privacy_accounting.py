"""The privacy ledger against opacus's RDP accountant, noise chosen for a budget, its floor,
and the noised record count."""

from __future__ import annotations

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from federated.privacy.accounting import BudgetUnreachable, PrivacyLedger, noise_for_budget
from federated.privacy.record_count import count_release, noised_count


def _reference_epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    """Epsilon from opacus's RDP analysis directly, over opacus's default orders."""
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=rate, noise_multiplier=noise, steps=steps, orders=orders)
    return get_privacy_spent(orders=orders, rdp=rdp, delta=delta)[0]


@pytest.mark.parametrize(
    ("noise", "rate", "steps"), [(1.1, 256 / 60000, 14_060), (0.8, 0.05, 300), (2.0, 1.0, 10)]
)
def test_epsilon_of_rounds_equals_the_accountant_over_all_steps(noise, rate, steps) -> None:
    ledger = PrivacyLedger()
    for chunk in (steps // 3, steps // 3, steps - 2 * (steps // 3)):  # three rounds
        ledger.spend(noise, rate, chunk)
    assert ledger.events == [(noise, rate, steps)]  # merged, as opacus merges them
    assert ledger.epsilon(1e-5) == pytest.approx(_reference_epsilon(noise, rate, steps, 1e-5))


def test_mnist_dp_sgd_setting_spends_the_published_order_of_epsilon() -> None:
    # sigma 1.1, batch 256 of 60,000, 60 epochs, delta 1e-5: DP-SGD's classic MNIST setting,
    # about 3 by the moments accountant; RDP with opacus's tighter conversion is a little lower.
    ledger = PrivacyLedger()
    ledger.spend(1.1, 256 / 60000, 60 * 60000 // 256)
    assert 2.0 < ledger.epsilon(1e-5) < 3.1


def test_a_mix_of_mechanisms_composes() -> None:
    ledger = PrivacyLedger()
    ledger.spend(1.0, 0.1, 50)
    ledger.spend(2.0, 0.2, 30)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=0.1, noise_multiplier=1.0, steps=50, orders=orders) + compute_rdp(
        q=0.2, noise_multiplier=2.0, steps=30, orders=orders
    )
    expected = get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)[0]
    assert ledger.epsilon(1e-5) == pytest.approx(expected)


def test_looking_ahead_does_not_spend() -> None:
    ledger = PrivacyLedger()
    ledger.spend(1.0, 0.1, 20)
    before = ledger.epsilon(1e-5)
    ahead = ledger.epsilon_after(1.0, 0.1, 20, 1e-5)
    assert ahead > before and ledger.epsilon(1e-5) == before
    ledger.spend(1.0, 0.1, 20)
    assert ledger.epsilon(1e-5) == pytest.approx(ahead)


def test_the_ledger_survives_a_record_round_trip() -> None:
    ledger = PrivacyLedger()
    ledger.spend(1.0, 0.1, 20)
    ledger.spend(1.5, 0.05, 7)
    assert PrivacyLedger.from_record(ledger.to_record()).events == ledger.events
    assert PrivacyLedger.from_record(None).epsilon(1e-5) == 0.0


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_noise_for_a_budget_meets_it_at_the_end_of_the_run(target: float) -> None:
    rate, steps, delta = 16 / 144, 8 * 8, 1e-5  # a client's share of a benchmark run
    noise = noise_for_budget(target, delta, rate, steps)
    ledger = PrivacyLedger()
    for _ in range(8):
        ledger.spend(noise, rate, 8)
    spent = ledger.epsilon(delta)
    assert target - 0.05 <= spent <= target


def test_noise_for_a_budget_counts_what_was_released_before() -> None:
    rate, steps, delta, target = 16 / 144, 64, 1e-5, 1.0
    count = count_release(20.0)
    alone, after_count = (
        noise_for_budget(target, delta, rate, steps),
        noise_for_budget(target, delta, rate, steps, count),
    )
    assert after_count > alone  # the count took part of the budget
    count.spend(after_count, rate, steps)
    assert target - 0.01 <= count.epsilon(delta) <= target


def test_the_floor_is_what_unbounded_noise_still_costs_and_a_target_below_it_is_refused() -> None:
    count = count_release(20.0)
    floor = count.epsilon_floor(1e-5)
    assert count.epsilon_after(1e6, 0.1, 100, 1e-5) == pytest.approx(floor, rel=1e-6)
    assert PrivacyLedger().epsilon_floor(1e-5) < floor < count.epsilon(1e-5) + 1e-12
    with pytest.raises(BudgetUnreachable, match="below"):
        noise_for_budget(floor * 0.99, 1e-5, 0.1, 100, count)
    assert noise_for_budget(floor * 1.5, 1e-5, 0.1, 100, count) > 0


def test_the_noised_count_is_the_count_plus_gaussian_noise_of_the_configured_size() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([float(noised_count(500, 20.0, generator)) for _ in range(20_000)])
    assert float(draws.mean()) == pytest.approx(500, abs=4 * 20 / 20_000**0.5 + 0.5)
    assert float(draws.std()) == pytest.approx(20.0, rel=0.03)
    assert min(noised_count(0, 20.0, generator) for _ in range(200)) == 1  # never below one
