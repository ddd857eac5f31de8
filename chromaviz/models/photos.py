"""The photographs bundled with scikit-image, as a prompt vocabulary (all load offline)."""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

PHOTOS: dict[str, str] = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "camera": "camera",
    "coins": "coins",
    "moon": "moon",
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "horse": "horse",
    "page": "page",
    "text": "text",
    "hubble": "hubble_deep_field",
    "retina": "retina",
    "cells": "immunohistochemistry",
}
"""Prompt word → scikit-image loader in :mod:`skimage.data`."""

ALIASES: dict[str, str] = {
    "chelsea": "cat",
    "cameraman": "camera",
    "coin": "coins",
    "bricks": "brick",
    "galaxies": "hubble",
    "immunohistochemistry": "cells",
}


def vocabulary() -> tuple[str, ...]:
    """The prompt words, in a stable order."""
    return tuple(PHOTOS)


def match_prompt(prompt: str) -> str:
    """The single vocabulary word named in ``prompt`` ("a photo of a cat" → "cat").

    Raises
    ------
    ValueError
        If the prompt names none, or more than one, of the photographs; the message lists the
        vocabulary.
    """
    words = re.findall(r"[a-z_]+", prompt.lower())
    found = []
    for w in words:
        w = ALIASES.get(w, w)
        if w in PHOTOS and w not in found:
            found.append(w)
    if len(found) == 1:
        return found[0]
    what = "names none" if not found else f"names several ({', '.join(found)})"
    raise ValueError(
        f"prompt {prompt!r} {what} of the built-in photographs; use exactly one of: {', '.join(PHOTOS)}"
    )


@lru_cache(maxsize=None)
def _raw(word: str) -> np.ndarray:
    import skimage.data
    from skimage.util import img_as_float

    img = img_as_float(getattr(skimage.data, PHOTOS[word])())
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def load_photo(word: str, height: int, width: int) -> np.ndarray:
    """The photograph ``word``, centre-cropped to the aspect H:W and resized, in [−1, 1].

    Returns
    -------
    ndarray, float32, shape (3, height, width)
    """
    from skimage.transform import resize

    img = _raw(word)
    h, w = img.shape[:2]
    scale = min(h / height, w / width)
    ch, cw = int(round(height * scale)), int(round(width * scale))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = img[top : top + ch, left : left + cw]
    out = resize(crop, (height, width), anti_aliasing=True, preserve_range=True)
    return (out.transpose(2, 0, 1) * 2 - 1).astype(np.float32)
