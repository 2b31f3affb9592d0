"""LoRA-FAIR: keep FedAvg's factors, and correct B̄ so the product moves toward the true mean.

Bian et al., "LoRA-FAIR: Federated LoRA Fine-Tuning with Aggregation and Initialization
Refinement", ICCV 2025, https://arxiv.org/abs/2411.14961.

The server knows the ideal update M = Σ_k p_k B_k A_k but can only send a rank-r pair. Instead of
replacing (Ā, B̄) by an SVD of M (FlexLoRA), it keeps Ā and adds a small correction dB to B̄, so
the clients resume from factors close to the ones they trained (the paper's "initialization
refinement") while (B̄ + dB)Ā gets closer to M. With E(dB) = (B̄ + dB)Ā − M:

- ``lora_fair_correction`` minimises ||E(dB)||_F + lam·||dB||_F, the paper's distance plus its
  norm regulariser, by proximal gradient descent;
- ``lora_fair_closed_form`` minimises the ridge version ||E(dB)||_F² + lam·||dB||_F² exactly.

The two lams are not the same knob: at the optimum of the first, dB is the ridge solution of the
second for the effective lam·||E||/||dB|| (set the gradient to zero to see it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from logging import INFO
from typing import Any

import torch
from flwr.supercore import log

from federated.config import RunConfig, option
from federated.protocol.global_model import GlobalModel, Tensors
from strategies.fedavg import aggregate_fedavg
from strategies.lora_factors import Factors, check_same_modules, mean_of_products, weighted_mean
from strategies.lora_strategy import LoraStrategy

SOLVERS = ("iterative", "closed-form")


@dataclass(frozen=True)
class LoraFairOptions:
    lam: float = option(
        0.01,
        "Weight of the penalty that keeps the corrected B near the mean B.",
        minimum=0.0,
        key="lambda",
    )
    solver: str = option(
        "iterative",
        "iterative (the paper's objective, first-order steps) or closed-form (the ridge "
        "least-squares solution of the same problem).",
        choices=SOLVERS,
    )
    steps: int = option(200, "Steps of the iterative solver.", minimum=1)


def _residual_problem(
    a_bar: torch.Tensor, b_bar: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and return (Ā, R = M − B̄Ā) in float64: dB must make dB·Ā approach R."""
    if a_bar.ndim != 2 or b_bar.ndim != 2 or a_bar.shape[0] != b_bar.shape[1]:
        raise ValueError(f"need Ā [r, d_in] and B̄ [d_out, r], got {a_bar.shape}, {b_bar.shape}")
    if target.shape != (b_bar.shape[0], a_bar.shape[1]):
        raise ValueError(f"target must be {b_bar.shape[0]} x {a_bar.shape[1]}, got {target.shape}")
    a = a_bar.to(torch.float64)
    return a, target.to(torch.float64) - b_bar.to(torch.float64) @ a


def lora_fair_correction(
    a_bar: torch.Tensor,
    b_bar: torch.Tensor,
    target: torch.Tensor,
    *,
    lam: float = 0.01,
    steps: int = 200,
    lr: float = 1.0,
) -> torch.Tensor:
    """dB minimising ||(B̄ + dB)Ā − M||_F + lam·||dB||_F, by proximal gradient from dB = 0.

    Both terms are norms, not squares, so the objective's curvature is ĀĀᵀ/||E||: it grows as the
    residual E shrinks, and no fixed learning rate suits every problem. Each step therefore uses
    the step size ``lr``·||E||/λ_max(ĀĀᵀ), whose quadratic upper bound majorises the distance
    term (||Y|| <= (||Y||² + ||E||²) / 2||E||), and applies the lam term through its exact
    proximal map (shrink dB toward zero). With ``lr`` <= 1 every step decreases the objective,
    and the rate depends only on the conditioning of ĀĀᵀ, not on the scale of M or of the
    factors. The best iterate seen is returned, dB = 0 included, so the objective is never above
    FedAvg's.

    Parameters
    ----------
    a_bar, b_bar
        The averaged factors Ā [r, d_in] and B̄ [d_out, r].
    target
        The ideal update M = Σ_k p_k B_k A_k [d_out, d_in].
    lam
        Weight of ||dB||_F: larger keeps B̄ + dB closer to the clients' own B̄.
    steps
        Most proximal gradient steps; it stops earlier once a step changes the objective by less
        than a relative 1e-12 (on realistic problems, d 384-576 and r 4-16, that takes 10-20).
        0 returns zeros.
    lr
        Step size as a fraction of the majorising step, in (0, 2): 1 is the largest with
        guaranteed descent; above 1 a step may overshoot (the best iterate is still kept).

    Returns
    -------
    torch.Tensor
        dB [d_out, r] in ``b_bar``'s dtype (computed in float64).
    """
    if lam < 0 or steps < 0 or not 0 < lr < 2:
        raise ValueError(f"need lam >= 0, steps >= 0 and 0 < lr < 2, got {lam}, {steps}, {lr}")
    a, r = _residual_problem(a_bar, b_bar, target)
    gram_max = float(torch.linalg.eigvalsh(a @ a.T)[-1]) if a.shape[0] else 0.0
    delta = torch.zeros(r.shape[0], a.shape[0], dtype=torch.float64)
    best, best_value = delta, float(torch.linalg.matrix_norm(r))
    previous = best_value
    if gram_max <= 0:  # Ā = 0: no correction of B can change the product
        return best.to(b_bar.dtype)
    for _ in range(steps):
        error = delta @ a - r
        error_norm = float(torch.linalg.matrix_norm(error))
        if error_norm == 0.0:  # the product already equals M; only the lam term could still move
            break
        step = lr * error_norm / gram_max
        # Gradient of ||E|| is EĀᵀ/||E||, so step·gradient = lr·EĀᵀ/λ_max: free of the scale of E.
        moved = delta - (lr / gram_max) * (error @ a.T)
        moved_norm = float(torch.linalg.matrix_norm(moved))
        shrink = max(0.0, 1.0 - step * lam / moved_norm) if moved_norm > 0 else 0.0
        delta = moved * shrink
        value = float(torch.linalg.matrix_norm(delta @ a - r)) + lam * shrink * moved_norm
        if value < best_value:
            best, best_value = delta, value
        if abs(previous - value) <= 1e-12 * previous:  # stalled: at the optimum, to rounding
            break
        previous = value
    return best.to(b_bar.dtype)


def lora_fair_closed_form(
    a_bar: torch.Tensor, b_bar: torch.Tensor, target: torch.Tensor, *, lam: float = 0.01
) -> torch.Tensor:
    """dB minimising ||(B̄ + dB)Ā − M||_F² + lam·||dB||_F², the ridge least-squares correction.

    Setting the gradient to zero gives dB (ĀĀᵀ + lam·I) = (M − B̄Ā)Āᵀ, an r×r system solved (not
    inverted) in float64. At lam = 0 the minimum-norm least-squares solution (M − B̄Ā)Ā⁺ is used,
    the best any correction of B alone can do; dB·Ā is then the projection of M − B̄Ā onto Ā's
    row space.

    Parameters
    ----------
    a_bar, b_bar
        The averaged factors Ā [r, d_in] and B̄ [d_out, r].
    target
        The ideal update M = Σ_k p_k B_k A_k [d_out, d_in].
    lam
        Ridge weight, >= 0; on the scale of ĀĀᵀ's eigenvalues.

    Returns
    -------
    torch.Tensor
        dB [d_out, r] in ``b_bar``'s dtype.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    a, r = _residual_problem(a_bar, b_bar, target)
    if lam == 0:
        # dB·Ā ≈ R  <=>  Āᵀ·dBᵀ ≈ Rᵀ; gelsd gives the minimum-norm solution even if Ā is singular.
        delta = torch.linalg.lstsq(a.T, r.T, driver="gelsd").solution.T
    else:
        gram = a @ a.T + lam * torch.eye(a.shape[0], dtype=torch.float64)
        # dB·G = RĀᵀ with G symmetric  <=>  G·dBᵀ = ĀRᵀ.
        delta = torch.linalg.solve(gram, a @ r.T).T
    return delta.to(b_bar.dtype)


def aggregate_lora_fair(
    clients: Sequence[Factors],
    weights: Sequence[float],
    *,
    lam: float = 0.01,
    solver: str = "iterative",
    steps: int = 200,
) -> Factors:
    """FedAvg's (Ā, B̄) per module, with B̄ corrected toward the mean of the clients' products.

    Parameters
    ----------
    clients
        One ``Factors`` per client; every client must use the same rank per module.
    weights
        One non-negative weight per client, usually its number of training examples.
    lam
        Regulariser weight, passed to the solver (its meaning differs between the two; see the
        module docstring).
    solver
        ``"iterative"`` (the paper's norm objective, ``lora_fair_correction``) or
        ``"closed-form"`` (its ridge version, ``lora_fair_closed_form``).
    steps
        Steps of the iterative solver; ignored by the closed form.

    Returns
    -------
    Factors
        (Ā, B̄ + dB) per module, in the clients' dtype.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got '{solver}'")
    names = check_same_modules(clients, same_rank=True)
    targets = mean_of_products(clients, weights, dtype=torch.float64)
    out: Factors = {}
    for name in names:
        dtype = clients[0][name][0].dtype
        a_bar = weighted_mean([c[name][0].to(torch.float64) for c in clients], weights)
        b_bar = weighted_mean([c[name][1].to(torch.float64) for c in clients], weights)
        if solver == "iterative":
            delta = lora_fair_correction(a_bar, b_bar, targets[name], lam=lam, steps=steps)
        else:
            delta = lora_fair_closed_form(a_bar, b_bar, targets[name], lam=lam)
        out[name] = (a_bar.to(dtype), (b_bar + delta).to(dtype))
    return out


class LoraFair(LoraStrategy):
    """LoRA-FAIR (https://arxiv.org/abs/2411.14961): average A and B, then correct B on the server
    so (B̄ + dB)Ā comes close to the mean of products; clients start from (Ā, B̄ + dB) and the base
    weights stay as they are."""

    name = "lora-fair"
    linear = False
    options = LoraFairOptions

    def __init__(
        self,
        initial: GlobalModel,
        *,
        scale: float,
        lam: float,
        solver: str,
        steps: int,
        **fedavg_kwargs: Any,
    ) -> None:
        super().__init__(initial, scale=scale, **fedavg_kwargs)
        if solver not in SOLVERS:
            raise ValueError(f"lora-fair solver {solver!r} is not one of {', '.join(SOLVERS)}")
        self.lam, self.solver, self.steps = lam, solver, steps

    @classmethod
    def from_config(
        cls,
        config: RunConfig,
        initial: GlobalModel,
        options: LoraFairOptions,
        **fedavg_kwargs: Any,
    ) -> LoraFair:
        return cls(
            initial,
            scale=config.lora.scale,
            lam=options.lam,
            solver=options.solver,
            steps=options.steps,
            **fedavg_kwargs,
        )

    def summary(self) -> None:
        log(
            INFO,
            "\t├──> lora-fair: lambda %g, solver %s, %d steps",
            self.lam,
            self.solver,
            self.steps,
        )
        super().summary()

    def aggregate(self, updates: Sequence[Tensors], weights: Sequence[float]) -> None:
        corrected = aggregate_lora_fair(
            [self.factors_of(u) for u in updates],
            weights,
            lam=self.lam,
            solver=self.solver,
            steps=self.steps,
        )
        head = aggregate_fedavg([self.others_of(u) for u in updates], weights)
        self.model = GlobalModel(self.with_factors(corrected, head))
