"""Tests for chromaviz.spectral: bands, masks, radial spectra, power-law fits, signal fractions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chromaviz import spectral
from chromaviz.spectral import (
    band_energies,
    box_pyramid,
    decompose,
    fit_power_law,
    levels_for,
    measured_chromatogram,
    octave_ring_masks,
    pool,
    rapsd,
    ring_bands,
    signal_fractions,
    upsample,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _radial_freq_np(h: int, w: int) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2)


# ------------------------------------------------------------------------------------------
# levels
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("h", "w", "depth", "expected"),
    [
        (64, 64, None, (1, 2, 4, 8, 16)),
        (64, 128, None, (1, 2, 4, 8, 16)),
        (60, 60, None, (1, 2, 4, 8)),
        (512, 512, 3, (1, 2, 4)),
        (512, 512, None, (1, 2, 4, 8, 16, 32, 64, 128)),
        (8, 8, None, (1, 2)),
        (5, 5, None, (1,)),
    ],
)
def test_levels_for(h, w, depth, expected):
    assert levels_for(h, w, depth) == expected


@pytest.mark.parametrize("bad", [(1, 2, 3), (2, 4), (1, 4), (), [1, 2, 4, 4], (1.0, 2.0), "124", (True,)])
def test_invalid_levels_raise(bad):
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="powers of two starting at 1"):
        box_pyramid(x, bad)
    with pytest.raises(ValueError, match="powers of two starting at 1"):
        ring_bands(x, bad)
    with pytest.raises(ValueError, match="powers of two starting at 1"):
        octave_ring_masks(16, 16, bad)


def test_levels_accept_lists_and_numpy_ints():
    x = torch.randn(1, 1, 16, 16, generator=_gen(0))
    a = box_pyramid(x, [1, 2, 4])
    b = box_pyramid(x, tuple(np.array([1, 2, 4])))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# pool / upsample
# ------------------------------------------------------------------------------------------


def test_pool_upsample_shapes_and_values():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    p = pool(x, 4)
    assert p.shape == (2, 3, 2, 3)
    assert p[0, 0, 0, 0].item() == pytest.approx(x[0, 0, :4, :4].mean().item())
    assert p[1, 2, 1, 2].item() == pytest.approx(x[1, 2, 4:, 8:].mean().item())
    u = upsample(p, 4)
    assert u.shape == (2, 3, 8, 12)
    assert torch.equal(u[0, 0, :4, :4], p[0, 0, 0, 0].expand(4, 4))
    assert torch.equal(pool(u, 4), p)
    assert pool(x, 1).shape == x.shape


def test_pool_divides_white_noise_variance_by_m_squared():
    x = torch.randn(8, 3, 64, 64, generator=_gen(1), dtype=torch.float64)
    for m in (2, 4, 8):
        var = pool(x, m).var().item()
        assert var * m**2 == pytest.approx(1.0, rel=0.1)


def test_pool_divisibility_error():
    x = torch.zeros(1, 3, 60, 64)
    with pytest.raises(ValueError, match="height 60 is not divisible by the pooling factor 8"):
        pool(x, 8)
    with pytest.raises(ValueError, match="width 64 is not divisible by the pooling factor 3"):
        pool(torch.zeros(1, 3, 63, 64), 3)


def test_bad_image_inputs():
    with pytest.raises(ValueError, match=r"4 dimensions \(B, C, H, W\)"):
        pool(torch.zeros(3, 8, 8), 2)
    with pytest.raises(ValueError, match="floating-point"):
        pool(torch.zeros(1, 1, 8, 8, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="positive integer"):
        pool(torch.zeros(1, 1, 8, 8), 0)


# ------------------------------------------------------------------------------------------
# pyramid
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rings", "pyramid"])
@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (3, 4, 32, 48)])
def test_bands_sum_to_x(method, shape):
    x = torch.randn(*shape, generator=_gen(2))
    levels = levels_for(shape[2], shape[3])
    bands = decompose(x, levels, method)
    assert bands.shape == (len(levels), *shape)
    assert bands.dtype == x.dtype
    torch.testing.assert_close(bands.sum(0), x, atol=1e-5, rtol=0)
    # every band carries something for white noise
    assert (bands.square().sum(dim=(1, 2, 3, 4)) > 0).all()


def test_ring_bands_odd_size_sum_to_x():
    x = torch.randn(2, 1, 33, 27, generator=_gen(3), dtype=torch.float64)
    bands = ring_bands(x, levels_for(33, 27))
    torch.testing.assert_close(bands.sum(0), x, atol=1e-12, rtol=0)


def test_pyramid_constant_image_all_in_coarsest():
    x = torch.full((2, 3, 32, 32), 0.7)
    bands = box_pyramid(x, (1, 2, 4, 8))
    assert torch.count_nonzero(bands[:-1]) == 0
    torch.testing.assert_close(bands[-1], x)


def test_pyramid_matches_definition():
    x = torch.randn(2, 2, 16, 16, generator=_gen(4), dtype=torch.float64)
    levels = (1, 2, 4)
    bands = box_pyramid(x, levels)

    def approx(m):
        return upsample(pool(x, m), m)

    torch.testing.assert_close(bands[0], x - approx(2))
    torch.testing.assert_close(bands[1], approx(2) - approx(4))
    torch.testing.assert_close(bands[2], approx(4))


def test_pyramid_checkerboard_is_finest():
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    x = ((-1.0) ** (yy + xx)).reshape(1, 1, 16, 16)
    bands = box_pyramid(x, (1, 2, 4))
    torch.testing.assert_close(bands[0], x)
    assert bands[1:].abs().max().item() == 0.0


def test_pyramid_divisibility_error_mentions_deepest_level():
    x = torch.zeros(1, 3, 60, 64)
    with pytest.raises(ValueError, match="height 60 is not divisible by 8, the deepest pyramid level"):
        box_pyramid(x, (1, 2, 4, 8))
    # rings have no such constraint
    assert ring_bands(x, (1, 2, 4, 8)).shape == (4, 1, 3, 60, 64)


# ------------------------------------------------------------------------------------------
# rings
# ------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(min_value=1, max_value=40),
    w=st.integers(min_value=1, max_value=40),
    n_levels=st.integers(min_value=1, max_value=6),
)
def test_masks_partition_grid(h, w, n_levels):
    levels = tuple(2**i for i in range(n_levels))
    masks = octave_ring_masks(h, w, levels)
    assert masks.shape == (n_levels, h, w)
    assert masks.dtype == torch.bool
    assert torch.equal(masks.sum(0), torch.ones(h, w, dtype=torch.int64))
    # DC belongs to the coarsest level
    assert masks[-1, 0, 0]


def test_masks_match_ring_definition():
    h, w = 64, 48
    levels = (1, 2, 4, 8)
    masks = octave_ring_masks(h, w, levels).numpy()
    f = _radial_freq_np(h, w)
    level_of = np.argmax(masks, axis=0)
    expected = np.empty((h, w), dtype=int)
    for i, m in enumerate(levels):
        lo = 0.0 if i == len(levels) - 1 else 0.5 / (2 * m)
        hi = np.inf if i == 0 else 0.5 / m
        sel = (f >= lo) & (f < hi)
        expected[sel] = i
    np.testing.assert_array_equal(level_of, expected)
    # corners beyond Nyquist radius (f >= 0.5) are in the finest ring
    assert masks[0, h // 2, w // 2]
    assert f[h // 2, w // 2] > 0.5
    # a cell at f = 0.2 is in level 2's ring [0.125, 0.25)
    iy = int(round(0.2 * h))
    assert masks[1, iy, 0] and not masks[0, iy, 0]


def test_ring_bands_cosine_lands_in_its_ring():
    n = 64
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    # frequency 6/64 ≈ 0.094 cycles/pixel: in [0.0625, 0.125) → level 4
    x = torch.cos(2 * math.pi * 6 * xx.double() / n).reshape(1, 1, n, n)
    bands = ring_bands(x, (1, 2, 4, 8))
    energies = bands.square().sum(dim=(1, 2, 3, 4))
    assert energies[2].item() == pytest.approx(x.square().sum().item())
    assert energies[[0, 1, 3]].max().item() < 1e-20
    torch.testing.assert_close(bands[2], x)


def test_invalid_method_raises():
    x = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r"'rings'.*'pyramid'"):
        decompose(x, (1, 2), "wavelet")
    with pytest.raises(ValueError, match=r"'rings'.*'pyramid'"):
        signal_fractions(torch.zeros(2, 2, 1, 16, 16), torch.zeros(2, 1, 16, 16), (1, 2), method="fft")


# ------------------------------------------------------------------------------------------
# rapsd and power laws
# ------------------------------------------------------------------------------------------


def test_rapsd_white_noise_is_one():
    b, c, n = 16, 3, 64
    x = torch.randn(b, c, n, n, generator=_gen(5))
    freqs, power = rapsd(x)
    assert freqs.shape == power.shape == (n // 2 + 1,)
    np.testing.assert_allclose(freqs.numpy(), np.arange(n // 2 + 1) / n)
    # The standard error of a bin's mean is ≈ 1/sqrt(independent cells): a real image's
    # spectrum is Hermitian, so only half of the bin's b·c·count cells are independent.
    r = np.round(_radial_freq_np(n, n) * n).astype(int)
    counts = np.bincount(r.ravel())[: n // 2 + 1]
    se = 1 / np.sqrt(counts * b * c / 2)
    dev = np.abs(power.numpy() - 1)
    assert np.all(dev[1:] < 4 * se[1:]), (dev / se)[1:].max()
    assert np.all(dev[4:] < 0.06)
    # the cell-weighted mean over all non-DC bins is 1 to within 1%
    overall = float((power.numpy()[1:] * counts[1:]).sum() / counts[1:].sum())
    assert overall == pytest.approx(1.0, abs=0.01)


def test_rapsd_white_noise_scales_with_variance_per_channel():
    x = torch.randn(16, 3, 32, 32, generator=_gen(6), dtype=torch.float64)
    x = x * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)[None, :, None, None]
    freqs, power = rapsd(x, per_channel=True)
    assert power.shape == (3, 17)
    mean = power[:, 1:].mean(dim=1)
    torch.testing.assert_close(mean, torch.tensor([1.0, 4.0, 0.25], dtype=torch.float64), rtol=0.05, atol=0)
    _, avg = rapsd(x)
    torch.testing.assert_close(avg, power.mean(0))


def test_rapsd_cosine_exact():
    n, k, amp = 64, 5, 3.0
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    x = (amp * torch.cos(2 * math.pi * k * yy.double() / n)).reshape(1, 1, n, n)
    _, power = rapsd(x)
    r = np.round(_radial_freq_np(n, n) * n).astype(int)
    count_k = int((r == k).sum())
    # ortho FFT: two cells of amplitude amp * n / 2
    expected = 2 * (amp * n / 2) ** 2 / count_k
    assert power[k].item() == pytest.approx(expected)
    others = torch.cat([power[:k], power[k + 1 :]])
    assert others.max().item() < 1e-18


def test_rapsd_dc_bin_is_mean_squared_times_pixels():
    x = torch.full((2, 1, 16, 8), 2.0, dtype=torch.float64)
    freqs, power = rapsd(x)
    assert freqs.shape == (9,)
    assert power[0].item() == pytest.approx(4.0 * 16 * 8)
    assert power[1:].abs().max().item() < 1e-20


def _power_law_field(n: int, alpha: float, amp: float, batch: int, seed: int) -> torch.Tensor:
    f = torch.sqrt(torch.fft.fftfreq(n, dtype=torch.float64)[:, None] ** 2 + torch.fft.fftfreq(n, dtype=torch.float64)[None, :] ** 2)
    filt = torch.where(f > 0, torch.sqrt(amp * f.clamp_min(1e-12) ** (-alpha)), torch.zeros((), dtype=torch.float64))
    white = torch.randn(batch, 1, n, n, generator=_gen(seed), dtype=torch.float64)
    return torch.fft.ifft2(torch.fft.fft2(white) * filt).real


@pytest.mark.parametrize("alpha", [1.0, 2.0, 3.0])
def test_fit_power_law_recovers_alpha(alpha):
    amp = 2e-3
    x = _power_law_field(128, alpha, amp, batch=8, seed=7)
    freqs, power = rapsd(x)
    a_fit, alpha_fit = fit_power_law(freqs, power)
    assert isinstance(a_fit, float) and isinstance(alpha_fit, float)
    assert alpha_fit == pytest.approx(alpha, abs=0.1)
    # with the lowest (most bin-averaging-biased) bins excluded, A is close too
    a_fit, alpha_fit = fit_power_law(freqs, power, fmin=4 / 128)
    assert alpha_fit == pytest.approx(alpha, abs=0.1)
    assert a_fit == pytest.approx(amp, rel=0.25)


def test_fit_power_law_exact_and_numpy_inputs():
    f = np.linspace(0, 0.5, 65)
    p = np.where(f > 0, 5.0 * np.maximum(f, 1e-9) ** -1.5, 123.0)
    a, alpha = fit_power_law(f, p)
    assert a == pytest.approx(5.0, rel=1e-9)
    assert alpha == pytest.approx(1.5, rel=1e-9)
    a2, alpha2 = fit_power_law(torch.from_numpy(f), torch.from_numpy(p), fmin=0.1, fmax=0.3, num=8)
    assert (a2, alpha2) == pytest.approx((5.0, 1.5), rel=1e-9)


def test_fit_power_law_errors():
    f = np.linspace(0, 0.5, 10)
    with pytest.raises(ValueError, match="at least 2 distinct positive frequencies"):
        fit_power_law(f, np.ones(10), fmin=0.45, fmax=0.46)
    with pytest.raises(ValueError, match="same length"):
        fit_power_law(f, np.ones(9))
    with pytest.raises(ValueError, match="one-dimensional"):
        fit_power_law(f, np.ones((2, 10)))


# ------------------------------------------------------------------------------------------
# band energies and signal fractions
# ------------------------------------------------------------------------------------------


def test_band_energies_references():
    bands = torch.randn(3, 4, 2, 8, 8, generator=_gen(8), dtype=torch.float64)
    e0 = band_energies(bands)
    torch.testing.assert_close(e0, (bands**2).sum(dim=(1, 2, 3, 4)))
    eb = band_energies(bands, "batch")
    centred = bands - bands.mean(dim=1, keepdim=True)
    torch.testing.assert_close(eb, (centred**2).sum(dim=(1, 2, 3, 4)))
    assert (eb < e0).all()
    ref = torch.randn(3, 1, 2, 1, 1, generator=_gen(9), dtype=torch.float64)
    torch.testing.assert_close(band_energies(bands, ref), ((bands - ref) ** 2).sum(dim=(1, 2, 3, 4)))
    with pytest.raises(ValueError, match="not broadcastable"):
        band_energies(bands, torch.zeros(5, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="reference=None"):
        band_energies(bands[:, :1], "batch")
    with pytest.raises(ValueError, match="unknown reference"):
        band_energies(bands, "mean")


@pytest.mark.parametrize("method", ["rings", "pyramid"])
@pytest.mark.parametrize("reference", [None, "batch"])
def test_signal_fractions_final_step_is_one_and_scaling(method, reference):
    final = torch.randn(4, 3, 32, 32, generator=_gen(10))
    scales = torch.tensor([0.0, 0.25, 0.5, 1.0])
    steps = scales[:, None, None, None, None] * final[None]
    levels = levels_for(32, 32)
    g = signal_fractions(steps, final, levels, method=method, reference=reference)
    assert g.shape == (4, len(levels))
    assert g.dtype == torch.float64
    torch.testing.assert_close(g[-1], torch.ones(len(levels), dtype=torch.float64), rtol=1e-10, atol=0)
    # x̂0 = s·x0 → energy ratio s² in every band
    expected = (scales.double() ** 2)[:, None].expand(-1, len(levels))
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)


def test_signal_fractions_latent_shapes_and_coarse_first():
    s, b, c, h, w = 5, 3, 4, 32, 32
    final = torch.randn(b, c, h, w, generator=_gen(11))
    levels = levels_for(h, w)
    bands = ring_bands(final, levels)
    # step i has revealed the coarsest i+1 levels
    steps = torch.stack([bands[len(levels) - 1 - i :].sum(0) for i in range(s)])
    g = signal_fractions(steps, final, levels, method="rings", reference=None)
    assert g.shape == (s, len(levels))
    expected = torch.zeros(s, len(levels), dtype=torch.float64)
    for i in range(s):
        expected[i, len(levels) - 1 - i :] = 1.0
    torch.testing.assert_close(g, expected, atol=1e-6, rtol=0)
    c_ = measured_chromatogram(g)
    assert c_.shape == (s, len(levels))
    # each level is generated exactly at one step
    torch.testing.assert_close(c_.sum(0), g[-1])
    torch.testing.assert_close(c_.max(0).values, torch.ones(len(levels), dtype=torch.float64), atol=1e-6, rtol=0)


def test_signal_fractions_chunking_matches(monkeypatch):
    final = torch.randn(2, 3, 16, 16, generator=_gen(12))
    noise = torch.randn(6, 2, 3, 16, 16, generator=_gen(13))
    steps = final[None] + noise * torch.linspace(1.0, 0.0, 6)[:, None, None, None, None]
    levels = (1, 2, 4)
    full = signal_fractions(steps, final, levels, method="pyramid")
    monkeypatch.setattr(spectral, "_MAX_CHUNK_ELEMENTS", 2 * 3 * 16 * 16 * 3 * 4)  # 4 steps per chunk
    chunked = signal_fractions(steps, final, levels, method="pyramid")
    monkeypatch.setattr(spectral, "_MAX_CHUNK_ELEMENTS", 1)  # one step per chunk
    single = signal_fractions(steps, final, levels, method="pyramid")
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=0)
    torch.testing.assert_close(single, full, rtol=1e-12, atol=0)
    torch.testing.assert_close(full[-1], torch.ones(3, dtype=torch.float64))
    assert (full[0] > 1).all()  # noisy prediction: more sample-to-sample energy than final


def test_signal_fractions_input_errors():
    final = torch.randn(1, 4, 16, 16)
    steps = final[None].repeat(3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="reference=None"):
        signal_fractions(steps, final, (1, 2))
    g = signal_fractions(steps, final, (1, 2), reference=None)
    torch.testing.assert_close(g, torch.ones(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="must match"):
        signal_fractions(steps, torch.randn(1, 4, 16, 8), (1, 2), reference=None)
    with pytest.raises(ValueError, match=r"\(S, B, C, H, W\)"):
        signal_fractions(final, final, (1, 2), reference=None)


def test_measured_chromatogram_values():
    g = torch.tensor([[0.1, 0.5], [0.4, 0.9], [1.0, 1.0]], dtype=torch.float64)
    c = measured_chromatogram(g)
    expected = torch.tensor([[0.1, 0.5], [0.3, 0.4], [0.6, 0.1]], dtype=torch.float64)
    torch.testing.assert_close(c, expected)
    with pytest.raises(ValueError, match=r"\(S, L\)"):
        measured_chromatogram(g[0])


def test_levels_coarser_than_the_image_are_refused_by_name():
    x = torch.zeros(1, 1, 32, 32)
    with pytest.raises(ValueError, match="level 64 is coarser than the 32×32 image"):
        box_pyramid(x, (1, 2, 4, 8, 16, 32, 64))
    with pytest.raises(ValueError, match="level 64 is coarser than the 32×32 image"):
        signal_fractions(x[None], x, (1, 2, 4, 8, 16, 32, 64))
    assert box_pyramid(x, (1, 2, 4, 8, 16, 32)).shape[0] == 6  # a block the size of the image is allowed


def test_centred_rapsd_is_the_one_in_analysis_and_unbiased():
    from chromaviz import analysis
    from chromaviz.spectral import centred_rapsd

    assert analysis.centred_rapsd is centred_rapsd
    noise = torch.randn(4, 2, 32, 32, generator=_gen(3))
    freqs, power = centred_rapsd(noise)
    expected_freqs, raw = rapsd(noise.double() - noise.double().mean(0))
    np.testing.assert_allclose(power, raw.numpy() * 4 / 3)
    np.testing.assert_array_equal(freqs, expected_freqs.numpy())


def test_pyramid_weights_are_the_band_energy_of_each_mode():
    """‖B_m e_k‖² for every Fourier basis image e_k of an 8×16 grid, against the Dirichlet-kernel weights."""
    h, w, levels = 8, 16, (1, 2, 4)
    k = torch.arange(h * w)
    basis = torch.fft.ifft2(torch.nn.functional.one_hot(k, h * w).reshape(h * w, 1, h, w).to(torch.complex128), norm="ortho")
    energy = (spectral.box_pyramid(basis.real, levels).square() + spectral.box_pyramid(basis.imag, levels).square())
    energy = energy.sum(dim=(2, 3, 4)).reshape(len(levels), h, w).numpy()
    np.testing.assert_allclose(spectral.band_weights(h, w, levels, "pyramid"), energy, atol=1e-12)
    np.testing.assert_array_equal(spectral.band_weights(h, w, levels, "rings"), spectral.octave_ring_masks(h, w, levels).numpy())
