"""Finding Diff2Lip's checkpoint and loading it strictly (a flat state_dict, weights_only)."""

from __future__ import annotations

import pickle

import pytest
import torch

from avatar_engine.engines.diff2lip.checkpoints import load_diff2lip, lookup
from avatar_engine.errors import AvatarError
from avatar_engine.settings import Settings
from tests.support.checkpoints import find_diff2lip_checkpoint

from .conftest import TINY


def _settings(tmp_path, **kwargs) -> Settings:
    return Settings(model_root=tmp_path, **kwargs)


def test_lookup_override_then_released_name_then_single_file(tmp_path):
    folder = tmp_path / "diff2lip"
    assert find_diff2lip_checkpoint(_settings(tmp_path)) is None  # no folder
    folder.mkdir()
    assert find_diff2lip_checkpoint(_settings(tmp_path)) is None  # empty folder
    (folder / "mine.pt").write_bytes(b"x")
    assert find_diff2lip_checkpoint(_settings(tmp_path)) == folder / "mine.pt"  # the only *.pt
    (folder / "other.pt").write_bytes(b"x")
    assert find_diff2lip_checkpoint(_settings(tmp_path)) is None  # ambiguous: two unknown files
    (folder / "checkpoint.pt").write_bytes(b"x")
    assert find_diff2lip_checkpoint(_settings(tmp_path)) == folder / "checkpoint.pt"
    (folder / "e7.24.1.3_model260000_paper.pt").write_bytes(b"x")
    assert find_diff2lip_checkpoint(_settings(tmp_path)) == folder / "e7.24.1.3_model260000_paper.pt"
    override = tmp_path / "elsewhere.pt"  # DIFF2LIP_CKPT is the only candidate: a wrong one is reported
    assert find_diff2lip_checkpoint(_settings(tmp_path, diff2lip_ckpt=override)) is None
    reason = lookup(_settings(tmp_path, diff2lip_ckpt=override)).missing_reason("Diff2Lip checkpoint")
    assert "DIFF2LIP_CKPT" in reason and "does not exist" in reason and str(override) in reason
    override.write_bytes(b"x")
    assert find_diff2lip_checkpoint(_settings(tmp_path, diff2lip_ckpt=override)) == override


def test_setting_reads_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFF2LIP_CKPT", str(tmp_path / "d2l.pt"))
    assert Settings().diff2lip_ckpt == tmp_path / "d2l.pt"


@pytest.fixture(scope="module")
def flat_checkpoint(tmp_path_factory, tiny_model):
    """A flat {key: tensor} file, as upstream saves it (small config: same code path, KBs not 407 MB)."""
    path = tmp_path_factory.mktemp("d2l") / "checkpoint.pt"
    torch.save(tiny_model.state_dict(), path)
    return path


def test_strict_load_of_a_flat_state_dict(flat_checkpoint, tiny_model):
    model = load_diff2lip(flat_checkpoint, TINY)
    assert not model.training
    loaded, source = model.state_dict(), tiny_model.state_dict()
    assert loaded.keys() == source.keys()
    assert all(torch.equal(loaded[k], source[k]) for k in source)


def _expect_unavailable(path, *fragments, config=TINY):
    with pytest.raises(AvatarError) as info:
        load_diff2lip(path, config)
    assert info.value.code == "engine_unavailable"
    assert str(path) in info.value.message
    for fragment in fragments:
        assert fragment in info.value.message
    return info.value.message


def test_bad_files_name_the_file_and_the_problem(tmp_path, flat_checkpoint, tiny_model):
    _expect_unavailable(tmp_path / "absent.pt", "does not exist")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _expect_unavailable(empty, "empty")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(flat_checkpoint.read_bytes()[: flat_checkpoint.stat().st_size // 2])
    _expect_unavailable(truncated, "could not be read")
    a_list = tmp_path / "list.pt"
    torch.save([1, 2], a_list)
    _expect_unavailable(a_list, "not a state dict")


def test_code_in_the_pickle_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "evil.pt"
    with path.open("wb") as fh:
        pickle.dump({"time_embed.0.weight": Payload()}, fh, protocol=2)
    _expect_unavailable(path, "could not be read")  # weights_only=True


def test_wrapped_prefixed_or_other_networks_files_do_not_match(tmp_path, tiny_model):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": tiny_model.state_dict()}, wrapped)
    _expect_unavailable(wrapped, "not a flat state_dict")
    prefixed = tmp_path / "prefixed.pt"
    torch.save({f"module.{k}": v for k, v in tiny_model.state_dict().items()}, prefixed)
    _expect_unavailable(prefixed, "missing keys", "unexpected keys")
    # another network's file (the small config) offered to the released architecture
    other = tmp_path / "other.pt"
    torch.save(tiny_model.state_dict(), other)
    _expect_unavailable(other, "missing keys", "shape mismatches", config=None)
