"""The README's Layout block: one line per module of `avatar_engine/`, its docstring's first sentence.

`python -m tests.support.layout` prints the block; tests/test_docs.py checks the README lists exactly
the modules that exist (names, not wording).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "avatar_engine"
WIDTH = 118


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    sentence = re.split(r"(?<=\.)\s", first)[0].rstrip(".")
    return sentence


def modules() -> list[str]:
    """Every module and package folder under avatar_engine/, as paths relative to the repo (folders end in /)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(REPO)
        out.append(str(rel.parent) + "/" if path.name == "__init__.py" else str(rel))
    return out


def render() -> str:
    lines = []
    for entry in modules():
        is_pkg = entry.endswith("/")
        path = REPO / (entry + "__init__.py" if is_pkg else entry)
        parts = entry.rstrip("/").split("/")
        name = parts[-1] + ("/" if is_pkg else "")
        indent = "  " * (len(parts) - 1)
        head = f"{indent}{name}"
        text = _summary(path)
        line = f"{head:<34} {text}" if text else head
        lines.append(line if len(line) <= WIDTH else line[: WIDTH - 1] + "…")
    return "\n".join(lines)


def parse(block: str) -> list[str]:
    """Inverse of `render`: the paths a Layout block names, from its indentation."""
    stack: list[str] = []
    out = []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        name = line.split()[0]
        stack = stack[:depth] + [name.rstrip("/")]
        out.append("/".join(stack) + ("/" if name.endswith("/") else ""))
    return out


def readme_block(readme: str) -> str:
    section = readme.split("\n## Layout", 1)[1]
    return section.split("```", 2)[1].removeprefix("text").strip("\n")


if __name__ == "__main__":
    print(render())
