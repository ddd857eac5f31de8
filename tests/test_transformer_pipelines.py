"""Transformer pipelines (SD3, Flux.1, PixArt-Σ, Sana natively; LCM and Qwen-Image through the universal
path), checked against ``pipe(...)``.

Every pipeline is tiny with random weights (tests/diffusers_models.py), written with ``save_pretrained``
and loaded back through the real ``from_pretrained`` path. Nothing is downloaded. "Equal" means the
decoded images of chromaviz's run and of ``pipe(...)`` with the same seed agree to 1e-4 in float32 on
the CPU; each check also shows that another seed gives another image, so it can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chromaviz.analysis import compare
from chromaviz.models.diffusers.adapter import from_pipeline, load_pipeline, quiet_loading
from chromaviz.sampling.pipeline_call import PipelineRunError, pipeline_decoder, pipeline_preview, record_pipeline
from chromaviz.models.diffusers.previews import LinearPreview, VaeDecoder, pack_latents, unpack_latents
from chromaviz.models.diffusers.transformers import FluxDenoiser, PixArtSigmaDenoiser, SanaDenoiser, SD3Denoiser
from chromaviz.noise import NoiseLevel
from chromaviz.noise.schedulers import dynamic_shift_mu
from chromaviz.prompts import Boundary, PromptSchedule, PromptSwitchWarning
from chromaviz.sampling import sample

import diffusers_models as tiny

pytestmark = pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")

SIZE = 32  # pixels; latents are 16×16 (the tiny VAEs have factor 2)
STEPS = 4
A, B = "a photo of a cat", "a red house"
TOLERANCE = 1e-4
FAMILIES = ("sd3", "flux", "pixart", "sana")
ADAPTERS = {"sd3": SD3Denoiser, "flux": FluxDenoiser, "pixart": PixArtSigmaDenoiser, "sana": SanaDenoiser}
CHANNELS = {"sd3": 16, "flux": 16, "pixart": 4, "sana": 4}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformers")
    return {"sd3": tiny.save_sd3(root / "sd3"), "flux": tiny.save_flux(root / "flux"),
            "pixart": tiny.save_pixart_sigma(root / "pixart"), "sana": tiny.save_sana(root / "sana"),
            "lcm": tiny.save_lcm(root / "lcm"), "qwen": tiny.save_qwen_image(root / "qwen")}


@pytest.fixture(scope="module")
def models(folders):
    return {name: load_pipeline(folders[name]) for name in FAMILIES}


@pytest.fixture(scope="module")
def lcm(folders):
    from diffusers import DiffusionPipeline

    with quiet_loading():
        return DiffusionPipeline.from_pretrained(folders["lcm"], local_files_only=True)


def _pipe_kwargs(family: str, guidance: float) -> dict:
    """``pipe(...)`` arguments for chromaviz's ``guidance``: the guidance_scale of SD3, PixArt-Σ and Sana (the
    last two without resolution binning); Flux's true CFG with the empty negative prompt (its guidance_scale is the
    distilled guidance embedding)."""
    if family == "sd3":
        return {"guidance_scale": guidance}
    if family == "pixart":
        return {"guidance_scale": guidance, "use_resolution_binning": False, "clean_caption": False}
    if family == "sana":
        return {"guidance_scale": guidance, "use_resolution_binning": False}
    return {"true_cfg_scale": guidance, "negative_prompt": "" if guidance > 1 else None}


def _pipe_image(pipe, prompt=A, seed=0, **kwargs) -> np.ndarray:
    return pipe(prompt, num_inference_steps=STEPS, height=SIZE, width=SIZE, generator=torch.Generator().manual_seed(seed),
                output_type="np", **kwargs).images


def _image(model, traj) -> np.ndarray:
    return model.decode(traj.final).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------- native adapters equal pipe(...)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_native_run_equals_pipeline(models, family, guidance):
    model = models[family]
    assert isinstance(model, ADAPTERS[family]) and model.latent
    channels = CHANNELS[family]
    assert model.parameterization == ("epsilon" if family == "pixart" else "flow") and model.channels == channels
    traj = sample(model, A, num_inference_steps=STEPS, guidance=guidance, height=SIZE, width=SIZE, seed=3, device="cpu")
    assert traj.x0.shape == (STEPS, 1, channels, SIZE // 2, SIZE // 2)
    ours, ref = _image(model, traj), _pipe_image(model.pipe, seed=3, **_pipe_kwargs(family, guidance))
    assert ours.shape == ref.shape == (1, SIZE, SIZE, 3)
    assert np.abs(ours - ref).max() <= TOLERANCE
    assert np.abs(ours - _pipe_image(model.pipe, seed=4, **_pipe_kwargs(family, guidance))).max() > 1e-3


def test_flux_guidance_embedding_and_dynamic_shift(models):
    flux = models["flux"]
    assert flux.guidance_embeds and flux.embedded_guidance == 3.5 and flux.patch_size == 2
    flux.embedded_guidance = 1.5
    try:
        traj = sample(flux, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, device="cpu")
        ours = _image(flux, traj)
    finally:
        flux.embedded_guidance = 3.5
    assert np.abs(ours - _pipe_image(flux.pipe, guidance_scale=1.5)).max() <= TOLERANCE
    assert np.abs(ours - _pipe_image(flux.pipe, guidance_scale=3.5)).max() > 1e-3  # the embedding is read
    # μ from the token count of the packed grid, as the pipeline computes it, and its σ spacing
    for size in (SIZE, 2 * SIZE):
        traj = sample(flux, A, num_inference_steps=STEPS, height=size, width=size, device="cpu", record=("x0",))
        tokens = (size // 2 // 2) ** 2  # latents size/2, 2×2 patches
        assert traj.metadata["mu"] == pytest.approx(dynamic_shift_mu(flux.scheduler.config, tokens))
        flux.pipe(A, num_inference_steps=STEPS, height=size, width=size, output_type="latent")
        np.testing.assert_allclose(traj.timesteps, flux.pipe.scheduler.timesteps.numpy(), rtol=0, atol=1e-3)


def _embeddings_seen(network, run) -> list[torch.Tensor]:
    """The positive token embeddings ``network`` (a transformer or UNet) received at each call during ``run()``."""
    seen = []

    def hook(module, args, kwargs):
        seen.append(kwargs["encoder_hidden_states"][-1:].clone())

    handle = network.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_native_prompt_switch_changes_embeddings_from_the_planned_step(models, family):
    model = models[family]
    at = Boundary.step(1)
    k = at.switch_index(STEPS)
    schedule = PromptSchedule.switch(A, B, at)
    trajs = []
    seen = _embeddings_seen(model.network, lambda: trajs.append(sample(
        model, schedule, num_inference_steps=STEPS, guidance=3.0, height=SIZE, width=SIZE, device="cpu")))
    assert k == 2 and trajs[0].prompts == [A] * k + [B] * (STEPS - k) and len(seen) == STEPS
    a, b = model.encode([A]).prompt_embeds, model.encode([B]).prompt_embeds
    for i, e in enumerate(seen):
        torch.testing.assert_close(e, a if i < k else b, rtol=0, atol=0)
    if family == "sd3":  # the same switch made in pipe(...) by its documented callback gives the same image
        cond = model.encode([B])

        def callback(pipe, i, t, kw):
            if i == k - 1:
                kw["prompt_embeds"] = torch.cat([kw["prompt_embeds"][:1], cond.prompt_embeds])
                kw["pooled_prompt_embeds"] = torch.cat([kw["pooled_prompt_embeds"][:1], cond.text_embeds])
            return kw

        ref = _pipe_image(model.pipe, guidance_scale=3.0, callback_on_step_end=callback,
                          callback_on_step_end_tensor_inputs=["prompt_embeds", "pooled_prompt_embeds"])
        assert np.abs(_image(model, trajs[0]) - ref).max() <= TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_native_compare_on_latents_and_decoded_images(models, family):
    model = models[family]
    traj = sample(model, A, num_inference_steps=STEPS, guidance=2.0, batch_size=2, height=SIZE, width=SIZE,
                  device="cpu", record=("x0",))
    latent = compare(traj, model, ideal=False)
    rgb = compare(traj, decode=model.decode)
    assert latent.measured.shape == (STEPS, len(latent.levels)) and np.all(np.isfinite(latent.measured))
    assert max(rgb.levels) > max(latent.levels) and np.all(np.isfinite(rgb.measured))


def test_sizes_and_refusals(models):
    sd3, flux = models["sd3"], models["flux"]
    with pytest.raises(ValueError, match="multiples of 4 pixels"):
        sample(sd3, A, num_inference_steps=2, height=SIZE + 2, width=SIZE)
    with pytest.raises(ValueError, match="emphasis"):
        sample(flux, "a (cat:1.3)", num_inference_steps=2, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="max_sequence_length must be a positive integer"):
        from_pipeline(sd3.pipe, max_sequence_length=0)
    with pytest.raises(ValueError, match="embedded_guidance"):
        from_pipeline(flux.pipe, embedded_guidance=-1)
    assert from_pipeline(flux.pipe, embedded_guidance=2.0).embedded_guidance == 2.0


# ---------------------------------------------------------------------- previews
def test_linear_preview_of_16_channel_and_packed_latents(models):
    flux = models["flux"]
    lin = flux.linear_preview
    assert isinstance(lin, LinearPreview) and lin.weight.shape == (3, 16) and np.isfinite(lin.fit_rmse)
    z = torch.randn(2, 16, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(1))
    rgb = flux.to_rgb(z)
    assert rgb.shape == (2, 3, SIZE, SIZE) and 0 <= rgb.min() and rgb.max() <= 1
    packed = flux.pack(z)
    torch.testing.assert_close(packed, pack_latents(z), rtol=0, atol=0)  # the pipeline's own packing
    torch.testing.assert_close(unpack_latents(packed, SIZE // 2, SIZE // 2), z, rtol=0, atol=0)
    torch.testing.assert_close(lin(packed, grid=(SIZE // 2, SIZE // 2)), lin(z), rtol=0, atol=0)
    with pytest.raises(ValueError, match="grid="):
        lin(packed)
    fitted = pipeline_preview(flux.pipe, 16)
    assert fitted.weight.shape == (3, 16)


# ---------------------------------------------------------------------- the universal path
def test_lcm_has_no_native_adapter(lcm):
    with pytest.raises(ValueError, match="record_pipeline"):
        from_pipeline(lcm)


@pytest.mark.parametrize("guidance", [1.0, 8.0])
def test_universal_path_equals_pipeline(lcm, guidance):
    """LCM (guidance-distilled UNet, stochastic multistep LCMScheduler): refused by the native path."""
    traj = record_pipeline(lcm, A, num_inference_steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE, seed=3)
    assert traj.status == "complete" and traj.x0.shape == (STEPS, 1, 4, SIZE // 2, SIZE // 2)
    assert traj.metadata["model"]["pipeline"] == "LatentConsistencyModelPipeline" and traj.metadata["steps_reproducible"]
    latents = lcm(A, num_inference_steps=STEPS, guidance_scale=guidance, height=SIZE, width=SIZE,
                  generator=torch.Generator().manual_seed(3), output_type="latent").images
    torch.testing.assert_close(traj.final, latents, rtol=0, atol=0)  # pipe(...) itself, bit for bit
    ours = pipeline_decoder(lcm)(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - _pipe_image(lcm, seed=3, guidance_scale=guidance)).max() <= TOLERANCE
    assert np.abs(ours - _pipe_image(lcm, seed=4, guidance_scale=guidance)).max() > 1e-3
    # the last step's x̂0 is the scheduler's own (LCM's denoised), which the pipeline decodes
    torch.testing.assert_close(traj.x0[-1], traj.final, rtol=0, atol=0)


def test_universal_path_records_packed_flux_latents(models):
    flux = models["flux"]
    kw = _pipe_kwargs("flux", 3.0)
    traj = record_pipeline(flux.pipe, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=3, **kw)
    assert traj.x0.shape == (STEPS, 1, 16, SIZE // 2, SIZE // 2)
    assert traj.metadata["scheduler_config"]["_chromaviz_step_sigmas"] == "1/N" and traj.metadata["steps_reproducible"]
    native = sample(flux, A, num_inference_steps=STEPS, guidance=3.0, height=SIZE, width=SIZE, seed=3, device="cpu")
    np.testing.assert_allclose(traj.log_snr, native.log_snr, rtol=0, atol=1e-9)
    assert traj.metadata["mu"] == pytest.approx(native.metadata["mu"], abs=1e-5)
    torch.testing.assert_close(traj.final, native.final, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(traj.x0, native.x0, rtol=0, atol=TOLERANCE)
    with pytest.warns(PromptSwitchWarning, match="cannot replace its pooled prompt embedding: the prompt switch "
                                                  "changes prompt_embeds only"):
        switched = record_pipeline(flux.pipe, f"[{A}:{B}:2]", num_inference_steps=STEPS, height=SIZE, width=SIZE,
                                   seed=3, **kw)
    assert not torch.equal(switched.final, traj.final)  # the T5 embeddings did switch


def _switch_callback(embeds, k):
    def callback(pipe, i, t, kw):
        if i == k - 1:
            kw["prompt_embeds"] = embeds
        return kw

    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["prompt_embeds"]}


def test_universal_prompt_switch_equals_the_documented_callback(lcm):
    at = Boundary.step(1)
    k = at.switch_index(STEPS)
    traj = record_pipeline(lcm, PromptSchedule.switch(A, B, at), num_inference_steps=STEPS, height=SIZE, width=SIZE)
    assert traj.prompts == [A] * k + [B] * (STEPS - k)
    embeds = lcm.encode_prompt(B, "cpu", 1, False)[0]
    ours = pipeline_decoder(lcm)(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - _pipe_image(lcm, **_switch_callback(embeds, k))).max() <= TOLERANCE
    assert np.abs(ours - _pipe_image(lcm, **_switch_callback(embeds, k + 1))).max() > 1e-4  # one step off differs
    seen = _embeddings_seen(lcm.unet, lambda: record_pipeline(
        lcm, "[a photo of a cat:a red house:1]", num_inference_steps=STEPS, height=SIZE, width=SIZE))
    for i, e in enumerate(seen[-STEPS:]):  # the main call's steps (a planning and a capture call come first)
        torch.testing.assert_close(e, lcm.encode_prompt(A if i < k else B, "cpu", 1, False)[0], rtol=0, atol=0)


def test_universal_compare_on_latents_and_decoded_images(lcm):
    traj = record_pipeline(lcm, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, num_images_per_prompt=2)
    latent = compare(traj)
    rgb = compare(traj, decode=pipeline_decoder(lcm))
    assert latent.measured.shape == (STEPS, len(latent.levels)) and np.all(np.isfinite(latent.measured))
    assert max(rgb.levels) > max(latent.levels) and np.all(np.isfinite(rgb.measured))


def test_universal_path_refuses_what_it_cannot_do(lcm):
    with pytest.raises(TypeError, match="sets 'generator' itself"):
        record_pipeline(lcm, A, generator=torch.Generator())
    with pytest.raises(TypeError, match="takes no argument 'guidance'"):
        record_pipeline(lcm, A, guidance=3.0)
    with pytest.raises(PipelineRunError, match="AND terms"):
        record_pipeline(lcm, "a cat AND a dog", num_inference_steps=2, height=SIZE, width=SIZE)
    with pytest.raises(PipelineRunError, match="emphasis"):
        record_pipeline(lcm, "a (cat:1.2)", num_inference_steps=2, height=SIZE, width=SIZE)
    for steps in (0, 2.5):
        with pytest.raises(ValueError, match=f"num_inference_steps must be a positive integer, got {steps}"):
            record_pipeline(lcm, A, num_inference_steps=steps, height=SIZE, width=SIZE)


def test_universal_path_takes_only_a_diffusers_pipeline(models):
    with pytest.raises(TypeError, match="records a diffusers pipeline.*got str"):
        record_pipeline("a cat", A)
    with pytest.raises(TypeError, match=r"got SD3Denoiser \(a chromaviz model: sample\(\) it, or pass .*model.pipe\)"):
        record_pipeline(models["sd3"], A)


def test_pixart_learned_variance_and_a_pipeline_without_step_callbacks(models):
    pixart = models["pixart"]
    assert pixart.learned_variance and pixart.network.config.out_channels == 2 * pixart.channels
    x = torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(0))
    out = pixart(x, NoiseLevel(500.0, 0.6, 0.8), pixart.encode([A]))
    assert out.shape == x.shape  # the mean half of the 8 output channels
    kw = _pipe_kwargs("pixart", 1.0)
    traj = record_pipeline(pixart.pipe, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=3, **kw)
    native = sample(pixart, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=3, device="cpu")
    torch.testing.assert_close(traj.final, native.final, rtol=0, atol=TOLERANCE)  # the universal path too
    with pytest.raises(PipelineRunError, match="no callback_on_step_end"):
        record_pipeline(pixart.pipe, "[a cat:a dog:2]", num_inference_steps=STEPS, **kw)


@pytest.fixture(scope="module")
def qwen(folders):
    from diffusers import DiffusionPipeline

    with quiet_loading():
        return DiffusionPipeline.from_pretrained(folders["qwen"], local_files_only=True)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_universal_path_records_qwen_image(qwen, guidance):
    """Qwen-Image (packed latents of a one-frame video VAE, dynamic shift with a terminal σ, true CFG with its
    norm rescale): no native adapter; the universal path is ``pipe(...)``."""
    kw = {"true_cfg_scale": guidance, "negative_prompt": " " if guidance > 1 else None}
    traj = record_pipeline(qwen, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, seed=3, **kw)
    assert traj.x0.shape == (STEPS, 1, 4, SIZE // 2, SIZE // 2) and traj.metadata["steps_reproducible"]
    assert traj.metadata["scheduler_config"]["_chromaviz_step_sigmas"] == "1/N"
    cfg = qwen.scheduler.config
    tokens = (SIZE // 2 // 2) ** 2
    assert traj.metadata["mu"] == pytest.approx(dynamic_shift_mu(cfg, tokens), abs=1e-5)
    ours = pipeline_decoder(qwen)(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - _pipe_image(qwen, seed=3, **kw)).max() <= TOLERANCE
    assert np.abs(ours - _pipe_image(qwen, seed=4, **kw)).max() > 1e-3
    rgb = compare(traj, decode=pipeline_decoder(qwen))
    assert np.all(np.isfinite(rgb.measured)) and np.all(np.isfinite(compare(traj).measured))


def test_universal_switch_needs_prompts_of_as_many_tokens_where_the_mask_is_hidden(qwen):
    from chromaviz.sampling import SamplingError

    k = Boundary.step(1).switch_index(STEPS)
    traj = record_pipeline(qwen, "[a photo of a cat:a photo of a dog:1]", num_inference_steps=STEPS, height=SIZE,
                           width=SIZE, true_cfg_scale=1.0)
    embeds = qwen.encode_prompt("a photo of a dog", device="cpu")[0]
    ours = pipeline_decoder(qwen)(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - _pipe_image(qwen, true_cfg_scale=1.0, **_switch_callback(embeds, k))).max() <= TOLERANCE
    with pytest.raises(SamplingError, match="as many tokens") as info:
        record_pipeline(qwen, "[a photo of a cat:a red house under a blue moon:1]", num_inference_steps=STEPS,
                        height=SIZE, width=SIZE, true_cfg_scale=1.0)
    assert len(info.value.trajectory) == k  # the steps before the switch are kept


def test_qwen_image_vae_decodes_as_its_pipeline():
    """Qwen-Image's video VAE (one frame, per-channel statistics, no scaling factor), decoded as
    ``QwenImagePipeline.__call__`` decodes (the family is recorded by the universal path)."""
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(0)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=4, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False],
                                 latents_mean=[0.1, -0.2, 0.3, 0.0], latents_std=[1.5, 0.7, 2.0, 1.1]).eval()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    mean = torch.tensor(vae.config.latents_mean).view(1, 4, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, 4, 1, 1, 1)
    with torch.no_grad():
        ref = vae.decode(z[:, :, None] / inv_std + mean, return_dict=False)[0][:, :, 0]
    ours = VaeDecoder(vae)(z)
    assert ours.shape == (2, 3, 16, 16)
    torch.testing.assert_close(ours, (ref / 2 + 0.5).clamp(0, 1), rtol=0, atol=1e-5)


def test_universal_path_stops_and_fails_with_the_steps_kept(lcm):
    import threading

    from chromaviz.sampling import SamplingError

    stop = threading.Event()

    def stop_after_two(record):
        if record.index == 1:
            stop.set()

    traj = record_pipeline(lcm, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, stop=stop, callback=stop_after_two)
    assert traj.status == "cancelled" and len(traj) == 2 and traj.final is None

    def failing(record):
        if record.index == 2:
            raise RuntimeError("the viewer crashed")

    with pytest.raises(SamplingError, match="step 2 .*the step callback.*the viewer crashed") as info:
        record_pipeline(lcm, A, num_inference_steps=STEPS, height=SIZE, width=SIZE, callback=failing)
    assert info.value.trajectory.status == "failed" and len(info.value.trajectory) == 3


def test_flux_without_guidance_embedding(tmp_path):
    """Flux.1-schnell-like transformers (no ``guidance_embeds``) ignore the embedded guidance, as the pipeline."""
    model = load_pipeline(tiny.save_flux(tmp_path / "schnell", guidance_embeds=False))
    assert not model.guidance_embeds and model.describe()["embedded_guidance"] is None
    traj = sample(model, A, num_inference_steps=2, height=SIZE, width=SIZE, seed=3, device="cpu")
    ref = model.pipe(A, num_inference_steps=2, height=SIZE, width=SIZE, generator=torch.Generator().manual_seed(3),
                     output_type="np", guidance_scale=7.0).images
    assert np.abs(_image(model, traj) - ref).max() <= TOLERANCE
