"""The procedural shapes dataset and the analytic checker that reads its images back."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from chromaviz.models.shapes import checker as shapes_checker
from chromaviz.models.shapes import dataset as shapes
from chromaviz.models.shapes.dataset import Scene


def _scenes(n: int, seed: int) -> tuple[list[Scene], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scenes = shapes.random_scenes(n, g)
    return scenes, shapes.render(scenes, 32, g)


def _area(scene: Scene) -> float:
    """Exact area in pixels: πr² or the shoelace formula."""
    if scene.shape == "circle":
        return np.pi * scene.radius**2
    y, x = np.array(shapes._polygon(scene.shape, scene.radius)).T
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_stream_is_seeded_and_infinite():
    a, b, c = shapes.batches(8, seed=3), shapes.batches(8, seed=3), shapes.batches(8, seed=4)
    for _ in range(3):
        (xa, ca), (xb, cb), (xc, cc) = next(a), next(b), next(c)
        assert torch.equal(xa, xb) and ca == cb
        assert not torch.equal(xa, xc)
    assert xa.shape == (8, 3, 32, 32) and xa.min() >= -1 and xa.max() <= 1


def test_attributes_cover_every_combination_and_shapes_stay_inside():
    scenes, images = _scenes(2000, seed=0)
    assert {s.colour for s in scenes} == set(shapes.COLOURS) == {s.background for s in scenes}
    assert {s.shape for s in scenes} == set(shapes.SHAPES) and {s.texture for s in scenes} == set(shapes.TEXTURES)
    assert all(s.colour != s.background for s in scenes)
    for s in scenes[:300]:  # the whole shape is drawn: its coverage sums to its exact area, nothing cut at the border
        assert shapes.shape_mask(s, size=32).sum().item() == pytest.approx(_area(s), rel=0.03)


def test_captions_name_the_attributes():
    scene = Scene("red", "star", "blue", "checks")
    assert scene.caption == "a red star on blue checks"
    assert shapes.parse_caption(scene.caption) == scene
    assert set(scene.caption.split()) <= set(shapes.VOCABULARY)
    with pytest.raises(ValueError, match="not of the form"):
        shapes.parse_caption("a red star")
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        Scene("red", "hexagon", "blue", "dots")
    with pytest.raises(ValueError, match="must differ in colour"):
        Scene("red", "star", "red", "dots")
    with pytest.raises(ValueError, match="multiple of 32"):
        shapes.render([scene], size=48)


def test_words_control_coarse_and_fine_levels():
    """Background colour changes the mean (coarsest level); texture only the fine levels."""
    base = Scene("red", "circle", "blue", "stripes")
    other_texture = shapes.render([Scene("red", "circle", "blue", "checks")])[0]
    other_colour = shapes.render([Scene("red", "circle", "green", "stripes")])[0]
    x = shapes.render([base])[0]
    assert (x.mean((1, 2)) - other_texture.mean((1, 2))).abs().max() < 0.03
    assert (x.mean((1, 2)) - other_colour.mean((1, 2))).abs().max() > 0.1
    assert (x - other_texture).abs().max() > 0.3


def test_checker_reads_the_dataset():
    """The checker's own accuracy, on 1024 images: every attribute ≥ 99%."""
    scenes, images = _scenes(1024, seed=123)
    acc = shapes_checker.accuracy(shapes_checker.read_batch(images), scenes)
    assert min(acc.values()) >= 0.99, acc


def test_checker_distinguishes_each_attribute():
    """Change one word and the reading changes with it (the checker is not reading the caption's prior)."""
    base = dict(colour="yellow", shape="circle", background="purple", texture="dots", centre=(15.0, 17.0), radius=9.0)
    for key, values in (("shape", shapes.SHAPES), ("texture", shapes.TEXTURES), ("colour", ("red", "green", "white"))):
        for value in values:
            scene = Scene(**{**base, key: value})
            reading = shapes_checker.read(shapes.render([scene])[0])
            assert getattr(reading, key) == value, (key, value, reading.features)


def test_checker_on_noise_and_bad_input():
    noise = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    reading = shapes_checker.read(noise)
    scene = Scene("red", "circle", "blue", "stripes")
    assert sum(reading.matches(scene).values()) <= 2
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        shapes_checker.read(torch.zeros(32, 32))
    with pytest.raises(ValueError, match="as many readings as scenes"):
        shapes_checker.accuracy([], [scene])


def test_checker_reads_larger_renders():
    scenes, _ = _scenes(64, seed=5)
    big = shapes.render(scenes, 64, torch.Generator().manual_seed(1))
    acc = shapes_checker.accuracy(shapes_checker.read_batch(big), scenes)
    assert min(acc.values()) >= 0.95, acc
    counts = collections.Counter(s.texture for s in scenes)
    assert len(counts) == 4 and np.isclose(sum(counts.values()), 64)
