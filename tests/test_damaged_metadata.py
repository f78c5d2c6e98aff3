"""Issue 21, item 7: verify is the damage tool, so a truncated per-array zarr.json is reported by name
(it was a JSONDecodeError traceback)."""
import os

from cmbcube.cli import main
from cmbcube.stages.simulate import run as simulate
from helpers import small_recipe


def test_verify_names_an_array_whose_metadata_is_truncated(tmp_path, capsys):
    store = str(tmp_path / "t.zarr")
    r = small_recipe(nside=8, splits={"train": 1, "valid": 0, "test": 0}, detectors=[143])
    assert simulate(r, store, scheduler="synchronous", progress=False).ok
    assert main(["verify", store, "--no-progress"]) == 0
    capsys.readouterr()
    with open(os.path.join(store, "obs", "zarr.json"), "r+b") as fh:
        fh.truncate(100)
    assert main(["verify", store, "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "obs" in out.out and "metadata unreadable" in out.out
    assert "Traceback" not in out.err
