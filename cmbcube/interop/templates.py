"""pysm3 template files: where they are looked for, which a preset needs, loading presets from them.

One search path for every reader (the simulator, ``simulate``'s preflight, ``check-recipe`` and
``assets``): the recipe's ``foregrounds.data_dir``, then ``$PYSM_LOCAL_DATA``.  Loading never
touches the network: a missing file is reported before anything runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from cmbcube.errors import MissingFileError

NOWHERE = "(no directory: set foregrounds.data_dir or PYSM_LOCAL_DATA)"


def search_dirs(data_dir: str | None) -> list[Path]:
    """Directories pysm3 templates are looked for in, in order: ``data_dir``, then ``$PYSM_LOCAL_DATA``."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get("PYSM_LOCAL_DATA"):
        dirs.append(Path(os.environ["PYSM_LOCAL_DATA"]))
    return dirs


def pysm_files(preset: str, nside: int) -> list[str]:
    """Template files a pysm3 preset names in its configuration (relative paths)."""
    from pysm3.sky import PRESET_MODELS
    config = PRESET_MODELS[preset]
    sections = [v for v in config.values() if isinstance(v, dict)] or [config]
    files = []
    for section in sections:
        available = section.get("available_nside")
        templates_nside = min(available, key=lambda x: abs(x - nside)) if available else nside
        for key, value in section.items():
            # unit strings ("MJy / sr", input_units, unit_I...) contain "/" but name no file
            if isinstance(value, str) and ("/" in value or value.endswith((".fits", ".gz", ".txt"))) \
                    and key != "class" and "unit" not in key:
                if "{layer}" in value:
                    files += [value.format(layer=k) for k in range(1, int(section.get("num_layers", 3)) + 1)]
                else:
                    files.append(value.replace("{nside}", str(templates_nside)))
        version = section.get("websky_version")
        if version is not None:
            files.append(f"websky/{version}/")          # a directory of per-frequency maps
    return list(dict.fromkeys(files))                       # each file once (a1 names emissivity.txt twice)


def missing_pysm_files(presets, nside: int, data_dir: str | None) -> list[str]:
    """``"preset: file"`` for each template of ``presets`` found in none of :func:`search_dirs`."""
    dirs = search_dirs(data_dir)
    missing = []
    for preset in presets:
        for name in pysm_files(preset, nside):
            if not any((d / name).exists() for d in dirs):
                missing.append(f"{preset}: {name}")
    return missing


def pysm_sky(presets, nside: int, data_dir: str | None) -> dict:
    """pysm3 model objects for presets, reading templates from local directories only."""
    from cmbcube.science.foregrounds import PresetSum
    missing = missing_pysm_files(presets, nside, data_dir)
    if missing:
        where = ", ".join(str(d) for d in search_dirs(data_dir)) or NOWHERE
        raise MissingFileError("pysm3 template files missing (looked in " + where + "):\n  " + "\n  ".join(missing))
    from astropy.utils.data import conf
    conf.allow_internet = False          # never hang on the network: offline means fail fast
    if data_dir:
        os.environ["PYSM_LOCAL_DATA"] = str(data_dir)
    from pysm3.sky import PRESET_MODELS, create_components_from_config
    return {preset: PresetSum(create_components_from_config({preset: PRESET_MODELS[preset]}, nside=nside))
            for preset in presets}
