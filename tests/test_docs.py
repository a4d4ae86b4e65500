"""The README documents exactly the environment variables the worker reads, and every module."""

import re

from avatar_engine.settings import Settings
from tests.support.media import REPO

# read by libraries or the handler, not by Settings
EXTERNAL = {"STORAGE_EMULATOR_HOST"}


def _documented() -> set[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Configuration (environment variables)", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def test_every_setting_is_documented_and_nothing_else():
    settings = {name.upper() for name in Settings.model_fields}
    documented = _documented()
    assert settings - documented == set(), "settings missing from the README"
    assert documented - settings - EXTERNAL == set(), "README documents variables nothing reads"


def test_readme_layout_lists_every_module():
    """README "Layout" names every module and package of avatar_engine/ and nothing that does not exist
    (regenerate the block with `python -m tests.support.layout`)."""
    from tests.support import layout

    listed = layout.parse(layout.readme_block((REPO / "README.md").read_text()))
    assert sorted(listed) == sorted(layout.modules())
