"""Which input files a recipe needs, and which of them are missing: the one answer that
``cmbcube simulate`` (its preflight), ``cmbcube check-recipe`` and ``cmbcube assets`` share.

- ``pysm3``: the template files of the recipe's pysm3 presets at its sky nside
  (``foregrounds.presets``; needed when ``foregrounds.model: pysm3``), with pysm3's relative paths,
  looked for under ``foregrounds.data_dir`` then ``$PYSM_LOCAL_DATA`` (:func:`cmbcube.interop.templates.search_dirs`);
- ``variance``: Planck per-pixel variance maps ``{noise.variance_dir}/{freq}.fits``, one per
  detector (needed when ``noise.model: variance_maps``);
- ``chain``: the cosmology chain ``cmb.chain_file`` (needed when the CMB is on with ``cmb.prior: chain``).

Nothing here reads a file's contents or touches the network: existence only, offline.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cmbcube.errors import MissingFileError
from cmbcube.interop.templates import search_dirs

KINDS = ("pysm3", "variance", "chain")


@dataclasses.dataclass(frozen=True)
class Input:
    kind: str                 # pysm3 / variance / chain
    field: str                # the recipe field that names it
    name: str                 # pysm3: path relative to the template directories; else the file's path
    owner: object = None      # pysm3: the preset; variance: the detector (GHz)
    needed: bool = True       # the recipe uses it as configured

    @property
    def label(self) -> str:
        """How a missing file is named in messages: ``preset: relative path``, ``{freq}.fits``, the path."""
        if self.kind == "pysm3":
            return f"{self.owner}: {self.name}"
        if self.kind == "variance":
            return Path(self.name).name
        return self.name

    def present(self, dirs: list[Path] = ()) -> bool:
        """Whether it exists: a pysm3 template under one of ``dirs``, any other at its path."""
        if self.kind == "pysm3":
            return any((d / self.name).exists() for d in dirs)
        return Path(self.name).is_file()


def recipe_inputs(recipe, include_unused: bool = False) -> list[Input]:
    """Every input file the recipe needs (pysm3 templates, variance maps, chain, in that order).

    ``include_unused``: also the templates of the listed presets when ``foregrounds.model`` is not
    ``pysm3`` (``needed=False``), for ``cmbcube assets``; otherwise pysm3 is not even imported then.
    """
    r = recipe.data
    fg = r["foregrounds"]
    out = []
    uses_pysm = fg["model"] == "pysm3"
    if uses_pysm or include_unused:
        from cmbcube.interop.templates import pysm_files
        for preset in fg["presets"]:
            out += [Input("pysm3", "foregrounds.presets", rel, preset, uses_pysm)
                    for rel in pysm_files(preset, r["sky_nside"])]
    if r["noise"]["model"] == "variance_maps":
        out += [Input("variance", "noise.variance_dir", str(Path(r["noise"]["variance_dir"]) / f"{freq}.fits"), freq)
                for freq in r["detectors"]]
    if r["cmb"]["enabled"] and r["cmb"]["prior"] == "chain":
        out.append(Input("chain", "cmb.chain_file", str(r["cmb"]["chain_file"])))
    return out


def missing(recipe, kinds=KINDS) -> list[Input]:
    """The needed inputs of ``kinds`` that are absent."""
    dirs = search_dirs(recipe["foregrounds"]["data_dir"])
    return [i for i in recipe_inputs(recipe) if i.kind in kinds and i.needed and not i.present(dirs)]


def require(recipe) -> None:
    """Raise MissingFileError naming the recipe field (and every missing file of it) when a needed
    input is absent; checked in this order: pysm3 templates, chain, variance maps."""
    absent = missing(recipe)
    templates = [i.label for i in absent if i.kind == "pysm3"]
    if templates:
        where = ", ".join(map(str, search_dirs(recipe["foregrounds"]["data_dir"]))) \
            or "nowhere: set foregrounds.data_dir or PYSM_LOCAL_DATA"
        raise MissingFileError(f"foregrounds.presets: {len(templates)} pysm3 template file(s) missing "
                               f"(looked in {where}):\n  " + "\n  ".join(templates))
    if any(i.kind == "chain" for i in absent):
        raise MissingFileError(f"cmb.chain_file: {recipe['cmb']['chain_file']} does not exist")
    maps = [i.label for i in absent if i.kind == "variance"]
    if maps:
        raise MissingFileError(f"noise.variance_dir: {recipe['noise']['variance_dir']} lacks {', '.join(maps)}")


def pysm_summary(recipe) -> str:
    """check-recipe's line on the pysm3 templates: all present, or which are missing."""
    absent = [i.label for i in missing(recipe, ("pysm3",))]
    return "pysm3 templates: " + ("all present" if not absent else f"{len(absent)} missing:\n    "
                                  + "\n    ".join(absent))
