"""The VAE wrappers (sd-vae-ft-mse, det weights) equal to upstream's: images in, posterior, latents with the
stored noise, decode to BGR, per-module probes, and the float64 references (golden_vae, golden_vae_f64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_engine.engines.musetalk import latents as lat

from .conftest import Probes, load_npz, probe_names, rel_l2

pytestmark = pytest.mark.slow

ENC = ["encoder.conv_in", "encoder.down_blocks.0", "encoder.down_blocks.1", "encoder.down_blocks.2",
       "encoder.down_blocks.3", "encoder.mid_block", "encoder.conv_out", "quant_conv"]


@pytest.fixture(scope="module")
def golden():
    return load_npz("golden_vae.npz"), load_npz("golden_vae_f64.npz")


@pytest.fixture(scope="module")
def vae(configs):
    from avatar_engine.engines.musetalk.detweights import det_vae

    return det_vae(configs["vae"])


@pytest.fixture(scope="module")
def run32(vae, golden):
    """One encode of [masked, ref] and one 2-row decode, in float32, probes on."""
    g, _ = golden
    probes = Probes(vae, ENC + probe_names(g, "probe_dec_mean."))
    with torch.inference_mode():
        images = torch.cat([lat.vae_input(g["face_crop_bgr_u8"], True), lat.vae_input(g["face_crop_bgr_u8"], False)])
        posterior = vae.encode(images).latent_dist
        latents = lat.unet_input(vae, g["face_crop_bgr_u8"], torch.from_numpy(g["sample_noise"])[None])
        raw = lat.decode_raw(vae, torch.from_numpy(g["decode_latents_in"]))
    probes.close()
    return {"images": images, "posterior": posterior, "latents": latents, "raw": raw, "probes": probes}


def test_images(run32, golden):
    g, _ = golden
    np.testing.assert_allclose(run32["images"][:1].numpy(), g["masked_image"], atol=1e-7)
    np.testing.assert_allclose(run32["images"][1:].numpy(), g["ref_image"], atol=1e-7)
    assert (run32["images"][0, :, 128:] == -1).all()


def test_posterior_and_latents(run32, golden):
    g, _ = golden
    post = run32["posterior"]
    assert rel_l2(post.mean, g["posterior_mean"]) < 3e-3
    assert rel_l2(post.logvar, g["posterior_logvar"]) < 3e-3
    assert rel_l2(post.std, g["posterior_std"]) < 3e-3
    assert rel_l2(run32["latents"], g["latents_for_unet"]) < 3e-3
    assert rel_l2(run32["latents"], g["latents_mode_for_unet"]) > 0.5  # sampled, not the mode


def test_mutation_rgb_or_unmasked_input_is_caught(vae, golden):
    g, _ = golden
    crop = g["face_crop_bgr_u8"]
    with torch.inference_mode():
        rgb_fed = vae.encode(lat.vae_input(crop[:, :, ::-1], False)).latent_dist.mean
        unmasked = vae.encode(lat.vae_input(crop, False)).latent_dist.mean
    assert rel_l2(rgb_fed, g["posterior_mean"][1:]) > 0.1
    assert rel_l2(unmasked, g["posterior_mean"][:1]) > 0.1


def test_encoder_probes(run32, golden):
    g, _ = golden
    probes = run32["probes"]
    for name in ENC:
        for stat in ("mean", "std"):
            got = probes.get(f"{stat}.{name}")[:2]
            assert rel_l2(got, g[f"probe_enc_{stat}.{name}"]) < 5e-4, (stat, name)


def test_decode(run32, golden):
    g, _ = golden
    assert rel_l2(run32["raw"][:1], g["decoder_sample_row0"]) < 1e-3
    bgr = lat.to_bgr_u8(run32["raw"])
    diff = np.abs(bgr.astype(int) - g["decoded_bgr_u8"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    probes = run32["probes"]
    for name in probe_names(g, "probe_dec_mean."):
        for stat in ("mean", "std"):
            assert rel_l2(probes.get(f"{stat}.{name}")[-2:], g[f"probe_dec_{stat}.{name}"]) < 5e-4, (stat, name)


def test_mutation_no_unscaling_before_decode(run32, vae, golden):
    g, _ = golden
    with torch.inference_mode():
        raw = vae.decode(torch.from_numpy(g["decode_latents_in"][:1])).sample
    assert rel_l2(raw, g["decoder_sample_row0"]) > 0.1


def test_float64_references(vae, golden):
    """The same weights in float64 (`.double()`, float32 inputs cast): posterior and a small decode, rel 1e-9."""
    g, g64 = golden
    vae64 = vae.double()
    try:
        probes = Probes(vae64, ENC + probe_names(g64, "probe_dec_small_mean."))
        with torch.inference_mode():
            images = torch.from_numpy(np.concatenate([g["masked_image"], g["ref_image"]])).double()
            post = vae64.encode(images).latent_dist
            small = lat.decode_raw(vae64, torch.from_numpy(g64["decode_small_latents_in"]).double())
        probes.close()
        assert rel_l2(post.mean, g64["posterior_mean"]) < 1e-9
        assert rel_l2(post.logvar, g64["posterior_logvar"]) < 1e-9
        assert rel_l2(small, g64["decoder_sample_small"]) < 1e-9
        for key in g64:
            if key.startswith("probe_enc_"):
                stat, name = key[len("probe_enc_"):].split(".", 1)
                assert rel_l2(probes.get(f"{stat}.{name}"), g64[key]) < 1e-9, key
            elif key.startswith("probe_dec_small_"):
                stat, name = key[len("probe_dec_small_"):].split(".", 1)
                assert rel_l2(probes.get(f"{stat}.{name}"), g64[key]) < 1e-9, key
    finally:
        vae.float()
    with torch.inference_mode():
        small32 = lat.decode_raw(vae, torch.from_numpy(g64["decode_small_latents_in"]))
    assert rel_l2(small32, g64["decoder_sample_small_f32"]) < 1e-3


def test_frame_path_latents_and_recon(vae, golden_frame):
    """golden_frame end to end around the UNet: two frames' crops -> [masked | ref] latents with the stored
    noise, and the stored UNet output decoded to the BGR faces upstream pastes back."""
    g = golden_frame
    with torch.inference_mode():
        latents = lat.unet_input(vae, g["face_crop_bgr_u8"], torch.from_numpy(g["sample_noise"]))
        recon = lat.decode(vae, torch.from_numpy(g["pred_latents"]))
    assert rel_l2(latents, g["latents_for_unet"]) < 3e-3
    np.testing.assert_array_equal(g["latent_batch"], g["latents_for_unet"][g["cycle_idx"]])
    diff = np.abs(recon.astype(int) - g["recon_bgr_u8"].astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    chunks = load_npz("golden_audio.npz")
    assert rel_l2(g["whisper_batch"], chunks["whisper_chunks_sel"][:2]) < 1e-6  # frames 0 and 1 of the speech
