"""The layering rules of README's Architecture section, checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cmbcube"
# the order of the layers: a module may import its own layer and the ones before it
ORDER = ("base", "science", "networks", "recipe", "cube", "interop", "stages", "face")
BASE = {"errors", "registry", "progress"}
MAX_LINES = 400


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(("cmbcube",) + parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text(), str(path))


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) < 2:
        return "face"                                   # cmbcube/__init__.py: cmbcube.open
    top = parts[1]
    if top in ("science", "networks", "cube", "interop", "stages"):
        return top
    if top in BASE:
        return "base"
    if top in ("recipe", "recipe_schema"):
        return "recipe"
    if top == "testing":
        return "testing"                                # the one testing hook: outside the layers
    return "face"


def imported(tree):
    """(line, module) of every cmbcube import, module-level or inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cmbcube":
            for alias in node.names:                    # `from cmbcube.science import sht` names a module
                yield node.lineno, f"{node.module}.{alias.name}" if node.module.count(".") < 1 or \
                    node.module in ("cmbcube.science", "cmbcube.networks", "cmbcube.cube", "cmbcube.interop",
                                    "cmbcube.stages") else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cmbcube":
                    yield node.lineno, alias.name


def test_every_import_points_down_the_layers():
    wrong = []
    for name, path, tree in modules():
        mine = layer(name)
        if mine == "testing":
            continue
        for line, target in imported(tree):
            theirs = layer(target)
            if target == "cmbcube.__version__" or theirs == "testing":
                continue
            if ORDER.index(theirs) > ORDER.index(mine):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({mine}) imports {target} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_only_the_cube_touches_zarr():
    found = []
    for name, path, tree in modules():
        if layer(name) == "cube":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "zarr" for a in node.names) or \
                    isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "zarr":
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not found, "zarr imported outside cmbcube/cube/: " + ", ".join(found)


def test_science_touches_no_files_environment_or_cluster():
    banned_calls = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "getenv", "load", "save"}
    banned_modules = {"os", "pathlib", "dask", "distributed", "zarr", "xarray", "astropy", "shutil", "tempfile"}
    found = []
    for name, path, tree in modules():
        if layer(name) != "science":
            continue
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                found.append(f"{where} from {node.module}")
            elif isinstance(node, ast.Attribute) and node.attr == "environ":
                found.append(f"{where} .environ")
            elif isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
                if called in banned_calls and owner in ("", "np", "numpy", "Path", "os", "pickle", "json"):
                    found.append(f"{where} {owner + '.' if owner else ''}{called}()")
    assert not found, "science/ must stay pure:\n" + "\n".join(found)


def test_no_module_is_over_the_size_limit():
    long = [f"{path.relative_to(PACKAGE.parent)} ({n} lines)" for _, path, _ in modules()
            if (n := len(path.read_text().splitlines())) > MAX_LINES]
    assert not long, "modules over ~400 lines (split them by concept): " + ", ".join(long)


def test_no_private_name_is_imported_across_modules():
    found = []
    for _, path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "cmbcube":
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.module}.{a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_rules_can_fail(tmp_path):
    """The checks above see what they claim to: a science module reading a file and importing the
    cube, parsed the same way, is caught."""
    tree = ast.parse("from cmbcube import cube\nimport os\nx = open('f').read()\n")
    targets = [t for _, t in imported(tree)]
    assert targets == ["cmbcube.cube"] and ORDER.index(layer(targets[0])) > ORDER.index("science")
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "open" in calls


def test_outside_the_cube_no_code_indexes_a_store_group_by_array_name():
    """Stages may hold the cube's opened group (an opaque handle passed back to cube functions) but
    never index it by an array name or read its attributes: only cube/ knows the names."""
    found = []
    for name, path, tree in modules():
        if layer(name) in ("cube", "testing"):
            continue
        for node in ast.walk(tree):
            target = node.value if isinstance(node, (ast.Subscript, ast.Attribute)) else None
            if isinstance(target, ast.Name) and target.id in ("group", "root", "zgroup"):
                if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) or \
                        isinstance(node, ast.Attribute) and node.attr in ("attrs", "array_keys", "arrays"):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not found, "store arrays named outside cmbcube/cube/: " + ", ".join(found)
