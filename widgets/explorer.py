"""The explorer: live sampling, scrubbing, band decomposition against theory, prompt switches.

Layout, top to bottom: controls; image panels per run (x_t, x̂0, and the bands of x̂0: box pyramid
above, FFT rings below); the chromatography plot and the RAPSD plot; the scrubber; the status line.
Sampling runs in a worker thread (:mod:`widgets.worker`); every number shown comes from chromaviz.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from jupyter_bokeh.widgets import BokehModel

from chromaviz import analysis, spectral, theory
from chromaviz.models import Denoiser, load_shapes
from chromaviz.sampling.prompts import Boundary
from chromaviz.noise import SCHEDULERS, FLOW_SCHEDULERS
from chromaviz.sampling.trajectory import StepRecord, Trajectory

from .imaging import band_grid, band_grid_width, png_bytes, sample_rgb
from .plots import ChromatographyPlot, RapsdPlot
from .worker import PromptSwitch, RunSettings, SamplingJob

SWITCH_UNITS = ("fraction", "timestep", "log_snr", "level")
DEFAULT: Any = object()  # "the model's example prompt"
SIZES = (32, 64, 96, 128)
CSS_CLASS = "chromaviz-explorer"


class RunPanel:
    """Images of one run at the selected step: x_t, x̂0 and the band grid."""

    def __init__(self, title: str) -> None:
        self.title = W.HTML(f"<b>{title}</b>")
        blank = png_bytes(np.full((8, 8, 3), 0.94))  # shown until the first step arrives
        self.x_t = W.Image(value=blank, format="png", layout=W.Layout(width="192px", height="192px"))
        self.x0 = W.Image(value=blank, format="png", layout=W.Layout(width="192px", height="192px"))
        self.bands = W.Image(value=blank, format="png", layout=W.Layout(width="0px"))
        self.caption = W.HTML()
        labels = W.HBox([W.HTML("x<sub>t</sub>", layout=W.Layout(width="196px")), W.HTML("x̂<sub>0</sub> (prediction)")])
        self.widget = W.VBox([
            self.title, labels, W.HBox([self.x_t, self.x0]),
            W.HTML("bands of x̂<sub>0</sub>, finest → coarsest (top: box pyramid, bottom: FFT rings)"),
            self.bands, self.caption,
        ], layout=W.Layout(border="1px solid #ddd", padding="4px", margin="2px"))

    def show(self, rec: StepRecord, to_rgb, levels, with_bands: bool = True) -> None:
        """Images are sent at their own size; CSS enlarges them without smoothing."""
        self.x_t.value = png_bytes(sample_rgb(rec.x_t[0], to_rgb))
        self.x0.value = png_bytes(sample_rgb(rec.x0[0], to_rgb))
        if with_bands:
            grid = band_grid(rec.x0[0], levels)
            self.bands.layout.width = f"{band_grid_width(grid, rec.x0.shape[-2])}px"
            self.bands.value = png_bytes(grid)
        prompt = "unconditional" if rec.prompt is None else repr(rec.prompt)
        self.caption.value = (f"step {rec.index + 1}/{rec.num_steps} · t = {rec.timestep:.1f} · "
                              f"λ = {rec.log_snr:+.2f} · prompt {prompt}")


class Explorer:
    """Interactive resolution chromatography of a chromaviz model.

    Parameters
    ----------
    model : Denoiser, optional
        Any chromaviz model (default: the bundled shapes model, a trained text-to-image network).
    prompt, second_prompt : str or None, optional
        Prompt A, and the prompt the switch hands over to (default: the model's
        ``example_prompts``, else "cat" and "moon").
    guidance : float, optional
        Classifier-free guidance scale (default: the model's ``recommended_guidance``).
    num_steps, scheduler, seed, size : run settings (editable in the UI).
    device : str, optional
        Torch device (default: CUDA when available).
    preview_interval : float
        Minimum seconds between live preview refreshes while sampling.
    ui_budget : float
        Largest fraction of the sampling time the live refreshes may take (they are spaced out
        further when one costs more than that).

    Examples
    --------
    >>> from widgets import Explorer
    >>> ex = Explorer()
    >>> ex  # in a notebook: shows the explorer  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Denoiser | None = None,
        *,
        prompt: str | None = DEFAULT,
        second_prompt: str | None = DEFAULT,
        num_steps: int = 50,
        scheduler: str = "default",
        guidance: float | None = None,
        seed: int = 0,
        size: int | None = None,
        device: str | None = None,
        preview_interval: float = 0.1,
        ui_budget: float = 0.05,
    ) -> None:
        self.model = model if model is not None else load_shapes()
        examples = self.model.example_prompts or ("cat", "moon")
        prompt = examples[0] if prompt is DEFAULT else prompt
        second_prompt = examples[1] if second_prompt is DEFAULT else second_prompt
        guidance = self.model.recommended_guidance if guidance is None else guidance
        self.device = device
        self.preview_interval = preview_interval
        self.ui_budget = ui_budget
        self._refresh_cost = 0.01
        self._following = False
        self._latest: tuple[str, StepRecord, float] | None = None
        self._energies: dict[tuple, torch.Tensor] = {}
        self.records: dict[str, list[StepRecord]] = {"A": [], "B": []}
        self.trajectories: dict[str, Trajectory | None] = {"A": None, "B": None}
        self.errors: dict[str, str | None] = {"A": None, "B": None}
        self.job: SamplingJob | None = None
        self._lock = threading.RLock()
        self._planned: dict[str, Any] = {}
        self.preview_updates = 0
        conditional = self.model.conditional
        size = size or self.model.default_size[0]
        flow = self.model.schedule.kind == "flow"
        scheduler_names = ["default", *[n for n in SCHEDULERS if (n in FLOW_SCHEDULERS) == flow]]

        # ---- controls
        if not conditional:  # an unconditional model takes no prompt: the fields stay empty and disabled
            prompt = second_prompt = None
        self.prompt = W.Text(value=prompt or "", description="prompt A", disabled=not conditional)
        self.second_prompt = W.Text(value=second_prompt or "", description="prompt B", disabled=not conditional)
        self.switch = W.ToggleButton(value=False, description="switch A → B", icon="exchange", disabled=not conditional,
                                     tooltip="hand over from prompt A to prompt B at the switch time; can be flipped mid-run")
        self.switch_unit = W.Dropdown(options=SWITCH_UNITS, value="level", description="switch at", layout=W.Layout(width="210px"))
        self.switch_value = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="", readout_format=".2f",
                                          layout=W.Layout(width="260px", display="none"))
        self.switch_m = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=8, description="",
                                          tooltip="switch at the birth of level m (m²·SNR = 1)", layout=W.Layout(width="260px"))
        self.switch_level = W.Dropdown(options=[1, 2, 4, 8, 16, 32], value=8, description="level m", layout=W.Layout(width="150px"))
        self.from_theory = W.Button(description="at birth of level m", tooltip="set the switch time, in the chosen unit, to the birth of level m (m²·SNR = 1)")
        self.seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="160px"))
        self.steps = W.IntSlider(value=num_steps, min=2, max=200, description="steps")
        self.scheduler = W.Dropdown(options=scheduler_names, value=scheduler, description="scheduler")
        self.guidance = W.FloatSlider(value=guidance, min=0.0, max=10.0, step=0.25, description="guidance", disabled=not conditional)
        self.size = W.Dropdown(options=SIZES if size in SIZES else (*SIZES, size), value=size, description="size", layout=W.Layout(width="160px"))
        self.side_by_side = W.Checkbox(value=False, description="run B beside A (same seed)")
        self.variant = W.Dropdown(options=["prompt switch flipped", *[f"scheduler: {n}" for n in scheduler_names[1:]]],
                                  description="B differs by", layout=W.Layout(width="320px"))
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=num_steps, description="progress")
        self.rate = W.Label(value="")
        self.status = W.HTML(value="")

        # ---- views
        self.panels = {"A": RunPanel("run A"), "B": RunPanel("run B")}
        self.panels["B"].widget.layout.display = "none"
        self.coordinate = W.ToggleButtons(options=[(label, key) for key, label in
                                                   (("step", "step"), ("timestep", "timestep"), ("log_snr", "log-SNR"))],
                                          value="step", description="x axis")
        self.method = W.ToggleButtons(options=["rings", "pyramid"], value="rings", description="bands")
        self.rapsd = RapsdPlot()
        self.plots = W.HBox()
        self._build_chromatography(spectral.levels_for(*self._grid(size)))
        self.play = W.Play(value=0, min=0, max=0, interval=150, description="play")
        self.scrub = W.IntSlider(value=0, min=0, max=0, description="step", continuous_update=True, layout=W.Layout(width="480px"))
        W.jslink((self.play, "value"), (self.scrub, "value"))
        W.jslink((self.play, "max"), (self.scrub, "max"))

        self.widget = W.VBox([
            W.HTML(f"<style>.{CSS_CLASS} img {{image-rendering: pixelated;}}</style>"),
            W.HBox([self.prompt, self.second_prompt]),
            W.HBox([self.switch, self.switch_unit, self.switch_value, self.switch_m, self.switch_level, self.from_theory]),
            W.HBox([self.steps, self.scheduler, self.guidance]),
            W.HBox([self.seed, self.size, self.side_by_side, self.variant]),
            W.HBox([self.run_button, self.stop_button, self.progress, self.rate]),
            self.status,
            W.HBox([self.panels["A"].widget, self.panels["B"].widget]),
            W.HBox([self.coordinate, self.method]),
            self.plots,
            W.HBox([self.play, self.scrub]),
        ])
        self.widget.add_class(CSS_CLASS)
        self.steps.add_class("chromaviz-steps")
        self.scrub.add_class("chromaviz-scrub")

        # ---- events
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.from_theory.on_click(lambda _: self.set_switch_from_theory())
        self.switch.observe(self._switch_changed, "value")
        self.switch_unit.observe(lambda _: self.set_switch_from_theory(), "value")
        self.switch_value.observe(self._switch_changed, "value")
        self.switch_m.observe(self._switch_changed, "value")
        self.side_by_side.observe(lambda ch: setattr(self.panels["B"].widget.layout, "display", None if ch.new else "none"), "value")
        self.scrub.observe(self._scrubbed, "value")
        self.coordinate.observe(self._coordinate_changed, "value")
        self.method.observe(lambda _: self._refresh_measured(), "value")
        self._switches: dict[str, PromptSwitch] = {}

    # ------------------------------------------------------------------ display
    def _build_chromatography(self, levels) -> None:
        self.levels = tuple(levels)
        self.chroma = ChromatographyPlot(self.levels, runs=("A", "B"))
        self.chroma.set_coordinate(self.coordinate.value)
        self.plots.children = [BokehModel(self.chroma.fig), BokehModel(self.rapsd.fig)]

    def _ipython_display_(self) -> None:
        from bokeh.io import output_notebook
        from bokeh.resources import INLINE
        from IPython.display import display

        output_notebook(INLINE, hide_banner=True)  # BokehJS from the package, never a CDN
        display(self.widget)

    # ------------------------------------------------------------------ settings
    def settings(self) -> RunSettings:
        return RunSettings(num_steps=self.steps.value, scheduler=self.scheduler.value, guidance=self.guidance.value,
                           seed=self.seed.value, size=self.size.value, device=self.device)

    def boundary(self) -> Boundary:
        """The switch time as set in the UI."""
        unit = self.switch_unit.value
        if unit == "level":
            return Boundary.level(int(self.switch_m.value))
        return Boundary(float(self.switch_value.value), unit)

    def _configure_switch_slider(self, unit: str) -> None:
        """Show the slider of ``unit``: levels m on their own slider, the others on a float slider
        spanning the schedule (fraction 0…1, timesteps t_min…t_max, log-SNR over its finite range)."""
        self.switch_m.layout.display = None if unit == "level" else "none"
        self.switch_value.layout.display = "none" if unit == "level" else None
        if unit == "level":
            return
        sched = self.model.schedule
        lo, hi, step = {
            "fraction": (0.0, 1.0, 0.01),
            "timestep": (sched.t_min, sched.t_max, 0.1),
            "log_snr": (max(sched.log_snr_range[0], -12.0), min(sched.log_snr_range[1], 12.0), 0.01),
        }[unit]
        slider = self.switch_value
        slider.min, slider.max = min(lo, slider.min), max(hi, slider.max)  # widen first, so value stays valid
        slider.value = min(max(slider.value, lo), hi)
        slider.min, slider.max, slider.step = lo, hi, step

    def _switch_changed(self, _change=None) -> None:
        """Flipping the switch or moving its time mid-run takes effect from the next step."""
        try:
            boundary = self.boundary()
        except (ValueError, TypeError) as err:
            self._show_error(f"switch time: {err}")
            return
        for name, sw in self._switches.items():
            flipped = name == "B" and self.variant.value == "prompt switch flipped"
            sw.enabled = self.switch.value != flipped
            sw.boundary = boundary

    def set_switch_from_theory(self) -> None:
        """Set the switch time, in the chosen unit, to the birth of the chosen level (m²·SNR = 1)."""
        m, unit = int(self.switch_level.value), self.switch_unit.value
        lam = float(theory.birth_log_snr(m)[0])
        self._configure_switch_slider(unit)
        if unit == "level":
            self.switch_m.value = m
            value = None
        elif unit == "log_snr":
            value = round(lam, 4)
        elif unit == "timestep":
            timing = theory.level_timings(self.model.schedule, [m])[0]
            if timing.inherited:
                self._show_error(f"level {m} is inherited from the initial noise under this schedule: it has no birth time")
                return
            value = round(timing.birth_timestep, 2)
        else:
            _, planned = self.model.schedule.visited(self.steps.value, self.scheduler.value)
            born = np.nonzero(planned >= lam)[0]
            k = int(born[0]) if len(born) else len(planned)
            value = round(min(1.0, max(0.0, (k - 0.5) / len(planned))), 4)
        if value is not None:
            self.switch_value.value = value
        self._switch_changed()
        self.status.value = f"switch set to the birth of level {m}: {self.boundary().describe()}"

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Start sampling (run A, and run B beside it if chosen) in the background."""
        if self.job is not None and self.job.running:
            return
        try:
            settings = self.settings()
            for text in (self.prompt.value, self.second_prompt.value if self.switch.value else None):
                self.model.check_prompt(text or None)
            self.model.check_size(settings.size, settings.size)
            boundary = self.boundary()
        except ValueError as err:
            self._show_error(str(err))
            return
        runs = [("A", settings, PromptSwitch(self.prompt.value or None, self.second_prompt.value or None, boundary, self.switch.value))]
        if self.side_by_side.value:
            b_settings, b_switch = settings, PromptSwitch(runs[0][2].first, runs[0][2].second, boundary, self.switch.value)
            if self.variant.value == "prompt switch flipped":
                b_switch.enabled = not self.switch.value
            else:
                b_settings = settings.but(scheduler=self.variant.value.split(": ", 1)[1])
            runs.append(("B", b_settings, b_switch))
        self._switches = {name: sw for name, _, sw in runs}
        levels = spectral.levels_for(*self._grid(settings.size))
        with self._lock:
            if tuple(levels) != self.levels:
                self._build_chromatography(levels)
            self._energies.clear()
            for name in ("A", "B"):
                self.records[name] = []
                self.trajectories[name] = None
                self.errors[name] = None
                self.chroma.clear_measured(name)
            self._plan_theory(settings)
            self.progress.max = sum(len(self.model.schedule.visited(s.num_steps, s.scheduler)[0]) for _, s, _ in runs)
            self.progress.value = 0
            self.progress.bar_style = "info"
            self.scrub.max = self.play.max = 0
            self.scrub.value = 0
            self.status.value = "sampling…"
            self.run_button.disabled, self.stop_button.disabled = True, False
        self._latest = None
        # Until a refresh has been timed, assume it costs 10 ms: with a 5% budget the first live
        # refresh comes after 0.2 s, so runs shorter than that just show their final state.
        self._refresh_cost = 0.01
        self.job = SamplingJob(self.model, runs, self._on_step, self._on_done).start()
        threading.Thread(target=self._refresh_loop, args=(self.job,), name="chromaviz-preview", daemon=True).start()

    def _grid(self, size: int) -> tuple[int, int]:
        """(h, w) of the samples of a size×size run: the latent grid for latent models."""
        return self.model.latent_size(size, size) if hasattr(self.model, "latent_size") else (size, size)

    def stop(self) -> None:
        """Stop after the current step; what was recorded stays scrubbable."""
        if self.job is not None:
            self.job.stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current job ends (for scripts, tests and executed notebooks)."""
        if self.job is not None:
            self.job.join(timeout)

    def _plan_theory(self, settings: RunSettings) -> None:
        """Theory curves over the planned steps, drawn before the first step arrives."""
        timesteps, lam = self.model.schedule.visited(settings.num_steps, settings.scheduler)
        power, source = analysis.data_power(self.model, settings.size, settings.size)
        spectrum_aware, m2 = analysis.expected(lam, self.levels, power)
        self._planned = {"timesteps": timesteps, "log_snr": lam, "power_source": source}
        self.chroma.set_theory(timesteps, lam, spectrum_aware, m2)

    def _on_step(self, name: str, rec: StepRecord, elapsed: float) -> None:
        """Called on the sampling thread: only note the step; the refresher thread draws it."""
        self.records[name].append(rec)
        self._latest = (name, rec, elapsed)

    def _refresh_loop(self, job: SamplingJob) -> None:
        """Redraw the live views while ``job`` samples: at most every ``preview_interval`` seconds,
        and less often if a refresh costs more than ``ui_budget`` of the time between two."""
        shown = None
        while job.running:
            time.sleep(max(self.preview_interval, self._refresh_cost / self.ui_budget))
            latest = self._latest
            if latest is None or latest is shown or not job.running:
                continue
            start = time.thread_time()  # this thread's CPU time: waiting for the GIL is not UI cost
            with self._lock:
                self._refresh_live(*latest)
            self._refresh_cost = time.thread_time() - start
            shown = latest

    def _refresh_live(self, name: str, rec: StepRecord, elapsed: float) -> None:
        done = sum(len(r) for r in self.records.values())
        self.progress.value = min(done, self.progress.max)
        self.rate.value = f"run {name}: {rec.index + 1}/{rec.num_steps} · {(rec.index + 1) / max(elapsed, 1e-9):.1f} steps/s"
        self._extend_scrubber()
        self.panels[name].show(rec, self.model.to_rgb, self.levels, with_bands=False)
        self._refresh_measured(name)
        self.preview_updates += 1

    def _on_done(self, name: str, traj: Trajectory, error: str | None) -> None:
        with self._lock:
            self.trajectories[name] = traj
            self.records[name] = list(traj.steps)
            self.errors[name] = error
            if traj.steps:
                elapsed = traj.metadata.get("elapsed_seconds", 0.0)
                self._refresh_live(name, traj.steps[-1], elapsed)
            if traj.steps and self._planned.get("power_source") == "none" and traj.status == "complete":
                power, _ = analysis.data_power(None, *traj.sample.shape[-2:], traj.sample)
                spectrum_aware, m2 = analysis.expected(self._planned["log_snr"], self.levels, power)
                self.chroma.set_theory(self._planned["timesteps"], self._planned["log_snr"], spectrum_aware, m2)
            finished = self.job is None or name == self.job.runs[-1][0] or error is not None or traj.status == "cancelled"
            if error:
                self._show_error(f"run {name}: {error}. The {len(traj)} recorded steps stay scrubbable.")
            elif finished:
                kept = ", ".join(f"run {n}: {t.status} ({len(t)} steps)" for n, t in self.trajectories.items() if t is not None)
                self.status.value = f"done · {kept}"
                self.progress.bar_style = "success" if traj.status == "complete" else "warning"
            if finished:
                self.run_button.disabled, self.stop_button.disabled = False, True
            self.show_step(self.scrub.value)

    # ------------------------------------------------------------------ views
    def _extend_scrubber(self) -> None:
        """Grow the scrubber over the recorded steps; if it sat on the newest step, follow it."""
        n = max((len(r) for r in self.records.values()), default=0)
        follow = self.scrub.value >= self.scrub.max
        self.scrub.max = self.play.max = max(n - 1, 0)
        if follow and self.scrub.value != self.scrub.max:
            self._following = True  # the live refresh draws this step; skip the full redraw
            try:
                self.scrub.value = self.scrub.max
            finally:
                self._following = False

    def _scrubbed(self, change) -> None:
        if not self._following:
            self.show_step(change.new)

    def _partial(self, name: str) -> Trajectory | None:
        """The finished trajectory of run ``name``, or a view of the steps recorded so far."""
        if self.trajectories[name] is not None:
            return self.trajectories[name]
        recs = self.records[name]
        return Trajectory(metadata={}, steps=list(recs)) if recs else None

    def _measured_fractions(self, run: str, traj: Trajectory) -> np.ndarray:
        """G_b per recorded step, (S, L). Band energies of past steps are cached, so a live
        refresh only measures the steps that arrived since the last one."""
        key = (run, self.method.value, self.levels)
        cached = self._energies.get(key)
        done = 0 if cached is None else len(cached)
        batch = traj.steps[0].x0.shape[0]
        reference = "batch" if batch >= 2 else None  # as Trajectory.signal_fractions does
        if done < len(traj):
            new = spectral.step_band_energies(torch.stack([s.x0 for s in traj.steps[done:]]), self.levels,
                                              self.method.value, reference)
            cached = new if cached is None else torch.cat([cached, new])
            self._energies[key] = cached
        final = cached[-1] if traj.final is None else spectral.step_band_energies(
            traj.final[None], self.levels, self.method.value, reference)[0]
        return (cached[: len(traj)] / final).numpy()

    def _refresh_measured(self, name: str | None = None) -> None:
        with self._lock:
            for run in ([name] if name else ["A", "B"]):
                traj = self._partial(run)
                if traj is None or traj.steps[0].x0 is None:
                    continue
                self.chroma.set_measured(run, traj.timesteps, traj.log_snr, self._measured_fractions(run, traj))

    def _coordinate_changed(self, change) -> None:
        with self._lock:
            self.chroma.set_coordinate(change.new)
            self.chroma.cursor_at(self.scrub.value)

    def show_step(self, step: int) -> None:
        """Show recorded step ``step`` in every panel, the cursor and the RAPSD."""
        with self._lock:
            for name, panel in self.panels.items():
                recs = self.records[name]
                if recs:
                    panel.show(recs[min(step, len(recs) - 1)], self.model.to_rgb, self.levels)
            recs = self.records["A"]
            if not recs:
                return
            rec = recs[min(step, len(recs) - 1)]
            self.chroma.cursor_at(rec.index)
            freqs, p_x0 = spectral.rapsd(rec.x0.double())
            x_t = rec.x_t.double() / rec.alpha if rec.alpha > 0 else rec.x_t.double() * np.nan
            _, p_xt = spectral.rapsd(x_t)
            _, p_final = spectral.rapsd(recs[-1].x0.double())
            self.rapsd.update(freqs.numpy(), p_x0.numpy(), p_xt.numpy(), p_final.numpy(), rec.log_snr)

    def _show_error(self, message: str) -> None:
        self.status.value = f'<span class="chromaviz-error" style="color:#b00020"><b>error:</b> {_escape(message)}</span>'
        self.progress.bar_style = "danger"

    # ------------------------------------------------------------------ export
    def export_html(self, path: str | Path, run: str = "A") -> Path:
        """Write a standalone HTML page of a finished (or stopped) run whose scrubber works without a kernel."""
        from .export import export_html

        traj = self.trajectories.get(run) or self._partial(run)
        if traj is None or not traj.steps:
            raise ValueError(f"run {run} has no recorded steps to export yet; click Run first")
        return export_html(traj, self.model, path, method=self.method.value)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
