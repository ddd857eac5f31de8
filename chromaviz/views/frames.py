"""Per-step frames of a run: what a view shows at each recorded step, as plain data.

A :class:`Frame` holds one recorded step ready to be drawn: x_t, x̂0 and the band images of x̂0 as
8-bit RGB arrays, the caption, the step's position in each x coordinate of the chromatography plot
(step, timestep t, log-SNR λ), and the radially averaged power spectra of x̂0 and x_t/α at that step
(centred as in the report, :func:`chromaviz.spectral.centred_rapsd`). The explorer (live) and its
exported page draw the same frames; a view only renders them.

The measured signal fractions of a run are not per-frame: for a partial run they are relative to its
newest x̂0 and change as steps arrive. They come from :func:`chromaviz.analysis.compare` (or its
step-by-step form :class:`chromaviz.analysis.StepwiseComparison`), like everywhere else.

Nothing here imports a UI toolkit.
"""

from __future__ import annotations

import base64
import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image

from .. import spectral
from ..sampling.threads import usable_cores
from ..spectral import centred_rapsd

ToRGB = Callable[[torch.Tensor], torch.Tensor]
Item = TypeVar("Item")
Result = TypeVar("Result")

COORDINATES = ("step", "timestep", "log_snr")
"""The x coordinates of the chromatography plot (and of a frame's position)."""

IMAGE_FORMATS = {"webp": "image/webp", "png": "image/png", "jpeg": "image/jpeg"}


@dataclass(frozen=True, eq=False)
class Frame:
    """One recorded step of a run, ready to draw.

    Attributes
    ----------
    index : int
        Recorded step i (0 = noisiest).
    num_steps : int
        S, the model evaluations of the whole run.
    timestep, log_snr : float
        t and λ of the network input at this step (λ may be ±∞).
    prompt : str or None
        The prompt active at this step (None: unconditional).
    x_t, x0 : ndarray, shape (H, W, 3), uint8
        The network input and the prediction x̂0 through the model's ``to_rgb`` (x_t is None when
        the run did not record it).
    bands : ndarray, shape (2·h + 2, L·(w + 2) − 2, 3) or (h, L·(w + 2) − 2, 3), uint8
        The bands of x̂0 (:func:`band_grid`): box pyramid above (sizes it divides), FFT rings
        below, finest left.
    freqs : ndarray, shape (R,)
        Frequencies of the spectra, cycles per pixel of the sample grid (DC dropped).
    rapsd_x0, rapsd_xt : ndarray, shape (R,)
        Centred RAPSD of x̂0 and of x_t/α (white noise = 1; NaN at α = 0 or when x_t was not
        recorded).
    """

    index: int
    num_steps: int
    timestep: float
    log_snr: float
    prompt: str | None
    x_t: np.ndarray | None
    x0: np.ndarray
    bands: np.ndarray
    freqs: np.ndarray
    rapsd_x0: np.ndarray
    rapsd_xt: np.ndarray

    @property
    def caption(self) -> str:
        """``"step i/S · t = … · λ = … · prompt '…'"`` (1-based step, as the report counts)."""
        prompt = "unconditional" if self.prompt is None else repr(self.prompt)
        return (f"step {self.index + 1}/{self.num_steps} · t = {self.timestep:.1f} · "
                f"λ = {self.log_snr:+.2f} · prompt {prompt}")

    @property
    def noise_floor(self) -> float:
        """The power of the noise in x_t/α, e^(−λ) (white noise = 1); NaN where λ is not finite."""
        return math.exp(-self.log_snr) if math.isfinite(self.log_snr) else math.nan

    def position(self, coordinate: str) -> float:
        """Where this step sits on the x axis ``coordinate`` ("step", "timestep" or "log_snr");
        NaN for an infinite λ (such a point cannot be drawn). Steps count from 1, as the caption
        and the scrubber count them."""
        if coordinate not in COORDINATES:
            raise ValueError(f"coordinate must be one of {COORDINATES}, got {coordinate!r}")
        value = {"step": float(self.index + 1), "timestep": self.timestep, "log_snr": self.log_snr}[coordinate]
        return value if math.isfinite(value) else math.nan


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (clipped) → uint8; uint8 passes through."""
    if rgb.dtype == np.uint8:
        return rgb
    return (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)


def sample_rgb(x: torch.Tensor, to_rgb: ToRGB) -> np.ndarray:
    """One sample (C, H, W) → (H', W', 3) uint8 through the model's ``to_rgb``."""
    return to_uint8(to_rgb(x[None].float())[0].permute(1, 2, 0).cpu().numpy())


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
    """Rows of band images of one sample x̂0 (C, H, W), uint8: box pyramid on top, FFT rings
    below (:func:`chromaviz.spectral.decompose`), finest level on the left, each band stretched
    to its own range (mid-grey is zero). The pyramid needs H and W divisible by the coarsest
    level; for other sizes (30×30 with levels (1, 2, 4), say) the grid is the rings row alone."""
    x = x0[None].double()
    h, w = x0.shape[-2:]
    methods = ("pyramid", "rings") if h % levels[-1] == 0 and w % levels[-1] == 0 else ("rings",)
    rows = [tile([_stretch(b[0]) for b in spectral.decompose(x, levels, method)]) for method in methods]
    gap = np.ones((2, rows[0].shape[1], 3))
    return to_uint8(np.concatenate([row for r in rows for row in (r, gap)][:-1], axis=0))


def rapsd(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Centred RAPSD of a batch (B, C, H, W) with the DC bin dropped: (freqs, power), each (R − 1,).

    The quantity of the report's RAPSD figure (:func:`chromaviz.spectral.centred_rapsd`)."""
    return centred_rapsd(x, dc=False)


def frame_map(work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result]:
    """``[work(x) for x in items]``, on as many threads as there are usable cores when there are several
    items (a finished run's frames, an exported page), each calling torch with one intra-op thread.

    A frame's work is on single small images: torch's operations and the image encoders release the
    GIL, so whole frames run side by side where one frame's operations split over an OpenMP team
    would not (its idle threads spin-wait, 8–20× slower on a busy machine). One item (a live
    refresh, beside a sampler) is worked on the calling thread, as it calls."""
    workers = min(len(items), usable_cores())
    if workers < 2:
        return [work(x) for x in items]
    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return list(pool.map(work, items))


def build_frames(steps: Sequence, to_rgb: ToRGB, levels: Sequence[int], *, sample: int = 0) -> list[Frame]:
    """Frames of recorded steps.

    Parameters
    ----------
    steps : sequence of StepRecord
        Recorded steps with x̂0 (x_t optional), each of shape (B, C, H, W).
    to_rgb : callable
        The model's ``to_rgb``: (N, C, H, W) → (N, 3, H', W') in [0, 1].
    levels : sequence of int
        Block sizes m of the band images, finest first.
    sample : int
        Which batch element's images to show (the spectra use the whole batch).

    Returns
    -------
    list of Frame

    Raises
    ------
    ValueError
        If a step has no x̂0, or ``sample`` is not a batch index.
    """
    for rec in steps:
        if rec.x0 is None:
            raise ValueError(f"step {rec.index} has no recorded x0: frames need record=('x0', ...)")
        if not 0 <= sample < rec.x0.shape[0]:
            raise ValueError(f"sample must be a batch index in [0, {rec.x0.shape[0]}), got {sample!r}")

    def frame(rec) -> Frame:
        freqs, p_x0 = rapsd(rec.x0)
        if rec.x_t is not None and rec.alpha > 0:
            _, p_xt = rapsd(rec.x_t / rec.alpha)
        else:
            p_xt = np.full_like(p_x0, np.nan)
        return Frame(
            index=rec.index, num_steps=rec.num_steps, timestep=float(rec.timestep), log_snr=float(rec.log_snr),
            prompt=rec.prompt, x_t=None if rec.x_t is None else sample_rgb(rec.x_t[sample], to_rgb),
            x0=sample_rgb(rec.x0[sample], to_rgb), bands=band_grid(rec.x0[sample], levels),
            freqs=freqs, rapsd_x0=p_x0, rapsd_xt=p_xt,
        )

    return frame_map(frame, list(steps))


def encode_image(rgb: np.ndarray, format: str = "webp", quality: int = 80) -> str:
    """A data URI of an (H, W, 3) image for an ``<img>``: lossy WebP (default, ``quality`` 0–100),
    JPEG, or lossless PNG. Images are encoded at their own size; a view enlarges them."""
    if format not in IMAGE_FORMATS:
        raise ValueError(f"format must be one of {list(IMAGE_FORMATS)}, got {format!r}")
    buf = io.BytesIO()
    # WebP's method 2 encodes about twice as fast as its default 4, for files about 10% larger
    options = {"png": {"compress_level": 1}, "webp": {"quality": quality, "method": 2}, "jpeg": {"quality": quality}}
    Image.fromarray(to_uint8(rgb)).save(buf, format=format.upper(), **options[format])
    return f"data:{IMAGE_FORMATS[format]};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
