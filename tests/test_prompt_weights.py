"""Emphasis weights and AND (composable prompts) on real text encoders and real runs.

The pipelines are tiny with random weights (tests/diffusers_models.py), saved with
``save_pretrained`` and loaded back; the shapes model is the bundled one. The emphasis syntax and,
by default, its arithmetic are the webui's (chromaviz.prompts.emphasis,
chromaviz.models.diffusers.weighting); compel's arithmetic stays available.
"""

from __future__ import annotations

import math

import pytest
import torch

from chromaviz.cli import main
from chromaviz.models.diffusers.adapter import load_pipeline
from chromaviz.prompts import parse_emphasis
from chromaviz.models.exemplars import ExemplarMixture
from chromaviz.models.shapes import load_shapes
from chromaviz.noise.plan import NoiseLevel
from chromaviz.sampling import sample
from chromaviz.sampling.guidance import Guidance, check_prompt
from chromaviz.sampling.trajectory import Trajectory

import diffusers_models as tiny

# Most runs here are of tiny random-weight pipelines, or a few steps with guidance: not samples of
# anything, and chromaviz rightly warns so (SuspectRunWarning); these tests check the prompt plumbing.
pytestmark = pytest.mark.filterwarnings("ignore::chromaviz.sampling.trajectory.SuspectRunWarning")

SIZE, STEPS = 32, 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    return {"sd": tiny.save_sd(root / "sd"), "sdxl": tiny.save_sdxl(root / "sdxl")}


@pytest.fixture(scope="module")
def sd(folders):
    return load_pipeline(folders["sd"])


@pytest.fixture(scope="module")
def sdxl(folders):
    return load_pipeline(folders["sdxl"])


@pytest.fixture(scope="module")
def shapes():
    return load_shapes()


def _final(model, prompt, **kwargs):
    kwargs.setdefault("guidance", 3.0)
    size = kwargs.pop("size", SIZE)
    return sample(model, prompt, num_inference_steps=STEPS, height=size, width=size, device="cpu", **kwargs).final


# ---------------------------------------------------------------------- the webui's emphasis rule
@pytest.mark.parametrize(
    "text, expected",
    [  # the doctests of parse_prompt_attention (AUTOMATIC1111, modules/prompt_parser.py)
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [("a ", 1.0), ("house", 1.1 * 1.1 * 1.3), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
             (", sun, ", 1.1), ("sky", 1.1**4), (".", 1.1)],
        ),
        ("(cat:1.5)", [("cat", 1.5)]),
        ("( cat : 0.8 )", [(" cat ", 0.8)]),
        ("[cat]", [("cat", 1 / 1.1)]),
        ("a \\[x\\] b\\:c", [("a [x] b:c", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_emphasis_is_the_webui_rule(text, expected):
    got = parse_emphasis(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


# ---------------------------------------------------------------------- weights on text encoders
def test_weight_one_is_the_plain_prompt_and_other_weights_differ(sd):
    enc = lambda p: sd.encode([p]).prompt_embeds  # noqa: E731
    assert torch.equal(enc("(cat:1.0)"), enc("cat"))
    assert torch.equal(enc("a \\(cat\\)"), sd._encode_text("a (cat)").prompt_embeds)  # escapes: literal text
    assert not torch.allclose(enc("(cat:1.5)"), enc("cat"), atol=1e-3)
    assert not torch.allclose(enc("a [cat]"), enc("a cat"), atol=1e-3)
    torch.testing.assert_close(enc("((cat))"), enc("(cat:1.21)"))
    torch.testing.assert_close(enc("[cat]"), enc(f"(cat:{1 / 1.1!r})"))


@pytest.mark.parametrize("which", ["sd", "sdxl", "shapes"])
@pytest.mark.parametrize("arithmetic", ["a1111", "compel"])
def test_weighting_reads_the_encoders_as_the_pipeline_does(request, which, arithmetic, monkeypatch):
    """With every weight 1, the weighted path's embeddings equal the pipeline's encode_prompt: the same
    tokens and hidden states (last for SD and the shapes model, penultimate of both encoders for SDXL)."""
    model = request.getfixturevalue(which)
    prompt = "a red circle on blue stripes" if which == "shapes" else "a photo of a cat"
    monkeypatch.setattr(model, "emphasis_arithmetic", arithmetic)
    model._compel = None
    if arithmetic == "compel":
        model._encode_weighted([(prompt, 1.0)])
        for p in model._compel[1]:
            p.disable_no_weights_bypass()
    ours = model._encode_weighted([(prompt, 1.0)])
    theirs = model._encode_text(prompt)
    torch.testing.assert_close(ours.prompt_embeds, theirs.prompt_embeds, atol=1e-5, rtol=1e-5)
    if theirs.text_embeds is not None:
        torch.testing.assert_close(ours.text_embeds, theirs.text_embeds, atol=1e-5, rtol=1e-5)


def test_a1111_arithmetic_against_a_hand_computed_embedding(folders):
    """AUTOMATIC1111 (modules/sd_hijack_clip.py): each fragment tokenized alone, every token weighted
    (start, end and padding 1), z = encoder(tokens), z·w rescaled to z's mean. Worked here step by step
    from the tokenizer and the encoder, not through chromaviz's weighting module. The random encoder's
    final layer norm gets a bias, as a trained CLIP's has: with none its outputs average to ~1e-8 and
    the rescaling would divide by rounding noise."""
    sd = load_pipeline(folders["sd"])
    tok, enc = sd.pipe.tokenizer, sd.pipe.text_encoder
    with torch.no_grad():
        enc.final_layer_norm.bias.copy_(torch.linspace(-0.1, 0.3, enc.config.hidden_size))
    cat = tok("cat", add_special_tokens=False).input_ids
    photo = tok(" photo", add_special_tokens=False).input_ids
    a = tok("a ", add_special_tokens=False).input_ids
    body = a + cat + photo
    pad = tok.model_max_length - 2 - len(body)
    ids = torch.tensor([[tok.bos_token_id, *body, tok.eos_token_id] + [tok.pad_token_id] * pad])
    weights = torch.tensor([1.0] * (1 + len(a)) + [1.5] * len(cat) + [1.0] * (len(photo) + 1 + pad))
    with torch.no_grad():
        z = enc(ids).last_hidden_state
    by_hand = z * weights[None, :, None] * (z.mean() / (z * weights[None, :, None]).mean())
    got = sd.encode(["a (cat:1.5) photo"]).prompt_embeds
    torch.testing.assert_close(got, by_hand, atol=1e-6, rtol=1e-5)
    assert got.mean().item() == pytest.approx(z.mean().item(), rel=1e-5)  # the mean is restored
    plain = sd.encode(["a cat photo"]).prompt_embeds
    assert not torch.allclose(got, plain, atol=1e-4)  # and the weight changed something


def test_compel_arithmetic_stays_available_and_differs(sd, monkeypatch):
    a1111 = sd.encode(["a (cat:1.5) photo"]).prompt_embeds
    monkeypatch.setattr(sd, "emphasis_arithmetic", "compel")
    compel = sd.encode(["a (cat:1.5) photo"]).prompt_embeds
    assert compel.shape == a1111.shape and not torch.allclose(compel, a1111, atol=1e-4)
    monkeypatch.setattr(sd, "emphasis_arithmetic", "webui")
    with pytest.raises(ValueError, match="emphasis_arithmetic must be 'a1111' or 'compel'"):
        sd.encode(["a (cat:1.5) photo"])


def test_the_tokenizer_never_receives_weight_syntax(sd, sdxl, shapes, monkeypatch):
    seen: list = []
    for model in (sd, sdxl, shapes):
        for tok in {type(model.pipe.tokenizer), type(getattr(model.pipe, "tokenizer_2", None) or model.pipe.tokenizer)}:
            original = tok.__call__

            def spy(self, text, *args, _original=original, **kwargs):
                seen.extend([text] if isinstance(text, str) else list(text))
                return _original(self, text, *args, **kwargs)

            monkeypatch.setattr(tok, "__call__", spy)
    for model in (sd, sdxl):
        for p in ("a (cat:1.5) photo", "((red)) [house]"):
            model.encode([p])
    schedule = "a [(red:1.3):blue:1] house AND a [tree]:0.5"  # per step: emphasis and AND, resolved
    sample(sd, schedule, num_inference_steps=STEPS, height=SIZE, width=SIZE, device="cpu", guidance=3.0)
    sample(shapes, "a (red:1.4) circle on [blue] stripes", num_inference_steps=2, device="cpu", guidance=3.0)
    assert seen and {"a ", "cat", " photo"} <= set(seen)
    for text in seen:
        assert not set("()[]\\") & set(text) and ":" not in text and "1.5" not in text, text


@pytest.mark.slow
@pytest.mark.parametrize("which", ["sd", "sdxl", "shapes"])
def test_weighted_runs_differ_from_plain_ones(request, which):
    model = request.getfixturevalue(which)
    size = 32 if which == "shapes" else SIZE
    plain = _final(model, "a red circle", size=size)
    weighted = _final(model, "a (red:1.6) circle", size=size)
    assert torch.isfinite(weighted).all()
    assert not torch.allclose(plain, weighted, atol=1e-4)
    assert torch.equal(plain, _final(model, "a (red:1) circle", size=size))


# ---------------------------------------------------------------------- AND inside guidance
def test_and_with_one_term_is_the_plain_prompt(sd):
    plain = _final(sd, "a photo of a cat")
    assert torch.equal(_final(sd, "a photo of a cat:1"), plain)
    # a single term of weight a is guidance scale a·w: ε_u + w·a·(ε_c − ε_u)
    torch.testing.assert_close(_final(sd, "a photo of a cat:2", guidance=1.5), plain, atol=1e-5, rtol=1e-4)


def test_and_is_the_weighted_sum_made_by_hand(sd):
    torch.manual_seed(0)
    x = torch.randn(2, 4, SIZE // 2, SIZE // 2)
    level = NoiseLevel(timestep=500.0, alpha=0.7, sigma=math.sqrt(1 - 0.49))
    encode = lambda p: sd.encode([p] * 2)  # noqa: E731
    w = 4.0
    got = Guidance(w).predict(sd, x, level, "a photo of a cat AND a red house:0.5 AND [dog]:-0.3", "a tree", encode)
    u = sd(x, level, encode("a tree"))
    e = [sd(x, level, encode(t)) for t in ("a photo of a cat", " a red house", " [dog]")]
    by_hand = u + w * (1.0 * (e[0] - u) + 0.5 * (e[1] - u) - 0.3 * (e[2] - u))
    torch.testing.assert_close(got, by_hand, atol=1e-5, rtol=1e-4)
    # one term of weight 1: plain classifier-free guidance
    plain = Guidance(w).predict(sd, x, level, "a photo of a cat", "a tree", encode)
    torch.testing.assert_close(plain, u + w * (e[0] - u), atol=1e-5, rtol=1e-4)


def test_and_terms_are_recorded_per_step(sd, tmp_path):
    traj = sample(sd, "a [cat:dog:1] AND a (moon:1.2):0.5", num_inference_steps=STEPS, height=SIZE, width=SIZE,
                  device="cpu", guidance=3.0)
    expected = ["a cat AND a (moon:1.2):0.5"] * 2 + ["a dog AND a (moon:1.2):0.5"]
    assert traj.prompts == expected
    traj.save(tmp_path / "t.safetensors")
    assert Trajectory.load(tmp_path / "t.safetensors").prompts == expected


# ---------------------------------------------------------------------- models without a text encoder
@pytest.mark.slow
def test_a_model_without_text_encoder_refuses_weights_but_takes_and():
    model = ExemplarMixture()
    with pytest.raises(ValueError, match=r"do not apply .*'a \(cat:1.2\)'"):
        sample(model, "a (cat:1.2)", num_inference_steps=2, height=32, width=32, device="cpu")
    with pytest.raises(ValueError, match="do not apply"):
        sample(model, "[cat:[moon]:1]", num_inference_steps=3, height=32, width=32, device="cpu")
    assert check_prompt(model, "a photo of a cat AND the moon:0.5") == "cat AND moon:0.5"
    assert check_prompt(model, "a photo of a cat") == "cat"
    traj = sample(model, "[cat|moon] AND cat:0.5", num_inference_steps=3, height=32, width=32, device="cpu", guidance=2.0)
    assert traj.prompts == ["cat AND cat:0.5", "cat AND cat:0.5", "moon AND cat:0.5"]  # the webui's numbering
    assert torch.isfinite(traj.final).all()


@pytest.mark.slow
def test_cli_takes_the_same_language(tmp_path):
    code = main(["run", "--model", "exemplars", "--prompt", "[cat|moon] AND cat:0.5", "--steps", "4", "--guidance",
                 "2", "--batch", "1", "--size", "32", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    traj = Trajectory.load(tmp_path / "trajectory.safetensors")
    assert traj.prompts == ["cat AND cat:0.5", "cat AND cat:0.5", "moon AND cat:0.5", "cat AND cat:0.5"]
