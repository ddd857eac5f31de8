"""Noise schedules as log-SNR curves λ(t).

Every diffusion schedule, whatever its parametrisation, is reduced here to one function of the
model timestep t: the log signal-to-noise ratio λ(t) = log(α_t² / σ_t²) of the network's input
x_t = α_t·x0 + σ_t·ε. Everything in :mod:`chromaviz.theory` is a function of λ alone.

Conventions
-----------
- ``t`` is the timestep as diffusers passes it to the network: ``0`` is the least noisy,
  ``num_train_timesteps - 1`` (variance preserving) or ``num_train_timesteps`` (flow matching)
  the noisiest. Between the integer training timesteps of a discrete schedule the signal variance
  ᾱ(t) = α_t² / (α_t² + σ_t²) is interpolated linearly, which keeps λ monotone, keeps
  zero-terminal-SNR schedules finite in ᾱ, and makes the inverse t(λ) exact.
- Variance preserving (DDPM, Stable Diffusion): α_t = √ᾱ_t, σ_t = √(1 − ᾱ_t).
- Flow matching (SD3, Flux): with s = t / T, α = 1 − s and σ = s. A flow-matching *shift*
  reparametrises which timesteps a sampler visits, not the noise a timestep means, so it lives in
  :attr:`Schedule.scheduler_config` and shows up in a run's step plan
  (:func:`chromaviz.noise.plan.plan_steps`) and step coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .levels import sigmoid

PRESETS: dict[str, dict[str, Any]] = {
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
}
"""Named presets: DDPM's linear, Stable Diffusion's scaled_linear, and the cosine schedule."""


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (s = 0.008), as diffusers' ``squaredcos_cap_v2``."""
    def alpha_bar(u: float) -> float:
        return np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2

    return np.array(
        [
            min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
            for i in range(num_train_timesteps)
        ],
        dtype=np.float64,
    )


def preset_betas(name: str, num_train_timesteps: int = 1000) -> np.ndarray:
    """β_t of a named preset, in float64, shape ``(num_train_timesteps,)``.

    Examples
    --------
    >>> preset_betas('linear', 1000)[[0, -1]].tolist()
    [0.0001, 0.02]
    """
    if name not in PRESETS:
        raise ValueError(f"unknown schedule preset {name!r}; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]
    if name == "linear":
        return np.linspace(cfg["beta_start"], cfg["beta_end"], num_train_timesteps, dtype=np.float64)
    if name == "scaled_linear":
        return np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, num_train_timesteps, dtype=np.float64) ** 2
    return _cosine_betas(num_train_timesteps)


def rescale_zero_terminal_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Lin et al. (2023), Algorithm 1: shift √ᾱ so the last value is 0, keep the first one.

    Parameters
    ----------
    alphas_cumprod : ndarray, shape (T,)
        ᾱ_t, decreasing.

    Returns
    -------
    ndarray, shape (T,)
        The rescaled ᾱ_t, whose last value is exactly 0 (λ = −∞).

    Examples
    --------
    >>> ab = rescale_zero_terminal_snr(np.array([0.99, 0.5, 0.1]))
    >>> ab.round(4).tolist()
    [0.99, 0.3283, 0.0]
    """
    sqrt_ab = np.sqrt(np.asarray(alphas_cumprod, dtype=np.float64))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return sqrt_ab**2


def _log_snr_from_signal_variance(abar: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(abar) - np.log1p(-abar)


_NOT_CONFIG_KEYS = frozenset({"betas", "alphas", "alphas_cumprod", "alpha_bar"})
"""Names people give a noise schedule that no diffusers scheduler config reads (it reads ``trained_betas``)."""


@dataclass(frozen=True, eq=False)
class Schedule:
    """A noise schedule: λ(t) on the model's timestep axis, plus how diffusers samples it.

    Flow-matching schedules evaluate their closed form λ(t) = 2·ln((T − t)/t) exactly; the grid
    only records the range.

    Parameters
    ----------
    timesteps : ndarray, shape (K,)
        Increasing grid of model timesteps on which the signal variance is known.
    signal_variance : ndarray, shape (K,)
        ᾱ(t) = α_t²/(α_t² + σ_t²) = sigmoid(λ(t)) on that grid, non-increasing, in [0, 1].
    kind : {"vp", "flow"}
        Variance preserving (DDPM family) or rectified flow matching.
    scheduler_config : dict
        The diffusers scheduler configuration that realises this schedule. Schedules made here
        set ``clip_sample=False``: they describe noise, and clipping x̂0 to [−1, 1] (the default of
        diffusers' DDIM and DDPM) would distort data that is not bounded.
    name : str
        A short label for plots and tables.

    Examples
    --------
    >>> sd = Schedule.preset("scaled_linear")
    >>> round(float(sd.log_snr(999)), 3), round(float(sd.t_of_log_snr(0.0)), 1)
    (-5.364, 353.9)
    >>> [round(lam, 3) for lam in sd.log_snr_range]
    [-5.364, 7.069]
    >>> round(float(sd.shifted(2.0).log_snr(500) - sd.log_snr(500)), 4)  # −2·ln 2
    -1.3863
    >>> z = sd.zero_terminal_snr()
    >>> float(z.log_snr(999)), z.scheduler_config["timestep_spacing"]
    (-inf, 'trailing')
    >>> float(Schedule.flow_matching(3.0).log_snr(500)), Schedule.coerce("linear").name
    (0.0, 'linear')
    """

    timesteps: np.ndarray
    signal_variance: np.ndarray
    kind: str = "vp"
    scheduler_config: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        t = np.asarray(self.timesteps, dtype=np.float64)
        a = np.asarray(self.signal_variance, dtype=np.float64)
        if t.ndim != 1 or t.shape != a.shape or len(t) < 2:
            raise ValueError("timesteps and signal_variance must be 1-D arrays of the same length ≥ 2")
        if np.any(np.diff(t) <= 0):
            raise ValueError("timesteps must be strictly increasing")
        if np.any(a < 0) or np.any(a > 1) or np.any(np.diff(a) > 0):
            raise ValueError("signal variance ᾱ(t) must lie in [0, 1] and not increase with t")
        if self.kind not in ("vp", "flow"):
            raise ValueError(f"kind must be 'vp' or 'flow', got {self.kind!r}")
        object.__setattr__(self, "timesteps", t)
        object.__setattr__(self, "signal_variance", a)
        object.__setattr__(self, "scheduler_config", dict(self.scheduler_config))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod, *, name: str = "custom", config: Mapping | None = None) -> Schedule:
        """A variance-preserving schedule from ᾱ_t, t = 0 … T−1."""
        ab = np.asarray(alphas_cumprod, dtype=np.float64)
        if ab.ndim != 1 or len(ab) < 2:
            raise ValueError("alphas_cumprod must be a 1-D array with at least 2 entries")
        if not np.all((ab >= 0) & (ab <= 1)):  # NaN fails too
            raise ValueError("alphas_cumprod must hold numbers in [0, 1] (no NaN)")
        if config is None:
            ab_np = ab.copy()
            betas = 1 - ab_np / np.concatenate([[1.0], ab_np[:-1]])
            config = {"num_train_timesteps": len(ab), "trained_betas": betas.tolist(), "clip_sample": False}
        return cls(np.arange(len(ab), dtype=np.float64), ab, "vp", config, name)

    @classmethod
    def from_betas(cls, betas, *, name: str = "custom") -> Schedule:
        """A variance-preserving schedule from β_t, t = 0 … T−1 (ᾱ_t = Π(1 − β))."""
        b = np.asarray(betas, dtype=np.float64)
        if b.ndim != 1 or not np.all((b > 0) & (b < 1)):  # NaN fails too
            raise ValueError("betas must be a 1-D array with every value in (0, 1) (no NaN)")
        config = {"num_train_timesteps": len(b), "trained_betas": b.tolist(), "clip_sample": False}
        return cls.from_alphas_cumprod(np.cumprod(1 - b), name=name, config=config)

    @classmethod
    def preset(cls, name: str, num_train_timesteps: int = 1000) -> Schedule:
        """``"linear"``, ``"scaled_linear"`` (Stable Diffusion) or ``"squaredcos_cap_v2"`` (cosine).

        Computed here in float64; tests check it against diffusers' own ``alphas_cumprod``.
        """
        betas = preset_betas(name, num_train_timesteps)
        config = {"num_train_timesteps": num_train_timesteps, **PRESETS[name], "clip_sample": False}
        return cls.from_alphas_cumprod(np.cumprod(1 - betas), name=name, config=config)

    @classmethod
    def flow_matching(cls, shift: float = 1.0, num_train_timesteps: int = 1000) -> Schedule:
        """Rectified flow (α = 1 − t/T, σ = t/T) sampled with diffusers' ``FlowMatchEulerDiscreteScheduler``.

        ``shift`` (SD3 uses 3.0) moves the visited timesteps towards the noisy end:
        σ' = shift·σ / (1 + (shift − 1)·σ), i.e. λ' = λ − 2·ln(shift) at each step.
        """
        if not shift > 0:
            raise ValueError(f"flow-matching shift must be positive, got {shift}")
        t = np.linspace(0.0, num_train_timesteps, num_train_timesteps + 1)
        s = t / num_train_timesteps
        abar = (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
        config = {"num_train_timesteps": num_train_timesteps, "shift": float(shift)}
        return cls(t, abar, "flow", config, f"flow_matching(shift={shift:g})")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Schedule:
        """From a diffusers scheduler config (a dict or ``scheduler.config``).

        Variance-preserving configs are realised by diffusers' own β code (through
        ``DDPMScheduler``), flow-matching configs (those of ``FlowMatch*`` schedulers, or with
        ``use_flow_sigmas``) by :meth:`flow_matching`.
        """
        cfg = dict(config)
        misnamed = sorted(set(cfg) & _NOT_CONFIG_KEYS)
        if misnamed:
            raise ValueError(f"a scheduler config has no {misnamed}: give β as 'trained_betas' (or use "
                             "Schedule.from_betas / Schedule.from_alphas_cumprod)")
        if cfg.get("trained_betas") is not None:
            cls.from_betas(cfg["trained_betas"])  # the same checks: finite, in (0, 1)
        if _is_flow_config(cfg):  # keep every option (dynamic shifting, shift_terminal, ...): the scheduler uses them
            flow = cls.flow_matching(cfg.get("shift", 1.0), cfg.get("num_train_timesteps", 1000))
            return cls(flow.timesteps, flow.signal_variance, "flow", {**cfg, **flow.scheduler_config}, flow.name)
        from diffusers import DDPMScheduler

        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")
        ddpm = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg and cfg[k] is not None})
        name = "zero_snr_" if cfg.get("rescale_betas_zero_snr") else ""
        name += cfg.get("beta_schedule", "custom") if cfg.get("trained_betas") is None else "custom"
        return cls.from_alphas_cumprod(ddpm.alphas_cumprod.double().numpy(), name=name, config=cfg)

    @classmethod
    def from_scheduler(cls, scheduler) -> Schedule:
        """From a diffusers scheduler instance (DDPM, DDIM, PNDM, Euler, DPM-Solver, FlowMatch, …)."""
        cfg = dict(scheduler.config)
        cfg["_class_name"] = type(scheduler).__name__
        return cls.from_config(cfg)

    @classmethod
    def coerce(cls, obj) -> Schedule:
        """A :class:`Schedule` from a Schedule, a preset name, a diffusers scheduler or a config dict."""
        if isinstance(obj, Schedule):
            return obj
        if isinstance(obj, str):
            return cls.preset(obj)
        if isinstance(obj, Mapping):
            return cls.from_config(obj)
        if hasattr(obj, "config") and hasattr(obj, "set_timesteps"):
            return cls.from_scheduler(obj)
        raise TypeError(
            f"cannot make a Schedule from {type(obj).__name__}; pass a Schedule, a preset name "
            f"{sorted(PRESETS)}, a diffusers scheduler or its config"
        )

    # ------------------------------------------------------------------ transforms
    def zero_terminal_snr(self) -> Schedule:
        """This variance-preserving schedule rescaled to zero terminal SNR (Lin et al. 2023).

        Samplers should then visit the last timestep: the config asks for ``"trailing"`` spacing.
        """
        if self.kind != "vp":
            raise ValueError("zero-terminal-SNR rescaling applies to variance-preserving schedules; flow matching already ends at SNR 0")
        abar = rescale_zero_terminal_snr(self.signal_variance)
        cfg = {k: v for k, v in self.scheduler_config.items() if k != "_class_name"}
        cfg.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
        return Schedule(self.timesteps, abar, "vp", cfg, f"zero_snr_{self.name}")

    def shifted(self, shift: float) -> Schedule:
        """The SD3 / simple-diffusion resolution shift: λ'(t) = λ(t) − 2·ln(shift).

        For a variance-preserving schedule this is a new ᾱ(t); for flow matching it sets the
        sampler's shift (composing with any shift already there).
        """
        if not shift > 0:
            raise ValueError(f"shift must be positive, got {shift}")
        if self.kind == "flow":
            return Schedule.flow_matching(
                self.scheduler_config.get("shift", 1.0) * shift, self.scheduler_config.get("num_train_timesteps", 1000)
            )
        lam = self.log_snr(self.timesteps) - 2 * np.log(shift)
        return Schedule.from_alphas_cumprod(sigmoid(lam), name=f"{self.name}_shift{shift:g}")

    # ------------------------------------------------------------------ evaluation
    @property
    def t_min(self) -> float:
        """Least noisy timestep of the schedule."""
        return float(self.timesteps[0])

    @property
    def t_max(self) -> float:
        """Noisiest timestep of the schedule."""
        return float(self.timesteps[-1])

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config.get("num_train_timesteps", round(self.t_max) + (self.kind == "vp")))

    def _check_t(self, t: np.ndarray) -> None:
        if np.any(t < self.t_min - 1e-9) or np.any(t > self.t_max + 1e-9):
            raise ValueError(f"timestep outside the schedule's range [{self.t_min:g}, {self.t_max:g}]")

    def signal_variance_at(self, t) -> np.ndarray:
        """ᾱ(t) = sigmoid(λ(t)), linear between grid points. Shape of ``t``."""
        t = np.asarray(t, dtype=np.float64)
        self._check_t(t)
        if self.kind == "flow":
            s = t / self.t_max
            return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)
        return np.interp(t, self.timesteps, self.signal_variance)

    def log_snr(self, t) -> np.ndarray:
        """λ(t) = log SNR(t) (natural log). −∞ where the schedule reaches pure noise."""
        if self.kind == "flow":
            # closed form: going through ᾱ loses λ to cancellation in 1 − ᾱ near t = 0
            t = np.asarray(t, dtype=np.float64)
            self._check_t(t)
            with np.errstate(divide="ignore"):
                return 2 * (np.log(self.t_max - t) - np.log(t))
        return _log_snr_from_signal_variance(self.signal_variance_at(t))

    def snr(self, t) -> np.ndarray:
        """SNR(t) = α_t² / σ_t²."""
        if self.kind == "flow":
            return np.exp(self.log_snr(t))
        abar = self.signal_variance_at(t)
        with np.errstate(divide="ignore"):
            return abar / (1 - abar)

    def alpha_sigma(self, t) -> tuple[np.ndarray, np.ndarray]:
        """(α_t, σ_t) of the network input in this schedule's parametrisation."""
        abar = self.signal_variance_at(t)
        if self.kind == "vp":
            return np.sqrt(abar), np.sqrt(1 - abar)
        s = np.asarray(t, dtype=np.float64) / self.t_max
        return 1 - s, s

    def d_signal_variance_dt(self, t) -> np.ndarray:
        """dᾱ/dt (≤ 0), exact for flow matching, piecewise constant between grid points otherwise."""
        t = np.asarray(t, dtype=np.float64)
        self._check_t(t)
        if self.kind == "flow":
            s = t / self.t_max
            return -2 * s * (1 - s) / ((1 - s) ** 2 + s**2) ** 2 / self.t_max
        slopes = np.diff(self.signal_variance) / np.diff(self.timesteps)
        idx = np.clip(np.searchsorted(self.timesteps, t, side="right") - 1, 0, len(slopes) - 1)
        return slopes[idx]

    def d_log_snr_dt(self, t) -> np.ndarray:
        """dλ/dt (negative: λ falls as t grows); ±∞ where ᾱ reaches 0 or 1."""
        if self.kind == "flow":  # d/dt 2·ln((T − t)/t), −∞ at both ends (not 0/0)
            t = np.asarray(t, dtype=np.float64)
            self._check_t(t)
            with np.errstate(divide="ignore"):
                return -2 * self.t_max / (t * (self.t_max - t))
        abar = self.signal_variance_at(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.d_signal_variance_dt(t) / (abar * (1 - abar))

    def t_of_log_snr(self, log_snr) -> np.ndarray:
        """Inverse of :meth:`log_snr`: the timestep where λ(t) equals ``log_snr``.

        NaN where ``log_snr`` lies outside [λ(t_max), λ(t_min)] (the schedule never reaches it).
        """
        lam = np.asarray(log_snr, dtype=np.float64)
        if self.kind == "flow":
            return self.t_max / (1 + np.exp(lam / 2))
        target = sigmoid(lam)
        a, t = self.signal_variance[::-1], self.timesteps[::-1]
        # ᾱ is non-increasing in t; np.interp needs increasing abscissae, and flat runs (none in
        # practice) would make the inverse ambiguous.
        out = np.interp(target, a, t)
        outside = (target < a[0] - 1e-15) | (target > a[-1] + 1e-15)
        return np.where(outside, np.nan, out)

    @property
    def log_snr_range(self) -> tuple[float, float]:
        """(λ at the noisiest timestep, λ at the least noisy timestep)."""
        lam = self.log_snr(np.array([self.t_max, self.t_min]))
        return float(lam[0]), float(lam[1])

    def __repr__(self) -> str:
        lo, hi = self.log_snr_range
        return f"Schedule({self.name or self.kind}, t∈[{self.t_min:g}, {self.t_max:g}], λ∈[{lo:.3g}, {hi:.3g}])"


def _is_flow_config(cfg: Mapping[str, Any]) -> bool:
    return str(cfg.get("_class_name", "")).startswith("FlowMatch") or bool(cfg.get("use_flow_sigmas")) or (
        "shift" in cfg and "beta_schedule" not in cfg and "trained_betas" not in cfg
    )
