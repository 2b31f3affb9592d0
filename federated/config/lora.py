"""The LoRA section: rank, scale, dropout, targets and per-client ranks."""

from __future__ import annotations

from dataclasses import dataclass

from federated.config.options import option


@dataclass(frozen=True)
class LoraSettings:
    rank: int = option(8, "LoRA rank r.", minimum=1)
    alpha: float = option(16.0, "LoRA scaling numerator (scale = alpha / r).", above=0.0)
    dropout: float = option(0.05, "Dropout on the LoRA input.", minimum=0.0, maximum=0.9)
    target_modules: str = option(
        "auto",
        "Comma-separated module names to adapt, all-linear, or auto: the attention query and "
        "value projections of the preset or the architecture (peft's table by model_type), "
        "all-linear for an architecture it does not know.",
    )
    client_ranks: str = option(
        "",
        "Comma-separated ranks given to clients by partition id, cycling (e.g. 4,8,16); each at "
        "most lora.rank, which stays the server's rank. Empty: every client uses lora.rank. "
        "Every client keeps the scale alpha / lora.rank.",
    )

    @property
    def scale(self) -> float:
        """The LoRA scale shared by every client whatever its rank, so products compare."""
        return self.alpha / self.rank

    def ranks(self) -> tuple[int, ...]:
        """The cycle of client ranks (just lora.rank when client-ranks is empty)."""
        if not self.client_ranks.strip():
            return (self.rank,)
        return tuple(int(part) for part in self.client_ranks.split(","))

    def rank_of(self, partition_id: int) -> int:
        cycle = self.ranks()
        return cycle[partition_id % len(cycle)]

    @property
    def targets(self) -> tuple[str, ...] | None:
        """The module names to adapt; None for auto, resolved where the model is known."""
        if self.target_modules.strip() == "auto":
            return None
        return tuple(name.strip() for name in self.target_modules.split(",") if name.strip())
