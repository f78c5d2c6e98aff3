"""Errors below the command line name parameters, not options (issue 24).

The layers under the CLI write ``cmbcube.errors.param("f_sky")`` / ``command("drop", ...)`` where a
message names a parameter or advises a command; the CLI prints them as its own options
(``cmbcube.cli_errors``, read from the argparse parser). The rule below parses every module of the
package except the CLI's and fails on an option spelled out (``--f-sky``) in the text of a ``raise``
or of an error-class constructor call; the other tests check both renderings end to end.
"""
import ast
import builtins
import pickle
import re
from pathlib import Path

import pytest

from cmbcube import cli, cli_errors
from cmbcube.errors import InputError, command, param
from helpers import zarr_files

PACKAGE = Path(cli.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")
FOREIGN = ("dask scheduler --scheduler-file",)        # another program's option, quoted as advice
BUILTIN_ERRORS = {n for n in dir(builtins) if isinstance(getattr(builtins, n), type)
                  and issubclass(getattr(builtins, n), BaseException)}


def cli_module(path: Path) -> bool:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].startswith("cli") or rel.name.startswith("cli")


def _name(node) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def error_classes(trees) -> set[str]:
    """The names of the exception classes: the built-in ones and every class deriving from one, to a fixpoint."""
    known = set(BUILTIN_ERRORS)
    classes = [c for tree in trees for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for c in classes:
            if c.name not in known and any(_name(b) in known for b in c.bases):
                known.add(c.name)
                grew = True
    return known | {"os_error"}


def flag_words(tree, errors: set[str]) -> list[tuple[int, str]]:
    """(line, text) of each string constant (f-string parts included) under a ``raise`` or an error-class
    call that spells a command-line option, and in the module-level constants such a message reads
    (``FORCE_HINT = "..."`` quoted in a raise)."""
    roots = [n.exc for n in ast.walk(tree) if isinstance(n, ast.Raise) and n.exc is not None]
    roots += [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) in errors]
    quoted = {n.id for root in roots for n in ast.walk(root) if isinstance(n, ast.Name)}
    roots += [n.value for n in tree.body if isinstance(n, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id in quoted for t in n.targets)]
    found = set()
    for root in roots:
        for node in ast.walk(root):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                for foreign in FOREIGN:
                    text = text.replace(foreign, "")
                if FLAG.search(text):
                    found.add((node.lineno, node.value))
    return sorted(found)


def test_no_option_spelled_below_the_cli():
    modules = {p: ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py")) if not cli_module(p)}
    assert len(modules) > 80 and not any(cli_module(p) for p in modules)
    errors = error_classes(modules.values())
    assert {"InputError", "StoreError", "ILCError", "RecipeError", "RunExists", "ValueError"} <= errors
    bad = [f"{p.relative_to(PACKAGE.parent)}:{line}: {text!r}"
           for p, tree in modules.items() for line, text in flag_words(tree, errors)]
    assert not bad, "options spelled below the CLI (write param(NAME) instead):\n" + "\n".join(bad)


TOY = '''
class InputError(ValueError):
    pass

HINT = "--force-size runs it anyway"

class ToyError(InputError):
    pass

def f(x):
    help = "--not-an-error is fine here"
    if x:
        raise InputError(f"--f-sky {x}: must be in (0, 1]")
    if x is None:
        raise ToyError(f"{param('f_sky')} {x}: fine; {HINT}")
    return ToyError("rerun with --resume")
'''


def test_the_rule_catches_a_toy():
    tree = ast.parse(TOY)
    errors = error_classes([tree])
    assert "ToyError" in errors
    assert [line for line, _ in flag_words(tree, errors)] == [5, 13, 16]  # constant, raise, bare call
    assert flag_words(ast.parse("raise ValueError('start one with dask scheduler --scheduler-file X')"), errors) == []


def test_every_parameter_named_in_a_message_is_an_option_of_the_cli():
    """param()/command() calls in the package name a dest the real parser has (so the CLI can spell it)."""
    flag = cli_errors.flags(cli.build_parser(), None)
    missing = []
    for p in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.Call) or _name(node.func) not in ("param", "command") or not node.args \
                    or not isinstance(node.args[0], ast.Constant):
                continue
            if _name(node.func) == "param":
                dest = next((k.value.value for k in node.keywords if k.arg == "dest"), node.args[0].value)
                if flag(dest, None) is None:
                    missing.append(f"{p.name}: param {dest!r}")
            else:
                verb = node.args[0].value
                missing += [f"{p.name}: {verb} {k.arg!r}" for k in node.keywords if flag(k.arg, verb) is None]
    assert not missing


def test_python_words_and_cli_words():
    err = InputError(f"{param('f_sky')} 1.5: bad; rerun with {param('resume', True)}, "
                     f"`{command('drop', 's.zarr', 'run', run='nilc')}`; {param('run_name', 'x', dest='run')}")
    python = "f_sky 1.5: bad; rerun with resume=True, `drop('s.zarr', 'run', run='nilc')`; run_name=x"
    assert str(err) == err.args[0] == python
    parser = cli.build_parser()
    shown = "--f-sky 1.5: bad; rerun with --resume, `cmbcube drop s.zarr run --run nilc`; --run x"
    assert cli_errors.for_cli(err, parser, "analyze") == shown
    again = pickle.loads(pickle.dumps(err))                # a task's error coming back from a Dask worker
    assert str(again) == python and cli_errors.for_cli(again, parser, "analyze") == shown
    odd = InputError(f"/a\x1eb\x1f/{param('sims')} 0")          # separators in a value leave the marks intact
    assert str(odd) == "/a\x1eb\x1f/sims 0" and cli_errors.for_cli(odd, parser, "validate") == "/a\x1eb\x1f/--sims 0"
    where = InputError(f"use another {param('store')} path")     # positional in analyze, an option in simulate
    assert cli_errors.for_cli(where, parser, "analyze") == "use another STORE path"
    assert cli_errors.for_cli(where, parser, "simulate") == "use another --store path"


def test_a_lower_layer_error_through_the_cli_and_through_python(tiny_store, capsys):
    """The same refusals of stages/view.py (a bad rotation, a sim the cube does not have) in Python words
    and in CLI words; and the f_sky check of science/metrics.py, the issue's example, in Python words."""
    import numpy as np

    from cmbcube.science import metrics
    from cmbcube.stages import view
    with pytest.raises(InputError, match=r"^f_sky 1.5: must be in \(0, 1\]$"):
        metrics.galactic_mask(np.ones(12 * 16 ** 2), 1.5)
    before = zarr_files(tiny_store)
    with pytest.raises(InputError, match=r"^rot 'east': expected LON,LAT in degrees, e.g. rot=30,-60$"):
        view.run(tiny_store, rot="east")
    with pytest.raises(InputError, match=r"^sim 99: allowed: 0 to "):
        view.run(tiny_store, detector=100, sim=99)
    assert cli.main(["view", tiny_store, "--rot", "east"]) == 2
    assert capsys.readouterr().err == "cmbcube: --rot 'east': expected LON,LAT in degrees, e.g. --rot 30,-60\n"
    assert cli.main(["view", tiny_store, "--detector", "100", "--sim", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cmbcube: --sim 99: allowed: 0 to ") and "Traceback" not in err
    assert zarr_files(tiny_store) == before
