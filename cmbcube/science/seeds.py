"""Deterministic seeds from (master seed, split, sim, component, detector, field).

SHA-256 of a readable key, so a seed never depends on worker count or order and
two different keys never share a stream by accident.
"""
from __future__ import annotations

import hashlib

import numpy as np


def seed_key(master: int, split: str, sim: int | str, component: str,
             detector: int | str = "", field: str = "") -> str:
    """Return the readable key a seed is derived from."""
    return f"cmbcube/{master}/{split}/{sim}/{component}/{detector}/{field}"


def derive_seed(master: int, split: str, sim: int | str, component: str,
                detector: int | str = "", field: str = "") -> int:
    """Derive a 64-bit seed from the SHA-256 of the key."""
    digest = hashlib.sha256(seed_key(master, split, sim, component, detector, field).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rng(master: int, split: str, sim: int | str, component: str,
        detector: int | str = "", field: str = "") -> np.random.Generator:
    """Return a PCG64 generator seeded from the key."""
    return np.random.Generator(np.random.PCG64(derive_seed(master, split, sim, component, detector, field)))


def foreground_streams(master: int, split: str, sim: int | str):
    """The two generator factories of one sim's synthetic Galaxy, by component name: its templates
    (``foreground-<name>``) and its SED parameters (``sed-<name>``)."""
    return (lambda name: rng(master, split, sim, "foreground-" + name),
            lambda name: rng(master, split, sim, "sed-" + name))
