"""The text-to-pixels pipeline (the bundled model's architecture) under chromaviz, and its training script.

A pipeline with the bundled model's exact configuration and random weights is built by the
training code, written with ``save_pretrained`` and loaded back through ``load_pipeline``, so the
real loading path runs; chromaviz's runs must equal the pipeline's own ``__call__``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from chromaviz import Boundary, PromptSchedule, sample
from chromaviz.models.diffusers.adapter import load_pipeline
from chromaviz.models.diffusers.denoisers import DiffusersTextPixelDenoiser
from chromaviz.models.diffusers.text_pixels import TextToPixelsPipeline
from chromaviz.models.shapes.train import build_pipeline, export_checkpoint, train

A, B = "a red circle on blue stripes", "a yellow star on green checks"
STEPS = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> DiffusersTextPixelDenoiser:
    root = tmp_path_factory.mktemp("text-pixels")
    build_pipeline(seed=1, workdir=root).save_pretrained(root / "pipeline")
    return load_pipeline(root / "pipeline")


def _pipe_samples(model, prompt=A, **kwargs) -> torch.Tensor:
    kwargs.setdefault("guidance_scale", 3.0)
    return model.pipe(prompt, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(kwargs.pop("seed", 0)),
                      output_type="latent", **kwargs).images


def _our_samples(model, prompt=A, **kwargs) -> torch.Tensor:
    kwargs.setdefault("guidance", 3.0)
    return sample(model, prompt, num_inference_steps=STEPS, device="cpu", **kwargs).final


def test_loads_as_a_conditional_pixel_model(model):
    assert isinstance(model.pipe, TextToPixelsPipeline) and model.conditional and model.pooled
    assert model.channels == 3 and model.default_size == (32, 32) and model.parameterization == "v_prediction"
    cond = model.encode([A, None])
    assert cond.prompt_embeds.shape == (2, 10, 64) and cond.text_embeds.shape == (2, 64)
    with pytest.raises(ValueError, match="multiples of 4"):
        model.check_size(30, 32)


@pytest.mark.parametrize("options", [{"seed": 3}, {"guidance_rescale": 0.7, "negative_prompt": "a white square on red dots"}])
def test_run_equals_pipeline(model, options):
    ours, ref = _our_samples(model, **options), _pipe_samples(model, **options)
    assert ours.shape == ref.shape == (1, 3, 32, 32)
    assert (ours - ref).abs().max() <= 1e-4


def test_prompt_switch_equals_pipeline_callback(model):
    at = Boundary.step(1)
    k = at.switch_index(STEPS)
    target = model.encode([B])

    def switch_after(step: int):
        def callback(pipe, index, timestep, tensors):
            if index == step - 1:  # takes effect at the next step; with guidance the halves are [negative, positive]
                tensors["prompt_embeds"] = torch.cat([tensors["prompt_embeds"].chunk(2)[0], target.prompt_embeds])
                tensors["pooled_prompt_embeds"] = torch.cat([tensors["pooled_prompt_embeds"].chunk(2)[0], target.text_embeds])
            return tensors
        return {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": ["prompt_embeds", "pooled_prompt_embeds"]}

    traj = sample(model, PromptSchedule.switch(A, B, at), num_inference_steps=STEPS, guidance=3.0, device="cpu")
    assert traj.prompts == [A] * k + [B] * (STEPS - k)
    assert (traj.final - _pipe_samples(model, **switch_after(k))).abs().max() <= 1e-4
    assert (traj.final - _pipe_samples(model, **switch_after(k + 1))).abs().max() > 1e-4


def test_pipeline_outputs_images(model):
    images = model.pipe(A, num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 32, 32, 3) and 0 <= images.min() and images.max() <= 1


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(folder / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")


def test_training_is_seeded_and_resumable(tmp_path):
    """Four steps in one go equal two steps, a stop, and two more resumed from the checkpoint."""
    straight = train(tmp_path / "straight", steps=4, batch_size=2, checkpoint_every=2)
    train(tmp_path / "broken", steps=4, batch_size=2, checkpoint_every=2, stop_at=2)
    state = json.loads((tmp_path / "broken" / "checkpoint.json").read_text())
    assert state["step"] == 2 and state["config"]["prediction_type"] == "v_prediction"
    resumed = train(tmp_path / "broken", steps=4, batch_size=2, checkpoint_every=2, resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "broken")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0
    assert [loss for _, loss in straight["losses"]] == pytest.approx([loss for _, loss in resumed["losses"]], abs=0)
    assert straight["steps"] == 4 and straight["seconds"] > 0 and straight["machine"]
    other = train(tmp_path / "other-seed", steps=4, batch_size=2, checkpoint_every=2, seed=1)
    assert other["losses"] != straight["losses"]
    assert np.isfinite([loss for _, loss in straight["losses"]]).all()


def test_training_stages_epsilon_then_v(tmp_path):
    """The bundled model's stages: ε, then v started from its moving average, then a fine-tune from a saved pipeline."""
    train(tmp_path / "eps", steps=2, batch_size=2, checkpoint_every=2, prediction_type="epsilon")
    first = load_file(tmp_path / "eps" / "checkpoint.safetensors")
    export_checkpoint(tmp_path / "eps", tmp_path / "eps-export")
    assert json.loads((tmp_path / "eps-export" / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    report = train(tmp_path / "v", steps=1, batch_size=2, checkpoint_every=1, init_from=tmp_path / "eps", lr=0.0)
    assert report["init_from"] == "eps" and report["prediction_type"] == "v_prediction"
    second = load_file(tmp_path / "v" / "checkpoint.safetensors")
    key = next(k for k in second if k.startswith("param.unet.conv_in"))
    assert torch.equal(second[key], first[key.replace("param.", "ema.", 1)])  # lr 0: the start is the other run's average
    fine = train(tmp_path / "fine", steps=1, batch_size=2, checkpoint_every=1, init_from=tmp_path / "eps-export", lr=0.0)
    assert fine["init_from"] == "eps-export"
    third = load_file(tmp_path / "fine" / "checkpoint.safetensors")
    assert all(torch.equal(third[k], second[k]) for k in second if k.startswith("param."))  # a saved pipeline = its run's average
    with pytest.raises(ValueError, match="prediction_type must be"):
        train(tmp_path / "bad", steps=1, prediction_type="sample")
