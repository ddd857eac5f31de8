"""A procedural, captioned dataset of coloured shapes on textured backgrounds.

Every image is one shape (circle, square, triangle or star) in one colour, over a background of
another colour drawn with a texture (stripes, dots, checks or noise) in that colour and a dark shade
of it. The caption names all four attributes: ``"a red circle on blue stripes"``. Words control
both ends of the resolution range: the colours and the shape's placement live in the coarse levels,
the shape's outline and the background texture in the fine ones (the finest texture period is 4
pixels at 32×32), so a prompt switch has something to show at every level.

The dataset is infinite and seeded: :func:`random_scenes` draws attributes from a
``torch.Generator`` and :func:`render` draws them, vectorised over the batch. Sizes are given for
a 32×32 image and scale with ``size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..base import DataSource

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.16),
    "green": (0.16, 0.70, 0.24),
    "blue": (0.16, 0.31, 0.86),
    "yellow": (0.95, 0.82, 0.16),
    "purple": (0.58, 0.22, 0.78),
    "white": (0.95, 0.95, 0.95),
}
"""Palette, RGB in [0, 1]. A background uses its colour and :data:`DARK` times it."""

DARK = 0.35
"""The dark shade of a background colour, as a factor on its RGB."""

SHAPES = ("circle", "square", "triangle", "star")
TEXTURES = ("stripes", "dots", "checks", "noise")

# In pixels of a 32×32 image: shape size and the texture periods.
RADIUS_RANGE = (7.0, 10.0)
MARGIN = 1.0         # the whole shape stays this far inside the image
STRIPE_PERIOD = 6    # horizontal stripes, half light, half dark
CHECK_SIZE = 4       # squares of a checkerboard
DOT_PERIOD = 6       # a 2×2 dark dot per 6×6 cell
NOISE_BLOCK = 2      # i.i.d. dark/light blocks


@dataclass(frozen=True)
class Scene:
    """The attributes of one image.

    Attributes
    ----------
    colour, shape, background, texture : str
        Shape colour (:data:`COLOURS`), shape (:data:`SHAPES`), background colour (≠ ``colour``)
        and texture (:data:`TEXTURES`).
    centre : tuple of float
        (y, x) of the shape's centre, in pixels of a 32×32 image.
    radius : float
        Shape radius in pixels of a 32×32 image (a circle's radius; the other shapes have about
        the same area).
    phase : tuple of int
        (y, x) offset of the texture pattern in pixels.
    """

    colour: str
    shape: str
    background: str
    texture: str
    centre: tuple[float, float] = (16.0, 16.0)
    radius: float = 8.5
    phase: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        for name, value, allowed in (("colour", self.colour, COLOURS), ("background", self.background, COLOURS),
                                     ("shape", self.shape, SHAPES), ("texture", self.texture, TEXTURES)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {tuple(allowed)}")
        if self.colour == self.background:
            raise ValueError(f"the shape and the background must differ in colour (both {self.colour!r})")

    @property
    def caption(self) -> str:
        """``"a {colour} {shape} on {background} {texture}"``."""
        return f"a {self.colour} {self.shape} on {self.background} {self.texture}"


VOCABULARY = ("a", "on", *COLOURS, *SHAPES, *TEXTURES)
"""Every word a caption uses."""


def parse_caption(caption: str) -> Scene:
    """The :class:`Scene` attributes named by a caption (centre, radius and phase at defaults).

    Raises
    ------
    ValueError
        If the caption is not of the form ``"a {colour} {shape} on {background} {texture}"``.
    """
    words = caption.split()
    if len(words) != 6 or words[0] != "a" or words[3] != "on":
        raise ValueError(f"caption {caption!r} is not of the form 'a {{colour}} {{shape}} on {{colour}} {{texture}}', "
                         f"e.g. 'a red circle on blue stripes'")
    return Scene(words[1], words[2], words[4], words[5])


def random_scenes(n: int, generator: torch.Generator) -> list[Scene]:
    """``n`` scenes with uniformly drawn attributes, positions, sizes and texture phases."""
    if n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n}")
    names = list(COLOURS)
    scenes = []
    u = torch.rand(n, 4, generator=generator).tolist()
    picks = torch.randint(0, 1 << 30, (n, 6), generator=generator).tolist()
    for (ur, uy, ux, _), (c, b, s, t, py, px) in zip(u, picks):
        colour = names[c % len(names)]
        others = [name for name in names if name != colour]
        shape = SHAPES[s % len(SHAPES)]
        centre, radius = _placement(shape, ur, uy, ux)
        scenes.append(Scene(colour, shape, others[b % len(others)], TEXTURES[t % len(TEXTURES)],
                            centre, radius, (py % 12, px % 12)))
    return scenes


def _placement(shape: str, ur: float, uy: float, ux: float) -> tuple[tuple[float, float], float]:
    """(centre, radius) of a shape from three uniforms in [0, 1): the radius in :data:`RADIUS_RANGE`,
    the centre anywhere that keeps the whole shape :data:`MARGIN` inside a 32×32 image."""
    radius = RADIUS_RANGE[0] + ur * (RADIUS_RANGE[1] - RADIUS_RANGE[0])
    top, bottom, left, right = _bounds(shape, radius)
    centre = (MARGIN - top + uy * (32 - 2 * MARGIN - bottom + top), MARGIN - left + ux * (32 - 2 * MARGIN - right + left))
    return centre, radius


def scenes_for(caption: str | None, n: int, generator: torch.Generator) -> list[Scene]:
    """``n`` scenes of the training distribution given a caption: its colour, shape, background and
    texture, with position, size and texture phase drawn as in :func:`random_scenes`; all attributes
    drawn (the unconditional distribution) for ``None``.

    Raises
    ------
    ValueError
        If ``caption`` is not of the training captions' form (:func:`parse_caption`).
    """
    if caption is None:
        return random_scenes(n, generator)
    named = parse_caption(caption)
    if n < 1:
        raise ValueError(f"n must be a positive number of scenes, got {n}")
    u = torch.rand(n, 3, generator=generator).tolist()
    phases = torch.randint(0, 12, (n, 2), generator=generator).tolist()
    return [Scene(named.colour, named.shape, named.background, named.texture, *_placement(named.shape, *uu), tuple(ph))
            for uu, ph in zip(u, phases)]


class TrainingData(DataSource):
    """The shapes model's training distribution as a :class:`~chromaviz.models.base.DataSource`:
    images rendered for the prompt's caption (:func:`scenes_for`), in [−1, 1]."""

    description = "the shapes training distribution"
    exact = False

    def draw(self, prompt: str | None, n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """``n`` images (n, 3, H, W) for the caption ``prompt`` (None: any scene); H = W, a multiple of 32.

        Raises
        ------
        ValueError
            For a prompt that is not a training caption, or a size the renderer cannot draw.
        """
        h, w = size
        if h != w:
            raise ValueError(f"the shapes dataset renders square images; got {h}×{w}")
        cpu = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator).item()))
        return render(scenes_for(prompt, n, cpu), h, cpu) * 2 - 1


def _bounds(shape: str, radius: float) -> tuple[float, float, float, float]:
    """(top, bottom, left, right) of the shape relative to its centre, in pixels (top, left < 0)."""
    if shape == "circle":
        return -radius, radius, -radius, radius
    ys, xs = zip(*_polygon(shape, radius))
    return min(ys), max(ys), min(xs), max(xs)


def _polygon(shape: str, radius: float) -> list[tuple[float, float]]:
    """Vertices (dy, dx) of an upright polygon of about the area of a circle of ``radius``."""
    if shape == "square":
        h = radius * math.sqrt(math.pi) / 2
        return [(-h, -h), (-h, h), (h, h), (h, -h)]
    if shape == "triangle":  # equilateral, pointing up, centred on its centroid
        r = radius * math.sqrt(4 * math.pi / (3 * math.sqrt(3)))
        return [(-r * math.cos(2 * math.pi * k / 3), r * math.sin(2 * math.pi * k / 3)) for k in range(3)]
    if shape == "star":  # five points, inner radius 0.45 of the outer one
        outer = radius * 1.45
        verts = []
        for k in range(10):
            r = outer if k % 2 == 0 else 0.45 * outer
            a = math.pi * k / 5
            verts.append((-r * math.cos(a), r * math.sin(a)))
        return verts
    raise ValueError(f"no polygon for {shape!r}")


def _inside_polygon(py: torch.Tensor, px: torch.Tensor, verts: list[tuple[float, float]]) -> torch.Tensor:
    """Even-odd rule: whether points (any shape, offsets from the centre) lie inside ``verts``."""
    inside = torch.zeros_like(py, dtype=torch.bool)
    for (y0, x0), (y1, x1) in zip(verts, verts[1:] + verts[:1]):
        if y0 == y1:
            continue
        crosses = (y0 > py) != (y1 > py)
        x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (px < x_cross)
    return inside


def shape_mask(scene: Scene, size: int = 32, supersample: int = 4) -> torch.Tensor:
    """Coverage of the shape, (size, size) in [0, 1], antialiased by ``supersample``² points per pixel."""
    scale = size / 32
    n = size * supersample
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / supersample
    py, px = torch.meshgrid(coords - scene.centre[0] * scale, coords - scene.centre[1] * scale, indexing="ij")
    radius = scene.radius * scale
    if scene.shape == "circle":
        inside = py * py + px * px <= radius * radius
    else:
        inside = _inside_polygon(py, px, _polygon(scene.shape, radius))
    return inside.float().reshape(size, supersample, size, supersample).mean(dim=(1, 3))


def texture_mask(scene: Scene, size: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Where the background is dark, (size, size) of 0/1 floats; ``noise`` draws from ``generator``."""
    scale = max(1, size // 32)
    idx = torch.arange(size) // scale
    y, x = torch.meshgrid(idx + scene.phase[0], idx + scene.phase[1], indexing="ij")
    if scene.texture == "stripes":
        dark = (y % STRIPE_PERIOD) < STRIPE_PERIOD // 2
    elif scene.texture == "checks":
        dark = ((y // CHECK_SIZE) + (x // CHECK_SIZE)) % 2 == 0
    elif scene.texture == "dots":
        dark = ((y % DOT_PERIOD) < 2) & ((x % DOT_PERIOD) < 2)
    else:
        cells = -(-(size // scale + 12) // NOISE_BLOCK)
        draws = torch.rand(cells, cells, generator=generator) < 0.5
        dark = draws[y // NOISE_BLOCK, x // NOISE_BLOCK]
    return dark.float()


def render(scenes: list[Scene], size: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images of ``scenes``, (B, 3, size, size) float32 in [0, 1].

    ``size`` must be a multiple of 32 (the shapes and textures scale with it, in whole pixels).
    """
    if size < 32 or size % 32:
        raise ValueError(f"size must be a multiple of 32 pixels, got {size}")
    images = torch.empty(len(scenes), 3, size, size)
    for i, scene in enumerate(scenes):
        bg = torch.tensor(COLOURS[scene.background]).view(3, 1, 1)
        background = bg * (1 - (1 - DARK) * texture_mask(scene, size, generator))
        cover = shape_mask(scene, size)
        images[i] = background * (1 - cover) + torch.tensor(COLOURS[scene.colour]).view(3, 1, 1) * cover
    return images


def batches(batch_size: int, seed: int = 0, size: int = 32):
    """Infinite seeded stream of ``(images, captions)``: images (B, 3, size, size) in [−1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        scenes = random_scenes(batch_size, generator)
        yield render(scenes, size, generator) * 2 - 1, [s.caption for s in scenes]
