"""House rules the code keeps by itself: no function or method in the package over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import avatar_engine

MAX_LINES = 80
PACKAGE = Path(avatar_engine.__file__).parent


def _long_functions() -> list[str]:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return offenders


def test_no_function_is_longer_than_80_lines():
    offenders = _long_functions()
    assert not offenders, "split these into named steps:\n" + "\n".join(offenders)
