"""Latent → RGB decoders for previews of a latent diffusion run.

Three ways, from exact and slow to approximate and almost free:

- :class:`VaeDecoder`: the pipeline's own VAE (what ``pipe(...)`` returns at the end).
- :class:`TinyVaeDecoder`: an ``AutoencoderTiny`` (TAESD) the user supplies; it takes UNet-space
  latents directly (its scaling factor is 1) and costs a few ms per image on a GPU.
- :class:`LinearPreview`: one 3×C matrix and a bias per pixel of the latent grid (any C: 4 for SD and
  SDXL, 16 for SD3 and Flux; packed 2×2 tokens are unpacked first, :func:`unpack_latents`). Its coefficients
  are *fitted here* by least squares on the pipeline's own VAE (:func:`fit_linear_preview`):
  decode a few latents, average-pool the RGB to the latent grid, solve. Published SD 1.x maps
  could not be checked offline, and a fit is right for whichever VAE the model has. The fit
  reports its RMS error and R² on held-out latents (``LinearPreview.fit_rmse``, ``fit_r2``).

Every decoder maps (B, C, h, w) latents to (B, 3, H, W) RGB in [0, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


VIDEO_VAES = ("AutoencoderKLQwenImage", "AutoencoderKLWan")
"""VAE classes that decode frames (B, C, T, h, w): an image is one frame (Qwen-Image's VAE)."""


class VaeDecoder:
    """The pipeline's VAE: latents (B, C, h, w) → RGB (B, 3, f·h, f·w) in [0, 1].

    Undoes the latent normalisation exactly as the diffusers pipelines do: z/scaling_factor (SD 1.x/2.x),
    z/scaling_factor + shift_factor (SD3, Flux), z·latents_std/scaling_factor + latents_mean where the VAE
    config has per-channel statistics (SDXL-style; Qwen-Image's, whose VAE has no scaling factor and
    decodes one frame of a video VAE, :data:`VIDEO_VAES`). A float16 VAE whose config asks for it
    (``force_upcast``) decodes in float32.
    """

    name = "vae"

    def __init__(self, vae) -> None:
        self.vae = vae

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.vae
        cfg = vae.config
        dtype = vae.dtype
        if dtype == torch.float16 and getattr(cfg, "force_upcast", False):
            dtype = torch.float32
        param = next(vae.parameters())
        z = latents.to(param.device, dtype)
        scaling = getattr(cfg, "scaling_factor", None) or 1.0
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = z.shape[1]
            mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, c, 1, 1)
            std = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, c, 1, 1)
            z = z * std / scaling + mean
        else:
            z = z / scaling
        shift = getattr(cfg, "shift_factor", None)  # SD3, Flux: latents = (z − shift)·scaling_factor
        if shift is not None and (mean is None or std is None):
            z = z + shift
        video = type(vae).__name__ in VIDEO_VAES
        if video:
            z = z[:, :, None]
        if dtype != vae.dtype:
            vae = vae.to(dtype)
            try:
                image = vae.decode(z, return_dict=False)[0]
            finally:
                vae.to(self.vae.dtype)
        else:
            image = vae.decode(z, return_dict=False)[0]
        if video:
            image = image[:, :, 0]
        return (image.float() / 2 + 0.5).clamp(0, 1)


class TinyVaeDecoder:
    """An ``AutoencoderTiny`` (TAESD): UNet-space latents (B, C, h, w) → RGB (B, 3, f·h, f·w) in [0, 1]."""

    name = "taesd"

    def __init__(self, tiny_vae) -> None:
        self.vae = tiny_vae

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        param = next(self.vae.parameters())
        z = latents.to(param.device, param.dtype) * getattr(self.vae.config, "scaling_factor", 1.0)
        image = self.vae.decode(z, return_dict=False)[0]  # diffusers maps TAESD's [0, 1] to [−1, 1]
        return (image.float() / 2 + 0.5).clamp(0, 1)


class LinearPreview:
    """rgb = W·z + b per latent pixel, at the latent resolution (optionally upsampled).

    Parameters
    ----------
    weight : Tensor, shape (3, C)
    bias : Tensor, shape (3,)
    upsample : int
        Nearest-neighbour upsampling of the result (1: keep the latent grid).
    fit_rmse, fit_r2 : float
        Error of the fit on held-out latents (RGB in [0, 1]); NaN when not fitted here.
    """

    name = "linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, *, upsample: int = 1,
                 fit_rmse: float = math.nan, fit_r2: float = math.nan) -> None:
        weight = torch.as_tensor(weight, dtype=torch.float32)
        bias = torch.as_tensor(bias, dtype=torch.float32)
        if weight.ndim != 2 or weight.shape[0] != 3 or bias.shape != (3,):
            raise ValueError(f"a linear preview needs weight (3, C) and bias (3,), got {tuple(weight.shape)} and {tuple(bias.shape)}")
        self.weight, self.bias, self.upsample = weight, bias, int(upsample)
        self.fit_rmse, self.fit_r2 = float(fit_rmse), float(fit_r2)

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Latents (B, C, h, w), or packed tokens (B, h·w/4, 4·C) with ``grid = (h, w)`` → RGB (B, 3, u·h, u·w)."""
        if latents.ndim == 3:
            if grid is None:
                raise ValueError("packed latents (B, L, D) need grid=(h, w), the latent grid they were packed from")
            latents = unpack_latents(latents, *grid)
        if latents.shape[1] != self.weight.shape[1]:
            raise ValueError(f"this linear preview maps {self.weight.shape[1]} latent channels, got {latents.shape[1]}")
        w = self.weight.to(latents.device)
        b = self.bias.to(latents.device)
        rgb = torch.einsum("oc,bchw->bohw", w, latents.float()) + b.view(1, 3, 1, 1)
        if self.upsample > 1:
            rgb = F.interpolate(rgb, scale_factor=self.upsample, mode="nearest")
        return rgb.clamp(0, 1)


def pack_latents(latents: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """Latents (B, C, h, w) → tokens (B, (h/p)·(w/p), p²·C) as Flux-style pipelines pack them (``_pack_latents``).

    Raises
    ------
    ValueError
        If h or w is not a multiple of ``patch``.

    Examples
    --------
    >>> z = torch.arange(2 * 16 * 4 * 6.0).view(2, 16, 4, 6)
    >>> tuple(pack_latents(z).shape), bool((unpack_latents(pack_latents(z), 4, 6) == z).all())
    ((2, 6, 64), True)
    """
    b, c, h, w = latents.shape
    if h % patch or w % patch:
        raise ValueError(f"a latent grid of {h}×{w} cannot be packed in {patch}×{patch} patches")
    x = latents.view(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // patch) * (w // patch), c * patch * patch)


def unpack_latents(tokens: torch.Tensor, h: int, w: int, patch: int = 2) -> torch.Tensor:
    """Packed tokens (B, (h/p)·(w/p), p²·C) → latents (B, C, h, w), the inverse of :func:`pack_latents`
    (diffusers' ``_unpack_latents`` of the Flux pipeline, given the latent grid instead of pixels).

    Raises
    ------
    ValueError
        If the token count does not fit the grid.
    """
    b, n, d = tokens.shape
    if h % patch or w % patch or n != (h // patch) * (w // patch) or d % (patch * patch):
        raise ValueError(f"{n} tokens of {d} values do not unpack to a {h}×{w} grid in {patch}×{patch} patches")
    c = d // (patch * patch)
    x = tokens.view(b, h // patch, w // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def _structured_latents(n: int, channels: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
    """(n, C, h, w) test latents: coarse blobs plus finer noise, roughly image-like, unit scale."""
    coarse = torch.randn(n, channels, max(1, h // 4), max(1, w // 4), generator=generator)
    coarse = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return coarse + 0.5 * torch.randn(n, channels, h, w, generator=generator)


@torch.no_grad()
def fit_linear_preview(decode: VaeDecoder, channels: int, factor: int, *, size: int = 16, num: int = 8,
                       seed: int = 0, upsample: int = 1) -> LinearPreview:
    """Least-squares latent → RGB map for the VAE behind ``decode``.

    Parameters
    ----------
    decode : callable
        Latents (B, C, h, w) → RGB (B, 3, factor·h, factor·w) in [0, 1], e.g. a :class:`VaeDecoder`.
    channels : int
        Latent channels C.
    factor : int
        Pixels per latent pixel (the VAE scale factor).
    size : int
        Side h = w of the fitting latents.
    num : int
        Latents to decode; half fit the map, half measure its error.
    seed : int
        Seeds the fitting latents.
    upsample : int
        Passed to :class:`LinearPreview`.

    Returns
    -------
    LinearPreview
        With ``fit_rmse`` and ``fit_r2`` measured on the held-out half.
    """
    g = torch.Generator().manual_seed(seed)
    z = _structured_latents(max(num, 2), channels, size, size, g)
    rgb = decode(z).float().cpu()
    rgb = F.avg_pool2d(rgb, factor) if factor > 1 else rgb
    half = z.shape[0] // 2

    def design(lat):
        x = lat.permute(0, 2, 3, 1).reshape(-1, channels)
        return torch.cat([x, torch.ones(len(x), 1)], 1).double()

    def target(img):
        return img.permute(0, 2, 3, 1).reshape(-1, 3).double()

    sol = torch.linalg.lstsq(design(z[:half]), target(rgb[:half])).solution  # (C + 1, 3)
    pred = (design(z[half:]) @ sol).clamp(0, 1)
    truth = target(rgb[half:])
    rmse = float(((pred - truth) ** 2).mean().sqrt())
    r2 = float(1 - ((pred - truth) ** 2).sum() / ((truth - truth.mean(0)) ** 2).sum().clamp_min(1e-12))
    return LinearPreview(sol[:channels].T.float(), sol[channels].float(), upsample=upsample, fit_rmse=rmse, fit_r2=r2)
