"""An inversion attack on what a split device sends, as a curious server would run it: the
server holds the public frozen weights, so it can make cut-layer activations of any public text
and fit a linear map from an activation back to its token's embedding (ridge regression); it
then reads each received activation as the token whose embedding is nearest in direction to
the mapped one. After a few blocks the residual stream still carries the input token, so this
recovers most of them. What it recovers is a floor on what a server can learn, not a ceiling."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from federated.split.parts import SplitModel


def nearest_tokens(vectors: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """The token whose embedding is most similar in direction to each vector:
    (..., hidden) -> (...)."""
    flat = torch.nn.functional.normalize(vectors.reshape(-1, vectors.size(-1)).float(), dim=-1)
    table = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    return (flat @ table.T).argmax(-1).reshape(vectors.shape[:-1])


def _with_bias(hidden: torch.Tensor) -> torch.Tensor:
    return torch.cat((hidden.float(), hidden.new_ones(*hidden.shape[:-1], 1).float()), dim=-1)


@dataclass(frozen=True)
class LinearInversion:
    """The fitted map from cut-layer activations (and a bias) to token embeddings."""

    weight: torch.Tensor  # (hidden + 1, hidden)
    embeddings: torch.Tensor  # (vocabulary, hidden)

    @classmethod
    def fit(
        cls, split: SplitModel, public: Iterable[torch.Tensor], ridge: float = 1e-2
    ) -> LinearInversion:
        """Fit on the activations of ``public`` token-id rows (1-D each), behind the prompt
        the server last sent: it knows it, since it aggregated it."""
        embeddings = split.lm.model.embed_tokens.weight.detach()
        inputs, targets = [], []
        with torch.no_grad():
            for ids in public:
                row = ids.unsqueeze(0)
                hidden, _ = split.head(row, torch.ones_like(row))
                inputs.append(_with_bias(hidden[0, hidden.size(1) - ids.size(0) :]))
                targets.append(embeddings[ids].float())
        x, y = torch.cat(inputs), torch.cat(targets)
        gram = x.T @ x + ridge * torch.eye(x.size(1))
        return cls(torch.linalg.solve(gram, x.T @ y), embeddings)

    def tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The attack's guess of the token at each position of ``hidden``."""
        return nearest_tokens(_with_bias(hidden) @ self.weight, self.embeddings)

    def recovered_share(
        self, hidden: torch.Tensor, mask: torch.Tensor, input_ids: torch.Tensor
    ) -> float:
        """The share of a batch's real input tokens recovered from activations that carry
        prompt positions first, as a device sends them."""
        offset = hidden.size(1) - input_ids.size(1)
        real = mask[:, offset:].bool()
        return float((self.tokens(hidden[:, offset:]) == input_ids)[real].float().mean())
