"""Read a shapes image back into words: the shape's colour and kind, the background's colour and texture.

An analytic checker, no learning: it knows the palette and the geometry of :mod:`chromaviz.models.shapes.dataset`
and nothing else, so it scores a trained model's samples and the dataset itself by the same rule.

1. Every pixel takes the nearest of the 12 palette tones (6 colours, each also in its dark shade).
2. The background colour is the colour with the most pixels, light and dark shades together; the
   shape's colour is the most frequent other light tone.
3. The shape is the largest connected region of its colour, holes filled. Its kind follows from two
   numbers of that region: *extent* (area / bounding-box area: square 1, circle π/4, triangle and
   star about ½) and *solidity* (area / convex-hull area: about 1, except a star's ≈ 0.6).
   The thresholds lie halfway between the classes' ranges on the dataset (tests/test_shapes.py).
4. The texture comes from the background pixels away from the shape, labelled dark or light: the
   fraction of dark pixels (dots ≈ 1/9), how often neighbours agree along rows versus columns
   (horizontal stripes agree along rows only), and whether pixels 4 apart disagree (checks of 4 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from skimage.measure import regionprops

from .dataset import COLOURS, DARK, SHAPES, TEXTURES, Scene

_NAMES = tuple(COLOURS)
_TONES = np.array([COLOURS[c] for c in _NAMES] + [tuple(DARK * v for v in COLOURS[c]) for c in _NAMES])


@dataclass(frozen=True)
class Reading:
    """What the checker read from one image (None where it could not tell).

    Attributes
    ----------
    colour, shape, background, texture : str or None
    features : dict
        The numbers the decisions came from (extent, solidity, dark fraction, agreements).
    """

    colour: str | None
    shape: str | None
    background: str | None
    texture: str | None
    features: dict

    def matches(self, scene: Scene) -> dict[str, bool]:
        """Per attribute, whether the reading agrees with ``scene``."""
        return {k: getattr(self, k) == getattr(scene, k) for k in ("colour", "shape", "background", "texture")}


def _labels(image: np.ndarray) -> np.ndarray:
    """Nearest palette tone per pixel: (H, W) ints, 0–5 light colours, 6–11 their dark shades."""
    dist = ((image.transpose(1, 2, 0)[:, :, None, :] - _TONES[None, None]) ** 2).sum(-1)
    return dist.argmin(-1)


def _shape_kind(mask: np.ndarray) -> tuple[str | None, dict]:
    region = max(regionprops(mask.astype(np.uint8)), key=lambda r: r.area, default=None)
    if region is None or region.area < 12:
        return None, {"area": 0 if region is None else int(region.area)}
    extent, solidity = float(region.extent), float(region.solidity)
    features = {"area": int(region.area), "extent": extent, "solidity": solidity}
    if solidity < 0.79:
        return "star", features
    if extent > 0.855:
        return "square", features
    if extent > 0.64:
        return "circle", features
    return "triangle", features


def _agreement(dark: np.ndarray, valid: np.ndarray, dy: int, dx: int) -> float:
    """Fraction of valid pixel pairs (y, x), (y + dy, x + dx) with the same dark/light label."""
    h, w = dark.shape
    a, b = dark[: h - dy, : w - dx], dark[dy:, dx:]
    both = valid[: h - dy, : w - dx] & valid[dy:, dx:]
    return float((a == b)[both].mean()) if both.any() else float("nan")


def _texture(dark: np.ndarray, valid: np.ndarray) -> tuple[str | None, dict]:
    if valid.sum() < 64:
        return None, {"background_pixels": int(valid.sum())}
    features = {
        "dark_fraction": float(dark[valid].mean()),
        "rows": _agreement(dark, valid, 0, 1),     # neighbours along a row
        "columns": _agreement(dark, valid, 1, 0),  # neighbours along a column
        "lag4": 0.5 * (_agreement(dark, valid, 0, 4) + _agreement(dark, valid, 4, 0)),
    }
    if features["dark_fraction"] < 0.28:
        return "dots", features
    if features["rows"] - features["columns"] > 0.18:
        return "stripes", features
    if features["lag4"] < 0.21:
        return "checks", features
    return "noise", features


def read(image: torch.Tensor | np.ndarray) -> Reading:
    """Read one image, (3, H, W) RGB in [0, 1] with H = W a multiple of 32 (pooled to 32×32 first)."""
    x = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != 3 or x.shape[1] != x.shape[2] or x.shape[1] % 32:
        raise ValueError(f"expected an RGB image (3, H, W) with H = W a multiple of 32, got shape {x.shape}")
    k = x.shape[1] // 32
    x = x.reshape(3, 32, k, 32, k).mean(axis=(2, 4))
    labels = _labels(x)
    n = len(_NAMES)
    counts = np.bincount(labels.ravel(), minlength=2 * n)
    background = int(np.argmax(counts[:n] + counts[n:]))
    others = [c for c in range(n) if c != background]
    colour = max(others, key=lambda c: counts[c])
    mask = labels == colour
    lab, count = ndimage.label(mask)
    if count:
        mask = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    mask = ndimage.binary_fill_holes(mask)
    shape, shape_features = _shape_kind(mask)
    on_background = np.isin(labels, (background, background + n)) & ~ndimage.binary_dilation(mask, iterations=1)
    texture, texture_features = _texture(labels == background + n, on_background)
    return Reading(_NAMES[colour] if counts[colour] else None, shape, _NAMES[background], texture,
                   {**shape_features, **texture_features})


def read_batch(images: torch.Tensor) -> list[Reading]:
    """:func:`read` for each of (B, 3, H, W) RGB images in [0, 1]."""
    if images.ndim != 4:
        raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(images.shape)}")
    return [read(im) for im in images]


def accuracy(readings: list[Reading], scenes: list[Scene]) -> dict[str, float]:
    """Fraction of images whose colour, shape, background and texture were read right, and all four."""
    if len(readings) != len(scenes) or not scenes:
        raise ValueError(f"need as many readings as scenes (got {len(readings)} and {len(scenes)}), at least one")
    rows = [r.matches(s) for r, s in zip(readings, scenes)]
    out = {k: float(np.mean([row[k] for row in rows])) for k in ("colour", "shape", "background", "texture")}
    out["all"] = float(np.mean([all(row.values()) for row in rows]))
    return out


__all__ = ["Reading", "read", "read_batch", "accuracy", "SHAPES", "TEXTURES"]
