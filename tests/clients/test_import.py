"""The client wing stands apart from the server: importing it (or the request schema) in a fresh
interpreter loads neither the pipeline, the engines, torch nor OpenCV, and every third-party module it
imports is a declared dependency."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions

import pytest

from tests.support.media import REPO

HEAVY = ("avatar_engine.pipeline", "avatar_engine.engines", "avatar_engine.serving", "torch", "cv2", "runpod")


def _loaded_after(statement: str) -> dict:
    code = (f"import sys, json\n{statement}\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} | set(sys.modules))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("statement", [
    "import avatar_engine.clients",
    "import avatar_engine.clients.batch",
    "import avatar_engine.clients.providers",
    "import avatar_engine.clients.live",
    "import avatar_engine.schema",
])
def test_client_import_leaves_the_server_out(statement):
    loaded = _loaded_after(statement)
    assert not loaded & set(HEAVY), f"{statement} loaded {sorted(loaded & set(HEAVY))}"


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-") for dep in project["dependencies"]}


def _imports(path) -> set[str]:
    """Top-level modules a file imports anywhere (also inside functions), relative imports left out."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_every_runtime_import_of_the_wing_is_declared():
    """What the wing (and the schema and errors it uses) imports is the standard library, itself, or a
    distribution in `[project.dependencies]` (not only the dev extra)."""
    files = [*(REPO / "avatar_engine" / "clients").glob("*.py"), REPO / "avatar_engine" / "schema.py",
             REPO / "avatar_engine" / "errors.py"]
    modules = set().union(*map(_imports, files)) - set(sys.stdlib_module_names) - {"avatar_engine"}
    dists = packages_distributions()
    undeclared = {m: dists.get(m) for m in modules
                  if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & _declared()}
    assert not undeclared, undeclared
    assert {"requests", "tenacity"} <= _declared()
