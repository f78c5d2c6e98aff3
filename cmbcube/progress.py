"""One progress helper for every long stage (simulate, ilc, train, predict, analyze, ingest,
export, verify).

On a terminal: a live tqdm bar on stderr with items done / total and the rate.
Anywhere else (a pipe, a log file, a batch job): no bar and no carriage returns; at
``-v`` a plain log line when the stage starts (what it does, on which items, where it
writes) and one when it ends (how many, how fast).  ``progress=True`` forces the
bar, ``progress=False`` (``--no-progress``) turns it off, ``None`` decides from the
terminal.
"""
from __future__ import annotations

import logging
import sys
import time

import numpy as np

log = logging.getLogger("cmbcube")


def interactive(progress: bool | None = None, stream=None) -> bool:
    """Whether to draw a bar: forced by ``progress``, else only when ``stream`` (stderr) is a terminal."""
    if progress is not None:
        return bool(progress)
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):    # closed or replaced streams
        return False


def _screen(stream) -> dict:
    """{} (tqdm measures the terminal itself) unless the terminal reports a zero size (a fresh pseudo-terminal,
    some containers): then 100 x 40, as tqdm hides bars below a zero-row screen."""
    import os
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return {"ncols": 100, "nrows": 40}
    return {} if size.columns > 0 and size.lines > 0 else {"ncols": size.columns or 100, "nrows": size.lines or 40}


def describe_items(items) -> str:
    """``[("train", 0), ("train", 1), ("test", 3)]`` -> ``train 0-1, test 3`` (runs of consecutive sims)."""
    groups: dict = {}
    plain = []
    for item in items:
        if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[-1], (int, np.integer)):
            groups.setdefault(" ".join(map(str, item[:-1])), []).append(int(item[-1]))
        elif isinstance(item, (int, np.integer)):
            groups.setdefault("sims", []).append(int(item))
        else:
            plain.append(item)
    parts = []
    for split, sims in groups.items():
        sims = sorted(set(sims))
        ranges, start = [], sims[0]
        for a, b in zip(sims, sims[1:] + [None]):
            if b != a + 1:
                ranges.append(f"{start}" if start == a else f"{start}-{a}")
                start = b
        parts.append(f"{split} {','.join(ranges)}")
    if plain:
        parts.append(f"{len(plain)} other")
    return "; ".join(parts)


class Progress:
    """A stage's progress: ``update()`` per finished item; a bar on a terminal, log lines elsewhere."""

    def __init__(self, total: int, desc: str, unit: str = "sim", progress: bool | None = None, items=None,
                 where: str | None = None, leave: bool = True, initial: int = 0):
        self.desc, self.unit, self.total, self.n = desc, unit, int(total), int(initial)
        self.t0 = time.perf_counter()
        self.failed = 0
        self.bar = None
        self.leave = leave
        what = f"{desc}: {total} {unit}(s) to do"
        if items is not None:
            text = describe_items(items)
            if text:
                what += f" ({text})"
        if where:
            what += f" -> {where}"
        if leave:                       # nested inner bars (batches of an epoch) do not announce themselves
            log.info(what)
        if interactive(progress):
            from tqdm import tqdm
            self.bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, leave=leave, file=sys.stderr,
                            **_screen(sys.stderr))

    def update(self, n: int = 1, failed: bool = False, **postfix) -> None:
        self.n += n
        self.failed += int(failed)
        if self.bar is not None:
            if self.failed:
                postfix["failed"] = self.failed
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(n)
        elif postfix:
            log.debug("%s: %d/%d %s(s) %s", self.desc, self.n, self.total, self.unit,
                      " ".join(f"{k}={v}" for k, v in postfix.items()))

    def set_postfix(self, **postfix) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix)

    def close(self) -> None:
        seconds = time.perf_counter() - self.t0
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.n and self.leave:          # nested inner bars (batches) end silently
            log.info("%s: %d/%d %s(s) in %.1f s (%.2f %s/s)%s", self.desc, self.n, self.total, self.unit, seconds,
                      self.n / seconds if seconds else 0.0, self.unit,
                      f", {self.failed} failed" if self.failed else "")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class LogHandler(logging.StreamHandler):
    """Log lines to stderr that do not break a live bar: written through tqdm, which clears the bars,
    prints the line and redraws them below it (a plain stream handler when no bar is drawn)."""

    def emit(self, record):
        try:
            from tqdm import tqdm
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


def iterate(iterable, desc: str, unit: str = "sim", progress: bool | None = None, total: int | None = None,
            leave: bool = True, **kw):
    """``for x in iterate(items, "predict"): ...`` with a :class:`Progress` around it."""
    items = list(iterable) if total is None else iterable
    total = len(items) if total is None else total
    with Progress(total, desc, unit, progress, leave=leave,
                  items=items if isinstance(items, list) else None, **kw) as bar:
        for item in items:
            yield item
            bar.update(1)


def bar(total: int, desc: str, unit: str = "sim", progress: bool | None = None, **kw) -> Progress:
    return Progress(total, desc, unit, progress, **kw)
