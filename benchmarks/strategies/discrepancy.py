"""How far each strategy's global product lands from the mean of the clients' products.

No rank-r pair can be closer to M = Σ p_k B_k A_k than its best rank-r approximation
(Eckart–Young), so each strategy's distance is reported as a multiple of that floor, next to the
time its pure aggregation function takes. Clients are synthetic but shaped like training: they
start from the same factors and drift apart (tests/lora_factor_cases.py).

    PYTHONPATH=. python -m benchmarks.strategies.discrepancy    # discrepancy.json and a table
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from strategies.fedavg import aggregate_fedavg
from strategies.fedex_lora import aggregate_fedex_lora
from strategies.flexlora import aggregate_flexlora
from strategies.flora import aggregate_flora
from strategies.hetlora import aggregate_hetlora
from strategies.lora_factors import Factors, product, truncate_rank
from strategies.lora_fair import aggregate_lora_fair
from tests.lora_factor_cases import (
    make_clients,
    make_weights,
    reference_mean_of_products,
    tail_bound,
)

HERE = Path(__file__).resolve().parent
CLIENTS, D_OUT, D_IN, RANK = 10, 384, 384, 8


def _fedavg(clients: list[Factors], weights: list[float]) -> dict[str, torch.Tensor]:
    flat = [{f"{m}/{i}": t for m, pair in c.items() for i, t in enumerate(pair)} for c in clients]
    mean = aggregate_fedavg(flat, weights)
    return {m: mean[f"{m}/1"] @ mean[f"{m}/0"] for m in clients[0]}


def _factors(result: Factors) -> dict[str, torch.Tensor]:
    return {m: product(pair) for m, pair in result.items()}


def _fedex(clients: list[Factors], weights: list[float]) -> dict[str, torch.Tensor]:
    means, residual = aggregate_fedex_lora(clients, weights)
    return {m: product(pair) + residual[m] for m, pair in means.items()}


def _flexlora_client_start(rank: int) -> Callable:
    def run(clients: list[Factors], weights: list[float]) -> dict[str, torch.Tensor]:
        _, truncated = aggregate_flexlora(clients, weights, RANK)
        return {m: product(truncate_rank(pair, rank)) for m, pair in truncated.items()}

    return run


STRATEGIES: dict[str, Callable] = {
    "fedavg": _fedavg,
    "fedex-lora (factors + residual)": _fedex,
    "flora (stacked, rank Σr_k)": lambda c, w: _factors(aggregate_flora(c, w)),
    "flexlora (client restart, rank r)": _flexlora_client_start(RANK),
    "lora-fair iterative": lambda c, w: _factors(aggregate_lora_fair(c, w, solver="iterative")),
    "lora-fair closed-form": lambda c, w: _factors(aggregate_lora_fair(c, w, solver="closed-form")),
    "hetlora": lambda c, w: _factors(aggregate_hetlora(c, w, RANK)),
}


def measure(drift: float) -> dict[str, dict[str, float]]:
    clients = make_clients([RANK] * CLIENTS, D_OUT, D_IN, seed=0, drift=drift)
    weights = make_weights(CLIENTS, seed=0)
    target = reference_mean_of_products(clients, weights)
    floor = sum(tail_bound(t, RANK) for t in target.values())
    rows = {}
    for name, aggregate in STRATEGIES.items():
        started = time.perf_counter()
        products = aggregate(clients, weights)
        seconds = time.perf_counter() - started
        distance = sum(float((products[m].double() - target[m]).norm()) for m in target)
        rows[name] = {"distance": distance, "over_floor": distance / floor, "seconds": seconds}
    rows["floor (best rank-r)"] = {"distance": floor, "over_floor": 1.0, "seconds": 0.0}
    return rows


def main() -> None:
    torch.set_num_threads(1)
    results = {
        "settings": {"clients": CLIENTS, "d_out": D_OUT, "d_in": D_IN, "rank": RANK, "modules": 2},
        "drift": {str(d): measure(d) for d in (0.3, 1.0)},
    }
    (HERE / "discrepancy.json").write_text(json.dumps(results, indent=1) + "\n")
    header = ["strategy", "drift 0.3: ‖G − M‖ ÷ floor", "drift 1.0", "aggregation (2 modules)"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|")
    low, high = results["drift"]["0.3"], results["drift"]["1.0"]
    for name in low:
        print(
            f"| {name} | {low[name]['over_floor']:.4f} | {high[name]['over_floor']:.4f} | "
            f"{1e3 * high[name]['seconds']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
