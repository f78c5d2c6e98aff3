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

from cmbcube.errors import param
from cmbcube.recipe_schema import SCHEMA, SPLITS, TRUTH_PRODUCTS, RecipeError, check_cluster, shown, validate_section
from cmbcube.science import instrument

# Sections that describe how to compute or what to do downstream, not the simulated data:
# left out of the recipe hash.
NOT_HASHED = ("cluster", "pipeline")
# cmb.lensing of stores made before the field existed (2026-12-07): not a method the simulator runs
LEGACY_LENSING = "band-limit (before 2026-12-07)"
# Values (mapping entries, list items, scalars) a YAML document may expand to through its aliases (*name):
# real recipes have a few hundred; nine nested anchors of nine aliases each (a "billion laughs") expand to
# ~10^9, which the type-error message's repr used to build (minutes, then MemoryError)
MAX_YAML_VALUES = 100_000
MAX_RECIPE_BYTES = 16 * 2 ** 20         # a recipe file is a few KB


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
        raise RecipeError(f"{param('overrides')} {shown(assignment)}: expected KEY=VALUE, "
                          f"e.g. {param('overrides')} nside=128")
    key, value = assignment.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    key = key if len(key) <= 80 else key[:76] + " ..."        # echoed in the messages below
    node = raw
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise RecipeError(f"{param('overrides')} {key}: {part[:80]} is not a section")
        node = nxt
    try:
        parsed = yaml.load(value, Loader=_UniqueKeyLoader) if value.strip() else None  # noqa: S506 - safe loader
    except _TooLarge as err:
        raise RecipeError(f"{param('overrides')} {key}: the value {err}") from None
    except yaml.YAMLError as err:
        problem = str(getattr(err, "problem", None) or err).splitlines()[0]
        raise RecipeError(f"{param('overrides')} {key}: the value {value[:80]!r} is not valid YAML ({problem}); "
                          "quote it or write it as in the recipe, "
                          f"e.g. {param('overrides')} 'splits={{train: 16, test: 4}}'") from None
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


class _TooLarge(yaml.YAMLError):
    """A document whose aliases expand to more than MAX_YAML_VALUES values, or that refers to itself."""


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def check_expansion(root, limit: int = MAX_YAML_VALUES) -> int:
    """How many values the node graph ``root`` stands for once its aliases are written out (a node
    reached through k aliases counts k times); _TooLarge past ``limit`` or for an alias inside its
    own anchor.  Linear in the number of distinct nodes: each one's count is computed once."""
    counts: dict[int, int] = {}
    open_ids: set[int] = set()              # nodes whose children are being counted: the current path
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_ids.discard(key)
            counts[key] = 1 + sum(counts[id(c)] for c in _children(node))
            if counts[key] > limit:
                raise _TooLarge(f"expands to more than {limit:,} values through its aliases (*name): a YAML "
                                "alias bomb? (real recipes have a few hundred values); write the values out")
            continue
        if key in counts:
            continue
        if key in open_ids:
            raise _TooLarge(f"refers to itself: an alias inside its own anchor (line {node.start_mark.line + 1})")
        open_ids.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in counts)
    return counts[id(root)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml's safe loader, refusing a key repeated in one mapping (yaml itself keeps the last), a document
    whose aliases expand past MAX_YAML_VALUES values (checked on the node graph, before any Python
    object is built) and integers too long for Python to convert."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            check_expansion(node)
        return node

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError:                   # past sys.get_int_max_str_digits()
            raise yaml.constructor.ConstructorError(
                None, None, f"an integer of {len(str(node.value)):,} digits; no recipe field takes one that "
                "large", node.start_mark) from None

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
                        None, None, f"duplicate key {shown(key, 80)} (first given on line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)


def parse_yaml(text: str, source: str = "recipe"):
    """YAML text -> Python objects; a repeated key or a syntax error is a RecipeError naming
    ``source``, the key and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _TooLarge as err:
        raise RecipeError(f"{source}: the document {err}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = err.problem or str(err)
        raise RecipeError(f"{source}: {where}{problem}" + ("" if problem.startswith(("duplicate key", "an integer of"))
                                                            else " (not valid YAML)")) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML: {err}") from None


def load(path: str | Path, overrides: tuple | list = ()) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} does not exist")
    try:
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {size:,} bytes; a recipe is a few KB of YAML (at most "
                              f"{MAX_RECIPE_BYTES // 2 ** 20} MiB): is this the recipe file?")
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
