"""Fixed-memory duplicate detection for millions of pairs: a Bloom filter over 64-bit keys.

A Python set of every pair seen grows without bound (about 100 bytes per key: ~1 GB at
10M pairs); a Bloom filter is sized once for a capacity and a false-positive rate and
never grows, so memory stays flat however long the corpus is. The price is a small,
known false-positive rate: a pair never seen before is taken for a duplicate with
probability ~`fp_rate` at full capacity (less below it); `estimated_fp_rate()` reports
the rate at the current fill so the corpus report can say what it cost.

Keys are 64-bit hashes computed by the workers (`key64`); `check_and_add` takes a whole
batch as a numpy array and returns which keys are new, in order, so a key that occurs
twice inside one batch counts as a duplicate the second time.

    >>> seen = BloomFilter(capacity=1_000_000, fp_rate=1e-3)
    >>> new = seen.check_and_add(np.array([1, 2, 1], dtype=np.uint64))   # [True, True, False]
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def key64(text: str) -> bytes:
    """An 8-byte hash of a text (stable across processes, unlike `hash()`)."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


class BloomFilter:
    """A numpy bit array with `k` probes per key (double hashing from one 64-bit hash)."""

    def __init__(self, *, capacity: int, fp_rate: float = 1e-3):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        if not 0.0 < fp_rate < 1.0:
            raise ValueError(f"fp_rate must be in (0, 1), got {fp_rate!r}")
        self.capacity = int(capacity)
        self.fp_rate = float(fp_rate)
        ln2 = math.log(2)
        bits = math.ceil(-capacity * math.log(fp_rate) / (ln2 * ln2))
        self.nbits = max(64, (bits + 63) // 64 * 64)
        self.k = max(1, round(self.nbits / capacity * ln2))
        self._bits = np.zeros(self.nbits // 8, dtype=np.uint8)
        self.added = 0

    @property
    def nbytes(self) -> int:
        return int(self._bits.nbytes)

    def _probes(self, keys: np.ndarray) -> np.ndarray:
        """(len(keys), k) bit positions."""
        h1 = keys & np.uint64(0xFFFFFFFF)
        h2 = (keys >> np.uint64(32)) | np.uint64(1)
        steps = np.arange(self.k, dtype=np.uint64)
        return (h1[:, None] + steps[None, :] * h2[:, None]) % np.uint64(self.nbits)

    def _present(self, pos: np.ndarray) -> np.ndarray:
        byte = (pos >> np.uint64(3)).astype(np.intp)
        bit = (pos & np.uint64(7)).astype(np.uint8)
        return ((self._bits[byte] >> bit) & 1).astype(bool).all(axis=1)

    def _set(self, pos: np.ndarray) -> None:
        pos = pos.ravel()
        byte = (pos >> np.uint64(3)).astype(np.intp)
        bit = (pos & np.uint64(7)).astype(np.uint8)
        # One fancy-indexed OR per bit value: positions that repeat a byte with the same bit
        # write the same value, so no update is lost (and it is far faster than ufunc.at).
        for b in range(8):
            sel = byte[bit == b]
            if sel.size:
                self._bits[sel] |= np.uint8(1 << b)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Bool mask: True where the key was (probably) added before. Adds nothing."""
        keys = np.asarray(keys, dtype=np.uint64)
        return self._present(self._probes(keys)) if keys.size else np.zeros(0, dtype=bool)

    def check_and_add(self, keys: np.ndarray) -> np.ndarray:
        """Return a bool mask: True where the key was not seen before (in earlier batches
        or earlier in this one); add the new keys."""
        keys = np.asarray(keys, dtype=np.uint64)
        if keys.size == 0:
            return np.zeros(0, dtype=bool)
        first = np.zeros(keys.size, dtype=bool)
        first[np.unique(keys, return_index=True)[1]] = True
        pos = self._probes(keys)
        new = first & ~self._present(pos)
        if new.any():
            self._set(pos[new])
            self.added += int(new.sum())
        return new

    def fill_ratio(self) -> float:
        """Share of bits set (counted in slices so no big temporary is made)."""
        step = 1 << 23
        ones = sum(int(np.bitwise_count(self._bits[i:i + step]).sum(dtype=np.int64)) for i in range(0, self._bits.size, step))
        return ones / self.nbits

    def estimated_fp_rate(self) -> float:
        """Chance that a new key is taken for a duplicate right now: fill ** k."""
        return self.fill_ratio() ** self.k

    def describe(self) -> dict[str, float | int | str]:
        return {
            "method": "bloom filter (numpy bit array, fixed size)",
            "capacity": self.capacity,
            "fp_rate_at_capacity": self.fp_rate,
            "bits": self.nbits,
            "hashes": self.k,
            "megabytes": round(self.nbytes / 2**20, 2),
            "keys_added": self.added,
            "estimated_fp_rate_now": float(f"{self.estimated_fp_rate():.3g}"),
        }
