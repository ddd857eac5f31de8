"""chromaviz driving real diffusers pipelines, checked against ``pipe(...)`` itself.

Every model here is tiny with random weights (tests/diffusers_models.py), written with
``save_pretrained`` and loaded back through :func:`chromaviz.models.diffusers.adapter.load_pipeline`,
so the real loading path runs. Nothing is downloaded.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from chromaviz import spectral
from chromaviz.noise import plan_steps
from chromaviz.analysis import compare, decoded
from chromaviz.models.diffusers.adapter import from_pipeline, load_pipeline
from chromaviz.models.diffusers.denoisers import DiffusersDenoiser, DiffusersPixelDenoiser
from chromaviz.models.diffusers.previews import LinearPreview, fit_linear_preview
from chromaviz.prompts import Boundary, PromptSchedule
from chromaviz.sampling import SamplingError, sample

import diffusers_models as tiny

# The tiny pipelines have random weights: their runs are not samples of anything, and chromaviz
# rightly warns so (SuspectRunWarning); these tests check the pipelines' plumbing, not their samples.
pytestmark = pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")

SIZE = 32  # pixels; latents are 16×16 (the tiny VAE has scale factor 2)
STEPS = 4
A, B = "a photo of a cat", "a red house"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {
        "sd": tiny.save_sd(root / "sd"),
        "sd_v": tiny.save_sd(root / "sd_v", prediction_type="v_prediction", scheduler="EulerDiscreteScheduler", seed=1),
        "sdxl": tiny.save_sdxl(root / "sdxl"),
        "ddpm": tiny.save_ddpm(root / "ddpm"),
        "taesd": tiny.save_taesd(root / "taesd"),
    }


@pytest.fixture(scope="module")
def sd(folders) -> DiffusersDenoiser:
    return load_pipeline(folders["sd"])


@pytest.fixture(scope="module")
def sdxl(folders) -> DiffusersDenoiser:
    return load_pipeline(folders["sdxl"])


def failing_at(pipe, call: int, fault: str) -> DiffusersDenoiser:
    """The real adapter, whose ``call``-th evaluation fails as a GPU would: ``fault`` is
    ``"oom"`` (raises ``torch.OutOfMemoryError``) or ``"nan"`` (returns NaN)."""

    class Failing(DiffusersDenoiser):
        calls = 0

        def __call__(self, x_t, level, cond):
            type(self).calls += 1
            if self.calls == call and fault == "oom":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
            out = super().__call__(x_t, level, cond)
            return out * float("nan") if self.calls == call else out

    return Failing(pipe)


def _pipe_image(model, prompt=A, **kwargs) -> np.ndarray:
    """``pipe(...)`` output, (B, H, W, 3) in [0, 1]."""
    kwargs.setdefault("guidance_scale", 3.0)
    return model.pipe(prompt, num_inference_steps=STEPS, height=SIZE, width=SIZE,
                      generator=torch.Generator().manual_seed(kwargs.pop("seed", 0)), output_type="np", **kwargs).images


def _our_image(model, prompt=A, **kwargs) -> np.ndarray:
    kwargs.setdefault("guidance", 3.0)
    traj = sample(model, prompt, num_inference_steps=STEPS, height=SIZE, width=SIZE, device="cpu", **kwargs)
    return model.decode(traj.final).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------- equivalence with pipe(...)
@pytest.mark.parametrize("kind", ["sd", "sd_v"])
def test_sd_final_image_equals_pipeline(folders, kind):
    model = load_pipeline(folders[kind])
    assert model.parameterization == ("epsilon" if kind == "sd" else "v_prediction")
    ours, ref = _our_image(model, seed=3), _pipe_image(model, seed=3)
    assert ours.shape == ref.shape == (1, SIZE, SIZE, 3)
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ours - _pipe_image(model, seed=4)).max() > 1e-3  # the seed matters: the check can fail


def test_sd_guidance_rescale_and_negative_prompt_equal_pipeline(sd):
    ours = _our_image(sd, guidance_rescale=0.7, negative_prompt="a dog")
    ref = _pipe_image(sd, guidance_rescale=0.7, negative_prompt="a dog")
    assert np.abs(ours - ref).max() <= 1e-4
    assert np.abs(ours - _pipe_image(sd, negative_prompt="a dog")).max() > 1e-4  # rescale changes the image


def test_sdxl_final_image_equals_pipeline(sdxl):
    assert sdxl.xl and type(sdxl.scheduler).__name__ == "EulerDiscreteScheduler"
    ours, ref = _our_image(sdxl, guidance_rescale=0.5), _pipe_image(sdxl, guidance_rescale=0.5)
    assert np.abs(ours - ref).max() <= 1e-4


def test_pixel_unet_equals_ddpm_pipeline(folders):
    model = load_pipeline(folders["ddpm"])
    assert isinstance(model, DiffusersPixelDenoiser) and not model.conditional
    traj = sample(model, num_inference_steps=STEPS, seed=5, device="cpu")
    assert traj.metadata["scheduler_class"] == "DDPMScheduler"
    ours = model.decode(traj.final).permute(0, 2, 3, 1).numpy()
    ref = model.pipe(num_inference_steps=STEPS, generator=torch.Generator().manual_seed(5), output_type="np").images
    assert ours.shape == ref.shape == (1, 16, 16, 3)
    assert np.abs(ours - ref).max() <= 1e-4


def _switch_callback(model, k: int):
    """The pipeline-side switch: after step k − 1, replace the positive half of the embeddings."""
    cond = model.encode([B])

    def callback(pipe, step_index, timestep, kw):
        if step_index == k - 1:  # takes effect at step k
            neg, _ = kw["prompt_embeds"].chunk(2)  # with CFG the loop holds cat([negative, positive])
            kw["prompt_embeds"] = torch.cat([neg, cond.prompt_embeds])
            if model.xl:
                neg_pooled, _ = kw["add_text_embeds"].chunk(2)
                kw["add_text_embeds"] = torch.cat([neg_pooled, cond.text_embeds])
        return kw

    inputs = ["prompt_embeds", "add_text_embeds"] if model.xl else ["prompt_embeds"]
    return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": inputs}


@pytest.mark.parametrize("which", ["sd", "sdxl"])
def test_prompt_switch_equals_pipeline_callback(request, which):
    model = request.getfixturevalue(which)
    at = Boundary.step(1)  # A1111's [a:b:1]: b from step index 2 on
    k = at.switch_index(STEPS)
    traj = sample(model, PromptSchedule.switch(A, B, at), num_inference_steps=STEPS, guidance=3.0,
                  height=SIZE, width=SIZE, device="cpu")
    assert k == 2 and traj.prompts == [A] * k + [B] * (STEPS - k)
    ours = model.decode(traj.final).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - _pipe_image(model, **_switch_callback(model, k))).max() <= 1e-4
    # one step off is a different image, so the indexing is really checked
    assert np.abs(ours - _pipe_image(model, **_switch_callback(model, k + 1))).max() > 1e-4


def test_default_scheduler_is_the_pipelines_own(sdxl):
    """``"default"`` rebuilds the pipeline's scheduler from the kept config, wherever it is made."""
    from chromaviz.noise import make_scheduler

    own = make_scheduler("default", sdxl.schedule)
    assert type(own).__name__ == "EulerDiscreteScheduler"
    assert {k: v for k, v in own.config.items() if not k.startswith("_")} == {k: v for k, v in sdxl.pipe.scheduler.config.items() if not k.startswith("_")}
    sdxl.pipe.scheduler.set_timesteps(7)
    timesteps = plan_steps(sdxl.schedule, 7, "default").timesteps
    np.testing.assert_array_equal(timesteps, sdxl.pipe.scheduler.timesteps.numpy())
    assert type(make_scheduler("ddim", sdxl.schedule)).__name__ == "DDIMScheduler"  # names still choose


def test_unconditional_is_the_pipelines_negative_half(sd, sdxl):
    _, neg = sd.pipe.encode_prompt(A, "cpu", 1, True)
    torch.testing.assert_close(sd.encode([None]).prompt_embeds, neg)
    torch.testing.assert_close(sd.encode([""]).prompt_embeds, neg)
    _, neg, _, neg_pooled = sdxl.pipe.encode_prompt(A, device="cpu", do_classifier_free_guidance=True)
    assert torch.count_nonzero(neg) == 0  # force_zeros_for_empty_prompt
    cond = sdxl.encode([None, A])
    torch.testing.assert_close(cond.prompt_embeds[:1], neg)
    torch.testing.assert_close(cond.text_embeds[:1], neg_pooled)
    assert cond.prompt_embeds[1].abs().sum() > 0


def test_prompts_sizes_and_default_scheduler(sd):
    assert sd.check_prompt("any text at all, 日本語 too") == "any text at all, 日本語 too"
    with pytest.raises(ValueError, match="must be a str"):
        sd.check_prompt(3)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample(sd, A, num_inference_steps=2, height=36, width=SIZE)
    traj = sample(sd, A, num_inference_steps=2, height=SIZE, width=48, device="cpu", record=("x0",))
    assert traj.x0.shape == (2, 1, 4, SIZE // 2, 24) and traj.metadata["scheduler_class"] == "DDIMScheduler"
    assert traj.metadata["model"]["pipeline"] == "StableDiffusionPipeline"


def test_deferred_records_are_the_same_run(sd, monkeypatch):
    """The hand-out used on CUDA (each record one step late), exercised on the CPU."""
    import chromaviz.sampling.recorder as recorder

    now = sample(sd, A, num_inference_steps=3, guidance=3.0, height=SIZE, width=SIZE, device="cpu")
    monkeypatch.setattr(recorder, "DEFER_ON", ("cpu", "cuda"))
    seen = []
    late = sample(sd, A, num_inference_steps=3, guidance=3.0, height=SIZE, width=SIZE, device="cpu", callback=seen.append)
    assert [r.index for r in seen] == [0, 1, 2] and late.status == "complete"
    torch.testing.assert_close(late.x0, now.x0, rtol=0, atol=0)
    torch.testing.assert_close(late.final, now.final, rtol=0, atol=0)

    with pytest.raises(SamplingError, match="NaN or infinity at step 2.*the 2 earlier steps are kept") as info:
        sample(failing_at(sd.pipe, 3, "nan"), A, num_inference_steps=4, height=SIZE, width=SIZE, device="cpu")
    assert len(info.value.trajectory) == 2

    with pytest.raises(SamplingError, match="step 2 .*out of memory") as info:
        sample(failing_at(sd.pipe, 3, "oom"), A, num_inference_steps=4, height=SIZE, width=SIZE, device="cpu")
    assert [r.index for r in info.value.trajectory.steps] == [0, 1]  # the step still in flight is kept


def test_record_scale_pools_the_records(sd):
    full = sample(sd, A, num_inference_steps=2, height=SIZE, width=SIZE, device="cpu", record=("x0", "x_t"))
    pooled = sample(sd, A, num_inference_steps=2, height=SIZE, width=SIZE, device="cpu", record=("x0",), record_scale=2)
    assert pooled.x0.shape == (2, 1, 4, 8, 8) and pooled.steps[0].x_t is None
    torch.testing.assert_close(pooled.x0, torch.nn.functional.avg_pool2d(full.x0.flatten(0, 1), 2).view(2, 1, 4, 8, 8))
    torch.testing.assert_close(pooled.final, full.final)  # the sample itself is never pooled
    with pytest.raises(ValueError, match="record_scale=3 must divide"):
        sample(sd, A, num_inference_steps=2, height=SIZE, width=SIZE, record_scale=3)


# ---------------------------------------------------------------------- previews
def test_vae_preview_is_the_pipeline_decode(sd):
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = sd.pipe.image_processor.postprocess(sd.pipe.vae.decode(z / sd.pipe.vae.config.scaling_factor).sample, output_type="pt")
    torch.testing.assert_close(sd.decode(z), ref)


def test_linear_fit_recovers_a_linear_decoder():
    weight = torch.tensor([[0.06, -0.03, 0.02, 0.0], [0.0, 0.05, -0.03, 0.02], [-0.02, 0.0, 0.03, 0.06]])
    bias = torch.tensor([0.5, 0.45, 0.4])

    def decode(z):  # exactly linear per latent pixel (never clipped here), upsampled by 2 as a VAE would
        rgb = torch.einsum("oc,bchw->bohw", weight, z) + bias.view(1, 3, 1, 1)
        assert 0 < rgb.min() and rgb.max() < 1
        return torch.nn.functional.interpolate(rgb, scale_factor=2)

    fit = fit_linear_preview(decode, 4, 2, num=4)
    torch.testing.assert_close(fit.weight, weight, atol=1e-4, rtol=0)
    torch.testing.assert_close(fit.bias, bias, atol=1e-4, rtol=0)
    assert fit.fit_rmse < 1e-4 and fit.fit_r2 > 0.999


def test_linear_and_taesd_previews(folders, sd):
    lin = sd.linear_preview
    assert isinstance(lin, LinearPreview) and np.isfinite(lin.fit_rmse) and lin.fit_rmse < 0.5
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    rgb = sd.to_rgb(z)
    assert rgb.shape == (2, 3, SIZE, SIZE) and 0 <= rgb.min() and rgb.max() <= 1
    # measured fit error: the map against the VAE on fresh latents, on the latent grid
    err = (torch.nn.functional.avg_pool2d(sd.decode(z), 2) - lin(z)[..., ::2, ::2]).pow(2).mean().sqrt()
    assert float(err) < 2 * lin.fit_rmse + 0.02
    from diffusers import AutoencoderTiny

    fast = from_pipeline(sd.pipe, tiny_vae=AutoencoderTiny.from_pretrained(folders["taesd"]))
    assert fast.preview == "taesd" and fast.to_rgb(z).shape == (2, 3, SIZE, SIZE)
    with pytest.raises(ValueError, match="needs tiny_vae"):
        from_pipeline(sd.pipe, preview="taesd")
    with pytest.raises(ValueError, match="unknown preview"):
        from_pipeline(sd.pipe, preview="jpeg")


# ---------------------------------------------------------------------- chromatography
def test_chromatography_in_latent_and_rgb_space(sd):
    traj = sample(sd, A, num_inference_steps=6, guidance=3.0, batch_size=2, height=SIZE, width=SIZE, device="cpu", record=("x0",))
    latent = compare(traj, sd)
    assert latent.measured.shape == (6, len(latent.levels)) and latent.power_source == "samples"
    rgb_traj = decoded(traj, sd.decode)
    assert rgb_traj.x0.shape == (6, 2, 3, SIZE, SIZE) and rgb_traj.metadata["space"] == "rgb"
    rgb = compare(traj, decode=sd.decode)
    assert max(rgb.levels) > max(latent.levels)  # measured on the 32×32 image, not the 16×16 latents
    np.testing.assert_allclose(rgb.measured, compare(rgb_traj).measured)
    assert np.all(np.isfinite(latent.measured)) and np.all(np.isfinite(rgb.measured))


def test_explorer_runs_a_pipeline(sd):
    from chromaviz.widgets import Explorer

    ex = Explorer(sd, num_steps=4, size=SIZE, prompt=A, second_prompt=B, device="cpu")
    ex.run_button.click()
    ex.wait(60)
    traj = ex.trajectories["A"]
    assert traj.status == "complete" and traj.x0.shape == (4, 1, 4, SIZE // 2, SIZE // 2)
    assert ex.levels == spectral.levels_for(SIZE // 2, SIZE // 2)  # bands of the latent grid
    assert ex.shown()["x0"].startswith("data:image/webp;base64,")  # the frame the browser shows


# ---------------------------------------------------------------------- loading
def test_unknown_model_fails_at_once_with_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"'chromaviz-tests/no-such-model'.*local folder.*save_pretrained"):
        load_pipeline("chromaviz-tests/no-such-model")
    assert time.perf_counter() - started < 10
    with pytest.raises(ValueError, match="not a diffusers pipeline"):
        load_pipeline(tmp_path)
    with pytest.raises(ValueError, match="no folder"):
        load_pipeline(tmp_path / "missing" / "deeper")


def test_a_keyword_the_pipeline_does_not_take_is_refused(folders):
    """diffusers ignores it with a log line that loading keeps quiet: a typo must not pass silently."""
    with pytest.raises(TypeError, match=r"got unknown, which StableDiffusionPipeline does not take.*components.*unet"):
        load_pipeline(folders["sd"], unknown=1)
    assert load_pipeline(folders["sd"], use_safetensors=True).pipe.unet is not None  # a loading option still passes


def test_unknown_model_fails_fast_without_the_offline_switch(monkeypatch):
    """With HF_HUB_OFFLINE unset, an id that is not cached still ends in one ValueError, quickly:
    here the hub cannot be reached; where it can, it answers that the repository does not exist."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"cannot load diffusers model 'chromaviz-tests/no-such-model'"):
        load_pipeline("chromaviz-tests/no-such-model")
    assert time.perf_counter() - started < 30


def test_bfloat16_taesd_folder_and_out_of_memory(folders):
    model = load_pipeline(folders["sd"], torch_dtype=torch.bfloat16, tiny_vae=folders["taesd"])
    assert model.dtype == torch.bfloat16 and model.preview == "taesd"
    traj = sample(model, A, num_inference_steps=3, guidance=3.0, height=SIZE, width=SIZE, device="cpu")
    assert traj.x0.dtype == torch.bfloat16 and torch.isfinite(model.decode(traj.final)).all()
    assert model.to_rgb(traj.x0[-1]).shape == (1, 3, SIZE, SIZE)

    failing = failing_at(model.pipe, 3, "oom")
    with pytest.raises(SamplingError, match="out of memory: try torch_dtype=torch.float16") as info:
        sample(failing, A, num_inference_steps=4, height=SIZE, width=SIZE, device="cpu")
    partial = info.value.trajectory
    assert partial.status == "failed" and len(partial) == 2 and partial.final is None


def test_unsupported_pipeline_is_refused(folders):
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(folders["ddpm"])
    pipe.unet = torch.nn.Identity()
    with pytest.raises(ValueError, match="supported: StableDiffusionPipeline"):
        from_pipeline(pipe)


# ---------------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu_in_each_dtype(folders, dtype):
    # The reference runs on the CPU in the same dtype: the seed's noise is drawn on the CPU in the
    # model's dtype (as diffusers' randn_tensor), and torch's CPU generator may draw other numbers
    # for float16 than for float32 (torch 2.11 does: the images then differ by 0.17 on average).
    model = load_pipeline(folders["sd"], torch_dtype=dtype, device="cuda")
    traj = sample(model, A, num_inference_steps=STEPS, guidance=3.0, height=SIZE, width=SIZE, device="cuda",
                  record=("x0",), record_scale=2)
    assert traj.status == "complete" and traj.x0.dtype == dtype and traj.x0.device.type == "cpu"
    assert traj.steps[0].x0.is_pinned()
    img = model.decode(traj.final)
    assert torch.isfinite(img).all()
    ref = load_pipeline(folders["sd"], torch_dtype=dtype)
    full = ref.decode(sample(ref, A, num_inference_steps=STEPS, guidance=3.0, height=SIZE, width=SIZE, device="cpu").final)
    assert (img.float().cpu() - full.float()).abs().mean() < 0.02
