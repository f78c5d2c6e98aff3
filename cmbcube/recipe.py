"""Recipes: plain YAML describing a dataset, validated field by field.

Every error names the offending field (dotted path) and what is allowed, and is
raised before anything touches a store. The fields, their defaults and checks are
``cmbcube.recipe_schema.SCHEMA``; this module loads, overrides, validates and hashes.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import yaml

from cmbcube.recipe_schema import (SCHEMA, SPLITS, TRUTH_PRODUCTS, RecipeError,  # noqa: F401
                                   check_cluster, validate_section)
from cmbcube.science import instrument

# Sections that describe how to compute or what to do downstream, not the simulated data:
# left out of the recipe hash.
NOT_HASHED = ("cluster", "pipeline")
# cmb.lensing of stores made before the field existed (2026-12-07): not a method the simulator runs
LEGACY_LENSING = "band-limit (before 2026-12-07)"


@dataclasses.dataclass
class Recipe:
    """A validated recipe: ``data`` is the full normalised mapping (defaults filled in)."""
    data: dict
    text: str = ""
    source: str = ""
    overrides: tuple = ()

    def __getitem__(self, key):
        return self.data[key]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def splits(self) -> dict[str, int]:
        return {s: self.data["splits"].get(s, 0) for s in SPLITS}

    @property
    def hashed(self) -> dict:
        out = {k: v for k, v in self.data.items() if k not in NOT_HASHED}
        if out.get("instrument", {}).get("bandpass", "delta") == "delta":
            # delta bandpasses were the only kind before instrument.bandpass existed: the same hash as then
            out["instrument"] = {k: v for k, v in out["instrument"].items() if k != "bandpass"}
        return out

    @property
    def hash(self) -> str:
        blob = json.dumps(self.hashed, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def detectors(self) -> list[instrument.Detector]:
        ins = self.data["instrument"]
        # stores written before instrument.bandpass existed were simulated with delta bandpasses
        return [instrument.detector(f, ins["beams"], ins["beam_overrides"], ins.get("bandpass", "delta"))
                for f in self.data["detectors"]]


def _apply_override(raw: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set nside=128")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"--set {key}: {part} is not a section")
        node = nxt
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        raise RecipeError(f"--set {key}: the value {value[:80]!r} is not valid YAML ({problem}); quote it or "
                          "write it as in the recipe, e.g. --set 'splits={train: 16, test: 4}'") from None
    node[_maybe_int(parts[-1]) if parts[-2:-1] == ["beam_overrides"] else parts[-1]] = parsed


def _maybe_int(text):
    try:
        return int(text)
    except ValueError:
        return text


def validate(raw: dict, text: str = "", source: str = "", overrides: tuple | list = ()) -> Recipe:
    raw = copy.deepcopy(raw) if raw is not None else {}
    for assignment in overrides:
        _apply_override(raw, assignment)
    data = validate_section(raw, SCHEMA, "")
    if not data["name"]:
        raise RecipeError("name: required; give the dataset a name, e.g. name: quickstart")
    if data["sky_nside"] is None:
        data["sky_nside"] = min(2 * data["nside"], 8192)
    if data["sky_nside"] < 2 * data["nside"]:
        raise RecipeError(f"sky_nside: {data['sky_nside']} is below 2 x nside = {2 * data['nside']}; "
                          "the sky model must be at least twice the output resolution (set sky_nside too, "
                          "or leave it out for 2 x nside)")
    data["detectors"] = sorted(data["detectors"])
    data["fields"] = [f for f in instrument.FIELDS if f in data["fields"]]
    data["splits"] = {s: data["splits"].get(s, 0) for s in SPLITS}
    data["instrument"]["beam_overrides"] = {int(k): float(v) for k, v in
                                            data["instrument"]["beam_overrides"].items()}
    if data["cmb"]["prior"] == "chain" and not data["cmb"]["chain_file"]:
        raise RecipeError("cmb.chain_file: required when cmb.prior is 'chain'")
    if data["noise"]["model"] == "variance_maps" and not data["noise"]["variance_dir"]:
        raise RecipeError("noise.variance_dir: required when noise.model is 'variance_maps'")
    check_cluster(data["cluster"], "cluster")
    level_max = {"blosc-lz4": 9}.get(data["storage"]["compression"], 22)
    if data["storage"]["level"] > level_max:
        raise RecipeError(f"storage.level: {data['storage']['level']} is out of range for "
                          f"{data['storage']['compression']}; use a number from 0 to {level_max}")
    if "cmb" not in data["keep"]:
        data["keep"] = ["cmb"] + data["keep"]
    data["keep"] = [k for k in TRUTH_PRODUCTS if k in data["keep"]]
    if not data["foregrounds"]["model"].startswith("synthetic") and "components" in data["keep"]:
        if data["foregrounds"]["model"] == "none":
            data["keep"].remove("components")
    return Recipe(data, text, source, tuple(overrides))
def cluster_settings(raw: dict | None) -> dict:
    """A validated ``cluster`` section with defaults filled in (also for stores written before a
    field existed); errors name the field as ``cluster.<key>``."""
    data = validate_section(raw or {}, SCHEMA["cluster"], "cluster")
    check_cluster(data, "cluster")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key repeated in one mapping (yaml itself keeps the last)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:                 # an unhashable key: yaml's own error follows
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str = "recipe"):
    """YAML text -> Python objects; a repeated key or a syntax error is a RecipeError naming
    ``source``, the key and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = err.problem or str(err)
        raise RecipeError(f"{source}: {where}{problem}" + ("" if problem.startswith("duplicate key")
                                                            else " (not valid YAML)")) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML: {err}") from None


def load(path: str | Path, overrides: tuple | list = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe: {err.strerror or err}") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as err:
        line = blob[:err.start].count(b"\n") + 1
        raise RecipeError(f"{path}: not UTF-8 text (byte 0x{blob[err.start]:02x} at offset {err.start}, line "
                          f"{line}); save the recipe as UTF-8") from None
    raw = parse_yaml(text, str(path))
    if raw is not None and not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (key: value lines), got {type(raw).__name__}")
    return validate(raw or {}, text, str(path), overrides)


def from_store_attrs(attrs: dict) -> Recipe:
    """Rebuild the recipe recorded in a store (its normalised form is authoritative)."""
    data = json.loads(attrs["recipe_normalized"])
    data["instrument"]["beam_overrides"] = {int(k): v for k, v in data["instrument"]["beam_overrides"].items()}
    # fields added after the store was made, as the code that made it behaved: CAMB to the band limit
    # (lensed BB 27-32% low at nside 32-128) and the Galaxy in its Galactic place in every sim
    data["cmb"].setdefault("lensing", LEGACY_LENSING)
    data["foregrounds"].setdefault("shared_structure", 1.0)
    return Recipe(data, attrs.get("recipe_text", ""), attrs.get("recipe_source", ""),
                  tuple(attrs.get("recipe_overrides", ())))
