"""Icechunk store locations: bad spellings, versions on plain stores and missing repositories are clear
errors (exit 2, no traceback) that create nothing."""
import os

import pytest

pytest.importorskip("icechunk")

import cmbcube  # noqa: E402
from cmbcube.cli import main  # noqa: E402
from cmbcube.cube import icechunk_store as ics  # noqa: E402


def test_location_spellings_parse_and_bad_ones_name_the_allowed(tmp_path):
    loc = ics.parse("icechunk+s3://bucket/some/prefix@paper-v1")
    assert (loc.scheme, loc.root, loc.prefix, loc.version) == ("s3", "bucket", "some/prefix", "paper-v1")
    assert ics.parse(f"icechunk+file://{tmp_path}/c").root == f"{tmp_path}/c"
    for bad in ("icechunk+gs://bucket/x", "icechunk+s3://", "icechunk+file:///x@bad!name"):
        with pytest.raises(ics.IcechunkError, match="icechunk\\+s3://BUCKET/PREFIX|version 'bad!name': use"):
            ics.parse(bad)


def test_bad_inputs_exit_2_and_create_nothing(tmp_path, capsys):
    missing = f"icechunk+file://{tmp_path}/nothing-here"
    assert main(["info", missing]) == 2
    assert "no such store" in capsys.readouterr().err
    assert main(["tag", str(tmp_path), "v1"]) == 2
    assert "only Icechunk stores have versions" in capsys.readouterr().err
    assert main(["info", str(tmp_path), "--version", "v1"]) == 2
    assert "only Icechunk stores have versions" in capsys.readouterr().err
    assert main(["info", "icechunk+gs://bucket/x"]) == 2
    err = capsys.readouterr().err
    assert "icechunk+s3://BUCKET/PREFIX" in err and "Traceback" not in err
    with pytest.raises(ics.IcechunkError, match="only Icechunk stores"):
        cmbcube.open(str(tmp_path), version="v1")
    assert os.listdir(tmp_path) == []
