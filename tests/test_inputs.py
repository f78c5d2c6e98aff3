"""Which input files a recipe needs (cmbcube.interop.inputs): one answer for simulate's preflight,
check-recipe and `cmbcube assets`, and the same search the simulator does."""
from pathlib import Path

import pytest

from cmbcube import cli
from cmbcube.errors import MissingFileError
from cmbcube.interop import assets, inputs, templates
from cmbcube.recipe import load
from cmbcube.stages import simulate


@pytest.fixture
def recipe_file(tmp_path, monkeypatch):
    monkeypatch.delenv("PYSM_LOCAL_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
name: inputs-test
nside: 8
sky_nside: 16
detectors: [100, 143]
splits: {{train: 1}}
foregrounds: {{model: pysm3, presets: [f1, cib1], data_dir: {tmp_path}/pysm}}
noise: {{model: variance_maps, variance_dir: {tmp_path}/variance}}
cmb: {{prior: chain, chain_file: {tmp_path}/chains/planck.txt}}
""")
    return str(path)


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")


def test_the_list_of_inputs_follows_the_recipe(recipe_file, tmp_path):
    recipe = load(recipe_file)
    got = [(i.kind, i.field, i.label) for i in inputs.recipe_inputs(recipe)]
    assert got == [("pysm3", "foregrounds.presets", "f1: pysm_2/ff_t_new.fits"),
                   ("pysm3", "foregrounds.presets", "cib1: websky/0.4/"),
                   ("variance", "noise.variance_dir", "100.fits"), ("variance", "noise.variance_dir", "143.fits"),
                   ("chain", "cmb.chain_file", str(tmp_path / "chains/planck.txt"))]
    plain = load(recipe_file, ["foregrounds.model=synthetic", "noise.model=white", "cmb.prior=fixed"])
    assert inputs.recipe_inputs(plain) == []                      # nothing to read: pysm3 not even imported
    unused = inputs.recipe_inputs(plain, include_unused=True)      # `cmbcube assets` still lists the templates
    assert [i.name for i in unused] == ["pysm_2/ff_t_new.fits", "websky/0.4/"] and not any(i.needed for i in unused)


def test_template_search_is_the_simulators(recipe_file, tmp_path, monkeypatch):
    """data_dir first, then $PYSM_LOCAL_DATA: what inputs calls missing is what the simulator would miss."""
    recipe = load(recipe_file)
    data_dir = recipe["foregrounds"]["data_dir"]

    def both():
        mine = [i.label for i in inputs.missing(recipe, ("pysm3",))]
        return mine, templates.missing_pysm_files(["f1", "cib1"], 16, data_dir)

    assert both() == (["f1: pysm_2/ff_t_new.fits", "cib1: websky/0.4/"],) * 2
    monkeypatch.setenv("PYSM_LOCAL_DATA", str(tmp_path / "env"))
    touch(tmp_path / "env/pysm_2/ff_t_new.fits")                     # found through the environment
    assert both() == (["cib1: websky/0.4/"],) * 2
    (tmp_path / "pysm/websky/0.4").mkdir(parents=True)                # a directory of maps
    assert both() == ([], [])
    assert templates.search_dirs(data_dir) == [tmp_path / "pysm", tmp_path / "env"]


def test_preflight_check_recipe_and_assets_give_one_answer(recipe_file, tmp_path, capsys):
    recipe = load(recipe_file)
    store = tmp_path / "s.zarr"
    # simulate refuses before creating anything, naming the field and every missing file of it
    assert cli.main(["simulate", recipe_file, "--store", str(store), "--scheduler", "synchronous"]) == 2
    err = capsys.readouterr().err
    assert "foregrounds.presets: 2 pysm3 template file(s) missing" in err and "cib1: websky/0.4/" in err
    assert not store.exists()
    assert cli.main(["check-recipe", recipe_file]) == 0
    assert "pysm3 templates: 2 missing:\n    f1: pysm_2/ff_t_new.fits\n    cib1: websky/0.4/" in capsys.readouterr().out
    touch(tmp_path / "pysm/pysm_2/ff_t_new.fits")
    touch(tmp_path / "pysm/websky/0.4/cib_0100.fits")        # a directory of maps (assets wants it non-empty)
    assert cli.main(["check-recipe", recipe_file]) == 0
    assert "pysm3 templates: all present" in capsys.readouterr().out
    # then the chain, then the variance maps, each named by its field
    with pytest.raises(MissingFileError, match=r"^cmb\.chain_file: .*planck\.txt does not exist"):
        simulate.preflight(recipe)
    touch(tmp_path / "chains/planck.txt")
    touch(tmp_path / "variance/143.fits")
    with pytest.raises(MissingFileError, match=r"^noise\.variance_dir: .*variance lacks 100\.fits$"):
        simulate.preflight(recipe)
    # `cmbcube assets` calls missing exactly what preflight calls missing
    listed = [a for a in assets.list_assets(recipe) if a.needed and not a.present]
    assert [a.path for a in listed] == [tmp_path / "variance/100.fits"]
    touch(tmp_path / "variance/100.fits")
    simulate.preflight(recipe)
    assert inputs.missing(recipe) == [] and all(a.present for a in assets.list_assets(recipe) if a.needed)
