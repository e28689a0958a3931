"""Counter-based pseudo-randomness that lives in the state.

graft_core may not touch the ``random`` module (its global state would make
runs irreproducible). Instead every random draw is a pure function of
``(seed, node key, counter)``: SplitMix64 applied to a mix of the three. The
counter is part of the node's state, so replaying the same events from the same
state draws the same numbers -- which is what lets a simulator reproduce a run
bit for bit (the graft_sim contract).
"""

from __future__ import annotations

_MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    """One SplitMix64 output for the 64-bit input ``x`` (Steele et al. 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stable_key(text: str) -> int:
    """A 64-bit FNV-1a hash of ``text``'s UTF-8 bytes.

    Python's own ``hash(str)`` changes with PYTHONHASHSEED, so it must never
    feed anything that affects results.
    """
    h = 0xCBF29CE484222325
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & _MASK
    return h


def draw(seed: int, key: int, counter: int, lo: int, hi: int) -> int:
    """A uniform-ish integer in ``[lo, hi]`` (inclusive) for draw number ``counter``."""
    if hi <= lo:
        return lo
    x = splitmix64((seed & _MASK) ^ splitmix64(key ^ splitmix64(counter)))
    return lo + x % (hi - lo + 1)
