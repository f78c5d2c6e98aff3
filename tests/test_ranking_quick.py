"""benchmarks/ranking.py --quick: the study's whole path (simulate, ILCs, train at two sizes, analyse, rank)."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ranking


def summary_of(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(work dir, stdout) of one --quick run."""
    work = tmp_path_factory.mktemp("rank")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert ranking.main(["--quick", "--work", str(work), "--workers", "1"]) == 0
    return work, out.getvalue()


def test_quick_ranks_every_method_at_both_sizes_and_a_rerun_trains_nothing(quick, capsys):
    work, first = quick
    summary = summary_of(first)
    assert sorted(summary) == ["2", "4"]
    for n, rows in summary.items():
        assert sorted(rows) == sorted(["nilc", "hilc", f"cmbnncs-unet5-n{n}", f"pixel-linear-n{n}"])
        for run, row in rows.items():
            mean, low, high = row["mae"]
            assert np.isfinite([mean, low, high]).all() and low <= mean <= high and mean > 0, (run, row)
            # RMSE >= MAE for every sim, so for their means too
            assert row["rmse"][0] >= mean
            if run == "hilc":
                assert row["minus_hilc"] is None
            else:
                # the paired difference on the same test skies has the difference of the means as its mean
                assert row["minus_hilc"][0] == pytest.approx(mean - rows["hilc"]["mae"][0], abs=1e-9)
                assert row["minus_hilc"][1] <= row["minus_hilc"][0] <= row["minus_hilc"][2]
    # the ILCs need no training: the same numbers at every size
    assert summary["2"]["hilc"] == summary["4"]["hilc"] and summary["2"]["nilc"] == summary["4"]["nilc"]
    assert "== 4 training skies" in first and "MAE minus HILC" in first
    # a rerun on the same --work store adds nothing and ranks the same numbers
    assert ranking.main(["--quick", "--work", str(work), "--workers", "1"]) == 0
    again = capsys.readouterr().out
    assert again.count("already in the store") == 4 and "simulated 0 new sim(s)" in again
    assert summary_of(again) == summary


def test_extra_store_refuses_other_skies_and_runs_in_both(quick, tiny_store, capsys):
    work = quick[0]
    store = str(work / "ranking_n32.zarr")
    with pytest.raises(SystemExit, match="test split differs"):
        ranking.main(["--quick", "--work", str(work), "--workers", "1", "--extra-store", tiny_store])
    # the same store twice: same skies and HILC scores, but every network run is in both
    with pytest.raises(SystemExit, match=r"exist in both stores.*drop"):
        ranking.main(["--quick", "--work", str(work), "--workers", "1", "--extra-store", store])


def test_a_run_trained_with_other_settings_is_not_reused(quick):
    work = quick[0]
    before = sorted(p.name for p in (work / "ranking_n32.zarr.runs").iterdir())
    with pytest.raises(SystemExit, match=r"cmbnncs-unet5-n2.*other settings.*epochs: 2 -> 3.*drop"):
        ranking.main(["--quick", "--work", str(work), "--workers", "1", "--epochs", "3"])
    assert sorted(p.name for p in (work / "ranking_n32.zarr.runs").iterdir()) == before
