"""Small helpers the benchmark scripts share (imported as ``common``: each script runs with
benchmarks/ first on sys.path)."""
from __future__ import annotations

import os


def load_average() -> str:
    """The machine's 1/5/15-minute load averages, printed next to every figure."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def log(msg: str) -> None:
    print(msg, flush=True)
