"""The layering rules of README's Architecture section, checked on the source itself."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cmbcube"
# the order of the layers: a module may import its own layer and the ones before it
ORDER = ("base", "science", "networks", "recipe", "cube", "interop", "compute", "stages", "face")
BASE = {"errors", "registry", "progress", "drills"}
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
    if top in ("science", "networks", "cube", "interop", "compute", "stages"):
        return top
    if top in BASE:
        return "base"
    if top in ("recipe", "recipe_schema"):
        return "recipe"
    if top == "testing":
        return "testing"                                # the tests' fixtures: outside the layers, imported by none
    return "face"


def imported(tree):
    """(line, module) of every cmbcube import, module-level or inside functions."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cmbcube":
            for alias in node.names:                    # `from cmbcube.science import sht` names a module
                yield node.lineno, f"{node.module}.{alias.name}" if node.module.count(".") < 1 or \
                    node.module in ("cmbcube.science", "cmbcube.networks", "cmbcube.cube", "cmbcube.interop",
                                    "cmbcube.compute", "cmbcube.stages") else node.module
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



# ----------------------------------------------------------------------------- the compute layer (issue 24)
# (importer's layer, imported layer) pairs that are never allowed, whatever ORDER says: the Dask plumbing
# (compute/) sits below the stages and knows neither them nor the command line; the pure science never
# reaches up to it. ORDER implies these; they are named here so that reordering the layers cannot lift them.
FORBIDDEN = {("compute", "stages"), ("compute", "face"), ("science", "compute")}
TESTING = "cmbcube.testing"               # the tests' fixtures: no module of cmbcube imports them


def forbidden_imports(name: str, tree) -> list[str]:
    """``line: target`` of each import of ``tree`` (module ``name``) that FORBIDDEN or TESTING rules out."""
    mine = layer(name)
    return [f"{line}: {target}" for line, target in imported(tree)
            if (mine, layer(target)) in FORBIDDEN or target == TESTING or target.startswith(TESTING + ".")]


def test_compute_is_below_the_stages_and_nothing_imports_the_testing_fixtures():
    found = [f"{path.relative_to(PACKAGE.parent)}:{hit}" for name, path, tree in modules() if name != TESTING
             for hit in forbidden_imports(name, tree)]
    assert not found, ("compute/ imports stages/ or the command line, science/ imports compute/, or production "
                       "code imports cmbcube.testing (its drill hooks are cmbcube.drills):\n" + "\n".join(found))


def test_the_compute_rules_can_fail():
    """The rule above sees what it claims to, on toy modules parsed the same way."""
    up = ast.parse("from cmbcube.stages import simulate\ndef f():\n    from cmbcube import cli\n"
                   "from cmbcube.cube import sims\n")
    assert forbidden_imports("cmbcube.compute.fanout", up) == ["1: cmbcube.stages.simulate", "3: cmbcube.cli"]
    pure = ast.parse("import numpy\nfrom cmbcube.compute.cluster import client_for\n")
    assert forbidden_imports("cmbcube.science.sky", pure) == ["2: cmbcube.compute.cluster"]
    assert forbidden_imports("cmbcube.stages.simulate", pure) == []          # stages may import compute
    hooks = ast.parse("from cmbcube import testing\nfrom cmbcube.testing import hold\nimport cmbcube.testing\n"
                      "from cmbcube.drills import hold\n")
    assert forbidden_imports("cmbcube.stages.train", hooks) == ["1: cmbcube.testing", "2: cmbcube.testing",
                                                                "3: cmbcube.testing"]


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


# ----------------------------------------------------------------------------- one way into a store (issue 24)
CUBE = PACKAGE / "cube"
OPENER = "cmbcube.cube.opener"            # the one module that opens stores
FACTS = "cmbcube.cube.facts"              # the one module that reads the store's facts
OPENING = {"zarr": {"open", "open_group", "open_array", "open_consolidated"}, "xarray": {"open_zarr"}}
FACT_KEYS = {"nside"}                     # root attributes read only through cmbcube.cube.facts
ATTRS_READERS = {"read_attrs", "local_store_attrs", "require_store"}


def store_openings(tree) -> list[int]:
    """Lines that open a store with zarr or xarray themselves: ``zarr.open_group(...)`` (any module of
    zarr, any alias: ``zarr.api.asynchronous.open_array``, ``import zarr as z; z.open``), or an opening
    function imported from them (``from zarr import open_group``)."""
    roots = {}                                     # local name -> the package it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in OPENING:
                    roots[alias.asname or top] = top
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in OPENING:
            top = node.module.split(".")[0]
            if any(alias.name in OPENING[top] for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            while isinstance(owner, ast.Attribute):
                owner = owner.value
            if isinstance(owner, ast.Name) and owner.id in roots and node.func.attr in OPENING[roots[owner.id]]:
                lines.append(node.lineno)
    return sorted(lines)


def cube_imports(name: str, tree, members: set) -> set:
    """The cube modules ``name`` imports, at module level or inside functions: ``cmbcube.cube.X`` and
    ``from cmbcube.cube import X`` name module X; ``from cmbcube import cube``, ``import cmbcube.cube`` and
    ``from cmbcube.cube import <not a module>`` name the package itself (``cmbcube.cube``)."""
    package = "cmbcube.cube"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "cmbcube" and any(a.name == "cube" for a in node.names):
                out.add(package)
            elif node.module == package:
                out |= {f"{package}.{a.name}" if f"{package}.{a.name}" in members else package for a in node.names}
            elif node.module.startswith(package + "."):
                out.add(".".join(node.module.split(".")[:3]))
        elif isinstance(node, ast.Import):
            out |= {".".join(a.name.split(".")[:3]) for a in node.names if a.name.startswith(package)}
    return out & (members | {package}) - {name}


def import_cycle(graph: dict) -> list:
    """One circle of the import graph {module: modules it imports} as [a, b, ..., a], or []."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def fact_reads(tree) -> list[int]:
    """Lines reading a store fact out of root attributes: ``X.attrs["nside"]``, ``attrs["nside"]``,
    ``read_attrs(p)["nside"]`` and the same with ``.get("nside", ...)``."""
    def attributes(node):
        if isinstance(node, ast.Attribute):
            return node.attr == "attrs"
        if isinstance(node, ast.Name):
            return node.id == "attrs"
        if isinstance(node, ast.Call):
            func = node.func
            return (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) in ATTRS_READERS
        return False

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and \
                node.slice.value in FACT_KEYS and attributes(node.value):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and \
                node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in FACT_KEYS and \
                attributes(node.func.value):
            lines.append(node.lineno)
    return sorted(lines)


def test_only_the_opener_opens_a_store():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}" for name, path, tree in modules() if name != OPENER
             for line in store_openings(tree)]
    assert not found, f"stores opened outside {OPENER} (call its functions instead): " + ", ".join(found)


def test_no_import_circles_inside_the_cube():
    trees = {name: tree for name, _, tree in modules() if name.startswith("cmbcube.cube")}
    members = set(trees) - {"cmbcube.cube"}
    graph = {name: cube_imports(name, tree, members) for name, tree in trees.items()}
    cycle = import_cycle(graph)
    assert not cycle, "modules of cmbcube/cube/ import each other in a circle (move what they share down " \
                      "into a lower module): " + " -> ".join(cycle)


def test_store_facts_are_read_by_one_function_each():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}" for name, path, tree in modules() if name != FACTS
             for line in fact_reads(tree)]
    assert not found, f"store facts read from attributes outside {FACTS} (call cube.nside etc.): " + ", ".join(found)


def test_the_store_rules_can_fail():
    """The three rules above see what they claim to, on toy modules parsed the same way."""
    opening = ast.parse("import zarr\nimport zarr.api.asynchronous as za\nfrom zarr import open_group\n"
                        "g = zarr.open_group('s', mode='r')\na = za.open_array(store=s, path='p')\n"
                        "ok = cube.open_group('s')\nfine = os.open('f', 0)\n")
    assert store_openings(opening) == [3, 4, 5]
    members = {"cmbcube.cube.a", "cmbcube.cube.b", "cmbcube.cube.c"}
    a = ast.parse("from cmbcube.cube.b import thing\n")
    b = ast.parse("def f():\n    from cmbcube.cube import c\n")          # inside a function: counted
    c = ast.parse("from cmbcube import cube\n")                            # the package
    package = ast.parse("from cmbcube.cube.a import thing\n")
    graph = {name: cube_imports(name, tree, members) for name, tree in
             (("cmbcube.cube.a", a), ("cmbcube.cube.b", b), ("cmbcube.cube.c", c), ("cmbcube.cube", package))}
    assert graph["cmbcube.cube.b"] == {"cmbcube.cube.c"} and graph["cmbcube.cube.c"] == {"cmbcube.cube"}
    assert import_cycle(graph) == ["cmbcube.cube", "cmbcube.cube.a", "cmbcube.cube.b", "cmbcube.cube.c",
                                   "cmbcube.cube"]
    graph["cmbcube.cube.c"] = set()
    assert import_cycle(graph) == []
    facts = ast.parse("n = int(group.attrs['nside'])\nm = attrs.get('nside', 0)\nk = cube.read_attrs(p)['nside']\n"
                      "r = recipe['nside']\nu = group.attrs['cmb_unit']\n")
    assert fact_reads(facts) == [1, 2, 3]


# ----------------------------------------------------------------------------- one stage convention (issue 24)
REPORT_BASE = "StageReport"               # cmbcube.compute.fanout.StageReport: what every stage's run returns


def command_stages(cli_tree) -> dict:
    """Command name -> the stage module the COMMANDS table of cli.py names for it (None: no stage)."""
    out = {}
    for node in ast.walk(cli_tree):
        if not isinstance(node, ast.Dict):
            continue
        for key, value in zip(node.keys, node.values):
            if isinstance(key, ast.Constant) and isinstance(value, ast.Call) and \
                    getattr(value.func, "id", "") == "Command":
                stage = value.args[3] if len(value.args) > 3 else \
                    next((k.value for k in value.keywords if k.arg == "stage"), None)
                out[key.value] = stage.value if isinstance(stage, ast.Constant) else None
    return out


def stage_convention(table: dict, stages: dict) -> list[str]:
    """What breaks the convention, given the command table and {stage module name: its tree}: a command's
    stage without a top-level ``run``, a ``run`` not annotated to return a subclass of StageReport defined
    in a stage module (``ReportPage`` or ``report.ReportPage``), or a stage module with a ``run`` that no
    command names (support modules have none)."""
    reports = {(name, node.name) for name, tree in stages.items() for node in tree.body
               if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")) == REPORT_BASE
                                                        for b in node.bases)}
    runs = {name: next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"), None)
            for name, tree in stages.items()}
    problems = []
    for command, stage in table.items():
        if stage is None:
            continue
        run = runs.get(stage)
        if run is None:
            problems.append(f"{command}: cmbcube.stages.{stage} has no run()")
            continue
        returns = run.returns
        owner, cls = (stage, returns.id) if isinstance(returns, ast.Name) else \
            (returns.value.id, returns.attr) if isinstance(returns, ast.Attribute) and \
            isinstance(returns.value, ast.Name) else (stage, None)
        if (owner, cls) not in reports:
            problems.append(f"{command}: cmbcube.stages.{stage}.run does not return a {REPORT_BASE}")
    named = set(table.values())
    problems += [f"cmbcube.stages.{name} has a run() that no command names" for name, run in runs.items()
                 if run is not None and name not in named]
    return problems


def test_every_command_runs_a_stage_whose_run_returns_a_stage_report():
    stages = {path.stem: ast.parse(path.read_text()) for path in sorted((PACKAGE / "stages").glob("*.py"))
              if path.stem != "__init__"}
    table = command_stages(ast.parse((PACKAGE / "cli.py").read_text()))
    assert table and sum(stage is not None for stage in table.values()) >= 11, table
    problems = stage_convention(table, stages)
    assert not problems, "the stage convention (run(...) -> StageReport, named by cli.COMMANDS):\n" + \
        "\n".join(problems)


def test_the_stage_rule_can_fail():
    """The rule above sees what it claims to, on a toy table and toy stage modules."""
    cli_tree = ast.parse("COMMANDS = {'a': Command('h', o.a, h.a, 'alpha'), 'b': Command('h', o.b, h.b, stage='beta'),"
                         " 'c': Command('h', o.c, h.c)}\n")
    table = command_stages(cli_tree)
    assert table == {"a": "alpha", "b": "beta", "c": None}
    good = {"alpha": ast.parse("class AReport(StageReport):\n    x: int\ndef run() -> AReport: ...\n"),
            "beta": ast.parse("from cmbcube.stages import alpha\ndef run() -> alpha.AReport: ...\n"),
            "helper": ast.parse("def other(): ...\n")}
    assert stage_convention(table, good) == []
    bad = {"alpha": ast.parse("def run() -> dict: ...\n"), "beta": ast.parse("def beta(): ...\n"),
           "extra": ast.parse("def run(): ...\n")}
    assert stage_convention(table, bad) == ["a: cmbcube.stages.alpha.run does not return a StageReport",
                                            "b: cmbcube.stages.beta has no run()",
                                            "cmbcube.stages.extra has a run() that no command names"]


def numeric_defaults(source: str, function: str) -> list:
    """Numeric literals given as ``default=`` inside ``function`` of a module's source."""
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            for call in ast.walk(node):
                if isinstance(call, ast.Call):
                    found += [kw.value.value for kw in call.keywords if kw.arg == "default"
                              and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, (int, float))
                              and not isinstance(kw.value.value, bool)]
    return found


def test_the_ilc_options_take_their_defaults_from_ilcconfig():
    """The ILC's defaults are defined once, in ILCConfig: the CLI reads them (no numbers of its own)."""
    import argparse

    from cmbcube import cli_args
    from cmbcube.science.ilc import ILCConfig
    assert numeric_defaults(Path(cli_args.__file__).read_text(), "ilc") == []
    toy = "def ilc(p):\n    p.add_argument('--x', default=20.6)\n"
    assert numeric_defaults(toy, "ilc") == [20.6]                # the rule can fail
    parser = argparse.ArgumentParser()
    cli_args.ilc(parser)
    args = parser.parse_args(["store"])
    config = ILCConfig()
    assert (args.method, args.common_beam, args.bias_tolerance, args.bin_width) == \
        (config.method, config.common_beam_arcmin, config.bias_tolerance, config.bin_width)
