"""The bundled shapes model: shipped in the package, loaded with from_pretrained, and it learned its data."""

from __future__ import annotations

import json

import pytest
import torch

from chromaviz import by_resolution, sample
from chromaviz.models.shapes import checker as shapes_checker
from chromaviz.models.shapes import dataset as shapes
from chromaviz.apps.composing import band_provenance
from chromaviz.models import load_builtin
from chromaviz.models.diffusers.denoisers import DiffusersTextPixelDenoiser
from chromaviz.models.shapes.model import GUIDANCE, WEIGHTS, load_shapes


@pytest.fixture(scope="module")
def model():
    return load_builtin("shapes")


def test_shipped_as_safetensors_within_20_mb():
    files = [p for p in WEIGHTS.rglob("*") if p.is_file()]
    assert (WEIGHTS / "model_index.json").is_file()
    assert json.loads((WEIGHTS / "model_index.json").read_text())["_class_name"] == "TextToPixelsPipeline"
    assert {p.suffix for p in files} <= {".json", ".safetensors", ".txt"}, "no pickles in the package"
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20


def test_loads_through_the_diffusers_adapter(model):
    assert isinstance(model, DiffusersTextPixelDenoiser) and model.name == "shapes"
    assert model.default_size == (32, 32) and model.recommended_guidance == GUIDANCE
    params = sum(p.numel() for p in model.pipe.unet.parameters()) + sum(p.numel() for p in model.pipe.text_encoder.parameters())
    assert 1e6 < params < 5e6
    assert type(model.scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ValueError, match="keeps the schedule it was trained with"):
        load_shapes(schedule="linear")
    with pytest.raises(FileNotFoundError, match="no trained shapes pipeline"):
        load_shapes(folder=WEIGHTS / "missing")


def test_samples_show_what_the_caption_says(model):
    """16 captions, 30 steps: the checker reads all four attributes back in at least 3 of 4 samples.

    A regression guard, not the quality measurement (benchmarks/shapes_quality.py: 256 samples, 50 steps).
    """
    scenes = shapes.random_scenes(16, torch.Generator().manual_seed(7))
    images = model.pipe([s.caption for s in scenes], num_inference_steps=30, guidance_scale=GUIDANCE,
                        generator=torch.Generator().manual_seed(0), output_type="pt").images
    acc = shapes_checker.accuracy(shapes_checker.read_batch(images), scenes)
    assert min(acc[k] for k in ("colour", "shape", "background", "texture")) >= 0.75, acc


def test_composing_on_the_trained_model_hands_over_with_the_switch(model):
    """The later the switch (the finer the level), the more of A's coarse band the composed sample keeps.

    The crossover itself does not follow the level births on this model (docs/composing.md): it
    commits to its discrete attributes within a few steps, so a switch gives mostly A or mostly B.
    """
    a, b = "a red circle on blue stripes", "a yellow star on green checks"
    kw = dict(num_inference_steps=30, guidance=1.0, batch_size=8, device="cpu", record=())
    only_a, only_b = sample(model, a, **kw), sample(model, b, **kw)
    coarse_from_a = {}
    for m in (8, 2):
        composed = sample(model, by_resolution(coarse=a, fine=b, level=m), **kw)
        coarse_from_a[m] = band_provenance(composed, only_a, only_b).weight_a[-1]
    assert coarse_from_a[2] > coarse_from_a[8] + 0.1, coarse_from_a


def test_upscales_to_twice_its_size(model):
    """Upsample guidance on a text-conditioned pixel pipeline: the run completes at 64×64, with guidance."""
    from chromaviz import upscale

    run = upscale(model, "a red circle on blue stripes", factor=2, num_inference_steps=10, guidance=GUIDANCE, device="cpu")
    assert run.metadata["status"] == "complete" and run.final.shape == (1, 3, 64, 64)
    assert torch.isfinite(run.final).all()


def test_loading_and_sampling_the_shapes_model_prints_nothing():
    """transformers' torchvision notices, diffusers' accelerate notice and loading bars are not the
    user's doing: nothing reaches the screen (a notebook cell stays clean)."""
    import subprocess
    import sys

    code = ("from chromaviz import load_shapes, sample\n"
            "sample(load_shapes(), 'a red circle on blue stripes', num_inference_steps=2)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", out.stdout + out.stderr


def test_a_word_the_shapes_model_never_learned_is_refused_before_sampling():
    """It took any text and sampled something; now it names the words it knows, as the exemplar model does."""
    from chromaviz import load_shapes, sample

    model = load_shapes()
    with pytest.raises(ValueError, match=r"never taught 'elephant'; it knows a, on, red, .*'a red circle on blue stripes'"):
        sample(model, "a purple elephant", num_inference_steps=2)
    assert model.check_prompt("a (red:1.2) circle on blue stripes AND a yellow star on green checks:0.5")
