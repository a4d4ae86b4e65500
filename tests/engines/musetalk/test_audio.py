"""Whisper features, hidden states and per-frame windows equal to upstream's (golden_audio*, golden_chunks),
and the positional encoding (golden_pe)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_engine.engines.musetalk import audio, latents

from .conftest import load_json, load_npz, rel_l2


@pytest.fixture(scope="module")
def golden_audio():
    return load_npz("golden_audio.npz")


@pytest.fixture(scope="module")
def states(whisper, golden_audio):
    encoder, extractor = whisper
    wav = golden_audio["wav"]
    features = audio.input_features(wav, extractor)
    return features, audio.encoder_states(encoder, features, len(wav))


def test_input_features(states, golden_audio):
    features, _ = states
    assert len(features) == 1
    assert np.abs(features[0].numpy() - golden_audio["input_features"]).max() < 1e-4


def test_hidden_states_and_probes(whisper, states, golden_audio):
    _, hidden = states
    assert hidden.shape == golden_audio["whisper_hidden_states_trimmed"].shape
    assert rel_l2(hidden, golden_audio["whisper_hidden_states_trimmed"]) < 1e-5
    encoder, _ = whisper
    with torch.inference_mode():
        full = torch.stack(encoder(states[0][0], output_hidden_states=True).hidden_states, dim=2)[0].double()
    probe = load_npz("golden_audio.npz")
    assert rel_l2(full.mean(0), probe["probe_mean_hidden_states_seg0"]) < 1e-5
    assert rel_l2(full.std(0, unbiased=False), probe["probe_std_hidden_states_seg0"]) < 1e-5


def test_windows(states, golden_audio):
    _, hidden = states
    n = audio.frame_count(len(golden_audio["wav"]), 25)
    assert n == int(golden_audio["num_frames"])
    windows = audio.frame_windows(hidden, n, 25)
    picked = windows[golden_audio["chunk_frame_idx"]]
    assert rel_l2(picked, golden_audio["whisper_chunks_sel"]) < 1e-5
    zero = golden_audio["whisper_chunks_sel"][0, :20] == 0  # frame 0: 4 zero blocks x 5 layers
    assert zero.all() and (picked[0, :20] == 0).all()


def test_mutation_layer_major_tokens_fail(states, golden_audio):
    """Mutation: layer-major flattening (5 x 10 instead of 10 x 5) is caught by the window comparison."""
    _, hidden = states
    windows = audio.frame_windows(hidden, 148, 25)[golden_audio["chunk_frame_idx"]]
    layer_major = windows.reshape(-1, 10, 5, 384).transpose(1, 2).reshape(-1, 50, 384)
    assert rel_l2(layer_major, golden_audio["whisper_chunks_sel"]) > 0.1


@pytest.mark.parametrize("fps", ["24", "25", "29.97", "30"])
def test_window_rule_every_fps(fps):
    chunks = load_json("golden_chunks.json")
    case = chunks["per_fps"][fps]
    n_states = int(chunks["librosa_length"] / 16000 * 50)
    assert audio.frame_count(chunks["librosa_length"], float(fps)) == case["num_frames"]
    src = audio.window_sources(n_states, case["num_frames"], float(fps))
    np.testing.assert_array_equal(src, np.asarray(case["src"]))


@pytest.mark.parametrize("fps", [50, 60])
def test_high_fps_windows_fit(fps):
    """Upstream aborts at 50/60 fps (its right padding is too short); ours pads with zeros and keeps going."""
    n = audio.frame_count(94737, fps)
    src = audio.window_sources(296, n, fps)
    assert src.shape == (n, 10) and src.max() == 295


def test_long_audio_segments(whisper):
    """> 30 s: two segments encoded separately, concatenated; windows across the seam."""
    g = load_npz("golden_audio_long.npz")
    encoder, extractor = whisper
    wav16 = (load_npz("golden_audio.npz")["wav"] * 32768).astype(np.int16)
    wav = (np.tile(wav16, int(g["long_reps"]))[: int(g["long_num_samples"])] / 32768).astype(np.float32)
    features = audio.input_features(wav, extractor)
    assert len(features) == int(g["num_segments"])
    assert np.abs(features[1].numpy() - g["input_features_seg1"]).max() < 1e-4
    hidden = audio.encoder_states(encoder, features, len(wav))
    assert hidden.shape[1] == int(g["actual_length"])
    assert rel_l2(hidden[:, 1490:1510], g["whisper_hidden_states_1490_1510"]) < 1e-5
    assert rel_l2(hidden[:, -20:], g["whisper_hidden_states_last20"]) < 1e-5
    n = audio.frame_count(len(wav), 25)
    assert n == int(g["num_frames"])
    windows = audio.frame_windows(hidden, n, 25)[g["chunk_frame_idx"]]
    assert rel_l2(windows, g["whisper_chunks_sel"]) < 1e-5


def test_positional_encoding():
    g = load_npz("golden_pe.npz")
    y = latents.add_positions(torch.from_numpy(g["x"]))
    assert rel_l2(y, g["y"]) < 1e-5
    table = latents.positional_table()
    rows = g["pe_rows"]
    small = rows < 50  # the rows MuseTalk uses (50 tokens); beyond, float32 sin of large arguments varies by CPU
    assert np.abs(table[rows[small]].numpy() - g["pe_table_rows"][small]).max() < 1e-5
    assert np.abs(table[rows[small]].double().numpy() - g["pe_table_rows_f64"][small]).max() < 1e-5
    assert np.abs(table[rows].double().numpy() - g["pe_table_rows_f64"]).max() < 1e-3
    assert rel_l2(latents.add_positions(torch.from_numpy(g["x"]).half()), g["y_fp16"]) < 1e-3


def test_mutation_no_positions_fails():
    g = load_npz("golden_pe.npz")
    assert rel_l2(torch.from_numpy(g["x"]), g["y"]) > 1e-3
