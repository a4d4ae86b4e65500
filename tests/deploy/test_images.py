"""Static checks of Dockerfile.sadtalker / Dockerfile.hq and the model manifest they bake from.

The images themselves are built by `make image-check` (podman, minutes); these checks catch in seconds
what breaks a build or a deployment: a missing COPY source, a root user, NVENC's `video` capability
dropped, or a manifest that bakes files no engine in the image uses (or misses one it needs).
"""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys

import pytest

from avatar_engine.engines.sadtalker import checkpoints as st_ck
from avatar_engine.engines.wav2lip.engine import CHECKPOINT_NAMES as W2L_NAMES
from avatar_engine.runtime.inventory import component_files, load_inventory
from tests.support.media import REPO

INVENTORY = load_inventory()
IMAGES = sorted(INVENTORY["images"])


def _dockerfile(image: str) -> str:
    return (REPO / INVENTORY["images"][image]["dockerfile"]).read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def _stages(text: str) -> dict[str, list[tuple[str, str]]]:
    stages, current = {}, None
    for ins, args in _instructions(text):
        if ins == "FROM":
            parts = args.split()
            current = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else f"_{len(stages)}"
            stages[current] = []
        elif current is not None:
            stages[current].append((ins, args))
    return stages


@pytest.mark.parametrize("image", IMAGES)
def test_base_python_env_and_cmd(image):
    text = _dockerfile(image)
    ins = _instructions(text)
    first_arg = next(a for i, a in ins if i == "ARG")
    assert re.fullmatch(r"BASE_IMAGE=nvidia/cuda:12\.\d+(\.\d+)?-(cudnn-)?runtime-ubuntu\d\d\.\d\d", first_arg)
    assert ("FROM", "${BASE_IMAGE} AS runtime") in ins
    env = " ".join(a for i, a in ins if i == "ENV")
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility,video" in env  # NVENC needs `video`
    assert "MODEL_ROOT=/models" in env
    assert "python3.11" in (REPO / "builder/install_python.sh").read_text()
    runtime = _stages(text)["runtime"]
    assert runtime[-1] == ("CMD", '["python", "-u", "handler.py"]')
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1] not in ("root", "0")
    for arg in ("TORCH_INDEX_URL=https://download.pytorch.org/whl/cu12", "TORCH_SPEC=torch==2.13.0", "FETCH_MODELS=1"):
        assert any(i == "ARG" and a.startswith(arg) for i, a in runtime), arg


@pytest.mark.parametrize("image", IMAGES)
def test_layers_deps_then_weights_then_code(image):
    runtime = _stages(_dockerfile(image))["runtime"]
    order = [n for n, (i, a) in enumerate(runtime) if i == "RUN"]
    pip = next(n for n in order if "pip install" in runtime[n][1])
    fetch = next(n for n in order if "fetch_models.py" in runtime[n][1])
    code = next(n for n, (i, a) in enumerate(runtime) if i == "COPY" and "avatar_engine ./" in a)
    assert pip < fetch < code
    assert f"--image {image}" in runtime[fetch][1]
    assert f"requirements-{image}.txt" in runtime[pip][1]


@pytest.mark.parametrize("image", IMAGES)
def test_every_copy_source_exists_and_is_not_dockerignored(image):
    ignored = (REPO / ".dockerignore").read_text()
    for ins, args in _instructions(_dockerfile(image)):
        if ins != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for src in parts[:-1]:
            assert glob.glob(str(REPO / src)), f"COPY source {src} does not exist"
            top = src.split("/")[0]
            assert f"!{top}" in ignored or f"!{top}/" in ignored, f"{src} is excluded by .dockerignore"


@pytest.mark.parametrize("image", IMAGES)
def test_smoke_stage_renders_and_asks_health(image):
    smoke = _stages(_dockerfile(image))["smoke"]
    script = " ".join(a for i, a in smoke if i == "RUN")
    assert '"action": "health"' in script and "handler.py" in script and "test -s" in script


@pytest.mark.parametrize("image", IMAGES)
def test_manifest_covers_exactly_what_the_images_engines_need(image):
    spec = INVENTORY["images"][image]
    usable = {k for e in spec["engines"] for k in component_files("engines", e)}
    usable |= {k for s in spec["stages"] for k in component_files("stages", s)}
    baked = {k for k, f in INVENTORY["files"].items() if image in f["images"]}
    assert baked <= usable, f"{image} bakes files none of its engines uses: {baked - usable}"
    for kind, names in (("engines", spec["engines"]), ("stages", spec["stages"])):
        for name in names:
            for group in INVENTORY[kind][name].get("needs", []):
                assert baked & set(group), f"{image}: {kind[:-1]} {name} needs one of {group}"


def test_manifest_entries_are_well_formed():
    for key, f in INVENTORY["files"].items():
        assert f["license"] and f["source"], key
        assert f["url"] is None or f["url"].startswith("https://"), key
        assert f["url"] or f.get("page"), f"{key}: neither a URL nor an upstream page"
        assert f["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", f["sha256"]), key
        assert f["size"] is None or (isinstance(f["size"], int) and f["size"] > 0), key
        assert set(f["images"]) <= set(INVENTORY["images"]), key
    for kind in ("engines", "stages"):
        for name, spec in INVENTORY[kind].items():
            for key in component_files(kind, name):
                assert key in INVENTORY["files"], f"{name} refers to unknown file {key}"


def test_manifest_paths_are_where_the_engines_look():
    files = INVENTORY["files"]
    w2l_keys = ("wav2lip_gan", "wav2lip", "wav2lip_sd_gan", "wav2lip_sd_nogan")
    assert {files[k]["path"] for k in w2l_keys} == {f"wav2lip/{n}" for n in W2L_NAMES}
    assert files["sadtalker_256"]["path"] == f"sadtalker/{st_ck.safetensors_name(256)}"
    assert files["sadtalker_512"]["path"] == f"sadtalker/{st_ck.safetensors_name(512)}"
    assert files["sadtalker_mapping_crop"]["path"] == f"sadtalker/{st_ck.mapping_name('crop')}"
    assert files["sadtalker_mapping_full"]["path"] == f"sadtalker/{st_ck.mapping_name('full')}"
    assert files["gfpgan_v14"]["path"] == "gfpgan/GFPGANv1.4.pth"
    assert files["fomm_vox"]["path"] == "fomm/vox-cpk.pth.tar"
    assert files["diff2lip"]["path"] == "diff2lip/e7.24.1.3_model260000_paper.pt"
    try:  # the HQ engines, once built in, must look for the same names
        from avatar_engine.engines.diff2lip.checkpoints import PREFERRED_NAMES
        from avatar_engine.engines.fomm.checkpoints import CHECKPOINT_NAMES as FOMM_NAMES
    except ImportError:
        return
    assert files["fomm_vox"]["path"] == f"fomm/{FOMM_NAMES[0]}"
    assert files["fomm_vox_adv"]["path"] == f"fomm/{FOMM_NAMES[1]}"
    assert files["diff2lip"]["path"] == f"diff2lip/{PREFERRED_NAMES[0]}"


def test_requirements_pin_torch_and_match_pyproject():
    text = (REPO / "builder/requirements-sadtalker.txt").read_text()
    pins = dict(line.split("==") for line in text.splitlines() if "==" in line and not line.startswith("#"))
    assert pins["torch"] == "2.13.0"
    assert "download.pytorch.org/whl/cu12" in text
    pyproject = (REPO / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M).group(1)
    names = {re.split(r"[<>=!~ \[]", d.strip().strip('",'))[0].lower() for d in deps.splitlines() if d.strip()}
    assert names - NOT_IN_IMAGE <= {n.lower() for n in pins}, f"unpinned in the image: {names - set(pins)}"


# pyproject dependencies the worker never imports (local tools), so the images leave them out.
NOT_IN_IMAGE = {"mcp",  # avatar_engine/mcp_server.py: an MCP server for desktop clients, not the worker
                "matplotlib", "pyyaml", "yaml"}  # avatar_engine/evaluate/: report plots, YAML suites (module yaml)


def test_worker_imports_nothing_the_image_leaves_out():
    code = ("import sys, avatar_engine.serving.worker, avatar_engine.serving.actions, avatar_engine.serving.health, avatar_engine.engines;"
            f"print(sorted(m for m in {sorted(NOT_IN_IMAGE)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    assert "-r requirements-sadtalker.txt" in (REPO / "builder/requirements-hq.txt").read_text()


def test_image_check_script_and_make_target():
    script = (REPO / "scripts/image_check.sh").read_text()
    assert "debootstrap --variant=minbase bookworm" in script and "--isolation=chroot" in script
    assert "--target smoke" in script
    assert "image-check:" in (REPO / "Makefile").read_text()
