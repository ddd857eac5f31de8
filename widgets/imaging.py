"""Turning recorded tensors into small PNG images for the browser."""

from __future__ import annotations

import base64
import io
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from chromaviz import spectral

ToRGB = Callable[[torch.Tensor], torch.Tensor]


def png_bytes(rgb: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an (H, W, 3) image, floats in [0, 1] or uint8, enlarged ``scale``× (nearest)."""
    if rgb.dtype != np.uint8:
        rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,…`` URI for an <img> tag."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def sample_rgb(x: torch.Tensor, to_rgb: ToRGB) -> np.ndarray:
    """One sample (C, H, W) → (H', W', 3) floats in [0, 1] through the model's ``to_rgb``."""
    return to_rgb(x[None].float())[0].permute(1, 2, 0).cpu().numpy()


def _stretch(band: torch.Tensor) -> np.ndarray:
    """A zero-mean band (C, H, W) → (H, W, 3) in [0, 1], mid-grey at 0, its own range stretched."""
    band = band.float()
    band = band[:3] if band.shape[0] >= 3 else band.mean(0, keepdim=True).expand(3, -1, -1)
    scale = band.abs().max().clamp_min(1e-8)
    return (0.5 + 0.5 * band / scale).permute(1, 2, 0).cpu().numpy()


def tile(images: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Images (H, W, 3) of equal size side by side, white gaps between."""
    h, w = images[0].shape[:2]
    out = np.ones((h, len(images) * (w + gap) - gap, 3))
    for i, img in enumerate(images):
        out[:, i * (w + gap) : i * (w + gap) + w] = img
    return out


def band_grid(x0: torch.Tensor, levels: Sequence[int]) -> np.ndarray:
    """Two rows of band images of one sample x̂0 (C, H, W): box pyramid on top, FFT rings below.

    Each band is stretched to its own range (mid-grey is zero), finest level on the left.
    """
    x = x0[None].double()
    rows = [
        tile([_stretch(b[0]) for b in spectral.decompose(x, levels, method)])
        for method in ("pyramid", "rings")
    ]
    gap = np.ones((2, rows[0].shape[1], 3))
    return np.concatenate([rows[0], gap, rows[1]], axis=0)


def display_scale(height: int, target: int = 192) -> int:
    """Integer enlargement that brings a sample of ``height`` pixels near ``target`` pixels."""
    return max(1, target // max(height, 1))


def band_grid_width(grid: np.ndarray, height: int) -> int:
    """Display width in pixels of a :func:`band_grid` of samples ``height`` pixels tall (half
    the enlargement of the sample images: the grid holds several bands side by side)."""
    return grid.shape[1] * max(1, display_scale(height) // 2)
