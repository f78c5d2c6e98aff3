"""The one stage fan-out (cmbcube.compute.fanout): every unit recorded once, failures collected not
raised, subclass hooks, the store consolidated at the end (leniently only where asked)."""
import dataclasses
import logging

import pytest

from cmbcube import cube
from cmbcube.compute import fanout
from cmbcube.compute.fanout import StageReport, fan_out


def square_unless_three(offset, split, sim):
    if sim == 3:
        raise RuntimeError(f"no {split}/{sim}")
    return {"x": float(sim * sim + offset)}


@dataclasses.dataclass
class SumReport(StageReport):
    label: str
    total: float = 0.0

    def add(self, item, result):
        super().add(item, result)
        self.total += result["x"]


def test_every_unit_lands_once_and_a_failure_does_not_stop_the_others():
    todo = [("train", k) for k in range(6)]
    report = SumReport("toy", already_done=2)
    out = fan_out(report, square_unless_three, (10,), todo, label="toy", cluster=None, scheduler="synchronous",
                  progress=False)
    assert out is report and not report.ok
    assert report.written == [item for item in todo if item[1] != 3]
    assert report.failed == [("train", 3, "RuntimeError: no train/3")]
    assert report.total == sum(k * k + 10 for k in (0, 1, 2, 4, 5))      # the subclass saw every result
    assert report.already_done == 2 and report.seconds > 0


def test_stage_report_fields_are_keyword_only_so_subclasses_keep_their_positional_fields():
    report = SumReport("name")
    assert report.label == "name" and report.written == [] and report.failed == [] and report.ok
    with pytest.raises(TypeError):
        StageReport([], [])


def test_the_store_is_consolidated_after_the_units_and_strictly_unless_lenient(monkeypatch, caplog):
    calls = []

    def broken(store):
        calls.append(store)
        raise cube.StoreError(f"{store}: cannot consolidate")

    monkeypatch.setattr(cube, "consolidate", broken)
    todo = [("test", 2), ("test", 3)]
    # lenient and a unit failed: the failures' list comes back, the consolidation error is logged
    with caplog.at_level(logging.WARNING, logger="cmbcube"):
        report = fan_out(SumReport("a"), square_unless_three, (0,), todo, label="a", cluster=None,
                         scheduler="synchronous", progress=False, consolidate="s.zarr", lenient_consolidate=True)
    assert calls == ["s.zarr"] and report.failed and "cannot consolidate" in caplog.text
    # lenient but nothing failed: the error is real
    with pytest.raises(cube.StoreError):
        fan_out(SumReport("b"), square_unless_three, (0,), todo[:1], label="b", cluster=None,
                scheduler="synchronous", progress=False, consolidate="s.zarr", lenient_consolidate=True)
    # strict: raised even with failures, and the report still has its wall time
    report = SumReport("c")
    with pytest.raises(cube.StoreError):
        fan_out(report, square_unless_three, (0,), todo, label="c", cluster=None, scheduler="synchronous",
                progress=False, consolidate="s.zarr")
    assert report.seconds > 0 and len(calls) == 3


def test_failure_text_names_the_error_type():
    assert fanout.failure_text(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"
