"""The arithmetic of SecAgg+: quantize an update, mask it, and unmask a sum of masked updates.

Entries live in the integers modulo 2^32. A client's masked vector is

    y_u = q_u + PRG(b_u) + Σ_{v neighbour, v < u} PRG(s_uv) − Σ_{v neighbour, v > u} PRG(s_uv)

where q_u is its quantized update, b_u a seed only it knows, and s_uv the key it agrees with
neighbour v (Diffie-Hellman). In the sum over clients the pairwise masks cancel; the server
removes each survivor's PRG(b_u) from b_u rebuilt from its neighbours' shares, and the pairwise
masks of a client that dropped out from its key rebuilt the same way.

The PRG is ChaCha20 keyed by SHA-256 of the seed: a mask cannot be guessed from its seed's size
(Flower's own mask generator folds its seed into 32 bits, few enough to search).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

MOD_BITS = 32
MOD = 1 << MOD_BITS
_NONCE = bytes(16)  # one key, one stream: each seed masks one vector


def prg(seed: bytes, size: int) -> np.ndarray:
    """``size`` pseudo-random integers in [0, 2^32) from ``seed``, as int64."""
    key = hashlib.sha256(seed).digest()
    stream = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    return np.frombuffer(stream.update(bytes(4 * size)), dtype="<u4").astype(np.int64)


def quantize(vector: np.ndarray, clipping_range: float, bits: int) -> np.ndarray:
    """Entries clipped to ±``clipping_range`` and mapped to integers in [0, 2^bits − 1], with
    unbiased stochastic rounding (its randomness from the OS, so it hides nothing either)."""
    top = (1 << bits) - 1
    scaled = (np.clip(vector, -clipping_range, clipping_range) + clipping_range) * (
        top / (2 * clipping_range)
    )
    floor = np.floor(scaled)
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    up = rng.random(scaled.shape) < (scaled - floor)
    return (floor + up).astype(np.int64)


def rounding_margin(entries: int, clipping_range: float, bits: int) -> float:
    """How far stochastic rounding can move a vector of ``entries`` in L2: under one quantization
    step per entry. A client that must stay within a norm bound after rounding clips to the bound
    minus this."""
    return 2 * clipping_range / ((1 << bits) - 1) * math.sqrt(entries)


def rounding_problem(
    entries: int, clipping_range: float, bits: int, bound: float, keep: float
) -> str | None:
    """Why rounding an update of ``entries`` at ``bits`` leaves a client less than ``keep`` of
    its norm bound ``bound`` (it clips to the bound less the margin), naming the bits that
    would not; None when it does not."""
    room, margin = (1.0 - keep) * bound, rounding_margin(entries, clipping_range, bits)
    if margin <= room:
        return None
    needed = next(b for b in range(bits, 64) if rounding_margin(entries, clipping_range, b) <= room)
    fix = f"secagg.quantization-bits >= {needed}" if needed <= 26 else "a smaller clipping range"
    return (
        f"rounding {entries} entries at {bits} bits (secagg.clipping-range {clipping_range:g}) "
        f"moves an update by up to {margin:.3g} in L2, more than {room:.3g} "
        f"({1 - keep:.0%} of the clip bound {bound:.3g}); it needs {fix}"
    )


def dequantize_sum(total: np.ndarray, count: int, clipping_range: float, bits: int) -> np.ndarray:
    """The float sum of ``count`` quantized vectors from the integer sum of them."""
    top = (1 << bits) - 1
    return total.astype(np.float64) * (2 * clipping_range / top) - count * clipping_range


def pair_sign(me: int, other: int) -> int:
    """+1 when ``me`` adds the pair's mask, −1 when it subtracts it: the two cancel."""
    return 1 if me > other else -1


def mask(
    quantized: np.ndarray, private_seed: bytes, pair_keys: Mapping[int, bytes], me: int
) -> np.ndarray:
    """y_u: the quantized update plus its private mask and its signed pairwise masks, mod 2^32,
    as uint32: four bytes an entry on the wire, as many as the plain float32 update."""
    size = quantized.size
    out = quantized + prg(private_seed, size)
    for other, key in pair_keys.items():
        out += pair_sign(me, other) * prg(key, size)
    return (out % MOD).astype(np.uint32)


def sum_masked(vectors: Iterable[np.ndarray], size: int) -> np.ndarray:
    """The sum of masked vectors modulo 2^32, as int64 (uint32 sums would wrap silently)."""
    total = np.zeros(size, dtype=np.int64)
    for vector in vectors:
        total = (total + vector.astype(np.int64)) % MOD
    return total


def unmask(
    masked_sum: np.ndarray,
    private_seeds: Iterable[bytes],
    orphan_pairs: Iterable[tuple[int, int, bytes]],
) -> np.ndarray:
    """The sum of the survivors' quantized updates, mod 2^32.

    ``private_seeds``: every survivor's b_u. ``orphan_pairs``: (survivor u, dropped v, s_uv) for
    each pair whose other half never arrived.
    """
    size = masked_sum.size
    out = masked_sum.astype(np.int64)
    for seed in private_seeds:
        out -= prg(seed, size)
    for survivor, dropped, key in orphan_pairs:
        out -= pair_sign(survivor, dropped) * prg(key, size)
    return out % MOD
