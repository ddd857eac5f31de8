"""The explorer: live sampling, scrubbing, band decomposition against theory, prompt switches.

Layout, top to bottom: Run/Stop/Export, progress and the status line; the prompts, the switch and
"More settings", which unfolds the other run settings; then one bokeh document
(:class:`chromaviz.widgets.document.RunDocument`, the same document the exported page and the report's
run page are): the scrubber and Play over x_t, x̂0 and the band images
(runs A and B side by side) beside or above the chromatography plot with its cursor, the RAPSD below.
Sampling runs in a worker thread (:mod:`chromaviz.widgets.worker`); a refresher thread turns recorded steps
into frames (:mod:`chromaviz.views.frames`) and streams them into the document, where scrubbing
and Play run in the browser, as often as it can without slowing the run (:data:`WATCH_BUDGET`).
After a run with the prompt switch, the runs of prompt A alone and prompt B alone are sampled too,
and run A's panel shows where each band came from (:func:`chromaviz.apps.composing.band_provenance`).
Every number shown comes from chromaviz.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import html
import re
import threading
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Sequence

import ipywidgets as W

from chromaviz import _checks, analysis, spectral
from chromaviz.analysis import StepwiseComparison
from chromaviz.apps import composing
from chromaviz.models import EXPLORER_MODEL, Denoiser, load_builtin
from chromaviz.noise import schedulers_for
from chromaviz.prompts import Boundary, PromptSchedule
from chromaviz.runs import RunSpec
from chromaviz.sampling.trajectory import StepRecord, Trajectory
from chromaviz.views.frames import build_frames, rapsd

from .document import RunDocument
from .export import export_html, one_thread, page
from .live import BatchedBokehModel
from .worker import BATCH, LivePrompt, RunState, SamplingJob

SWITCH_UNITS = ("fraction", "timestep", "log_snr", "level")
MAX_SEED = 2**53 - 1
"""The largest seed the explorer's field holds: the browser keeps a widget's number as a JavaScript
double, exact up to 2**53 − 1 (larger seeds were silently clamped; sample() takes up to 2**64 − 1)."""

DEFAULT: Any = object()  # "the model's example prompt"
SIZES = (32, 64, 96, 128)
STEPS = (2, 200)
"""Range of the steps slider (N)."""
CSS_CLASS = "chromaviz-explorer"
FONT_PX = 16
"""Type size of the controls (CSS pixels): legible on a projector at 1280×800."""
WATCH_BUDGET = 0.05
"""How much longer the live view may make the run's steps (0.05: 5 %). Sampling in the explorer's worker
thread costs about 4 % more than on the kernel's main thread by itself (128×128 exemplar runs,
``benchmarks/explorer_latency.py``), so the live view stays under 1.10× of ``sample()``. What a
refresh costs the run is measured in the run's own step times (:class:`RefreshPacer`): the kernel's
work and the browser's drawing both, which share the machine's cores with the sampler. The refresh
interval is that cost over this budget, between ``preview_interval`` and :data:`LONGEST_INTERVAL`."""
QUIET_GAP = 0.3
"""Seconds from a refresh (or the run's first step) long enough that the last third of the gap shows
the run's undisturbed step time (:class:`RefreshPacer`)."""
LONGEST_INTERVAL = 3.0
"""The most seconds between refreshes, however much they cost: a run still shows that it moves."""
VARIANTS = ("prompt switch flipped", "same prompts without the switch")
"""What run B changes from run A besides a scheduler: the switch flipped (off where A's is on, and on
where it is off), or always off (A's prompts as A starts them, for comparison with a switched A)."""

PROGRESS_INTERVAL = 0.5
"""Seconds between moves of the progress bar and the rate line while frames wait for their turn. Each
move is drawn by the browser on the cores the run shares, outside :data:`WATCH_BUDGET` (its cost is
in every step the pacer takes for undisturbed): at 0.25 s a 64×64 run in JupyterLab took 1.2× the
worker's time alone, 1.06× without the moves (``benchmarks/explorer_latency.py``, noisy there)."""

PROGRESS_AFTER = 1.0
"""Seconds a job goes on before the progress bar moves between frames: a shorter one ends before a move
could be read, and the moves, drawn by the browser on the cores it shares, cost a 0.5-second run more
than 10 %."""

RUN_NAMES = ("A", "B")
"""The runs on screen; the others of a job ("A alone", "B alone") are references for the provenance."""


class Explorer:
    """Interactive resolution chromatography of a chromaviz model.

    Parameters
    ----------
    model : Denoiser, optional
        Any chromaviz model (default: the built-in layout model, :class:`~chromaviz.models.LayoutTexture`,
        an exact model of layouts with named textures on which a prompt switch at the birth of a level
        composes: ``docs/composing.md``).
    prompt, second_prompt : str or None, optional
        Prompt A (a prompt schedule such as ``"[A:B:m=4]"`` is parsed as in ``sample()``), and
        the prompt the switch hands over to (default: the model's ``example_prompts``, else "cat"
        and "moon").
    num_steps : int
        N, inference steps, 2 to 200.
    scheduler : str
        "default" or a name from :data:`chromaviz.noise.SCHEDULERS` that fits the model's schedule.
    guidance : float, optional
        Classifier-free guidance scale, 0 to 10 (default: the model's ``recommended_guidance``).
    seed : int
        Seed of both runs, 0 to :data:`MAX_SEED` (2**53 − 1, what the browser's field holds exactly).
    size : int, optional
        Image size in pixels (default: the model's).
    device : str, optional
        Torch device (default: CUDA when available).
    preview_interval : float
        Least seconds between live refreshes while sampling (> 0). Each refresh draws the newest
        recorded step and adds it to the scrubber; when the run ends, the scrubber gets every step
        (each refresh has drawn every step already when sampling is slower than the refreshes).
        Refreshes that cost the run more come less often (:class:`RefreshPacer`, :data:`WATCH_BUDGET`);
        :attr:`refresh_rate` is the rate the last run reached.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, naming it, what was given and what is allowed.

    Examples
    --------
    >>> from chromaviz.widgets import Explorer
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
    ) -> None:
        self.model = model if model is not None else load_builtin(EXPLORER_MODEL)
        if not isinstance(self.model, Denoiser):
            raise TypeError(f"model must be a chromaviz Denoiser, got {type(self.model).__name__}")
        self.scheduler_names = ["default", *schedulers_for(self.model.schedule)]
        scheduler = _checks.choice("scheduler", scheduler, self.scheduler_names)
        num_steps = _checks.integer("num_steps", num_steps, minimum=STEPS[0], maximum=STEPS[1])
        seed = _checks.integer("seed", seed, minimum=0, maximum=MAX_SEED)
        guidance = _checks.real("guidance", self.model.recommended_guidance if guidance is None else guidance,
                                minimum=0, maximum=10)
        size = _checks.positive_int("size", size if size is not None else self.model.default_size[0])
        self.preview_interval = _checks.real("preview_interval", preview_interval, minimum=0.001)
        examples = self.model.example_prompts or ("cat", "moon")
        prompt = examples[0] if prompt is DEFAULT else prompt
        second_prompt = examples[1] if second_prompt is DEFAULT else second_prompt
        for name, value in (("prompt", prompt), ("second_prompt", second_prompt)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, got {type(value).__name__}")
        self.device = device
        self.runs: dict[str, RunState] = {}
        """The runs on screen, by name ("A", and "B" beside it)."""
        self.job: SamplingJob | None = None
        self.preview_updates = 0
        self.refresh_rate: float | None = None
        """Refreshes per second the live view kept during the last run, from its first refresh to its last
        (None before a run, or after one too short for two)."""
        self.refresh_interval = self.preview_interval
        """Seconds between refreshes at the end of the last run, as adapted to their cost."""
        self.refresh_cost: float | None = None
        """Seconds one refresh cost the last run's sampling, as measured in its step times
        (:class:`RefreshPacer`; None when the run was too short to tell): the next run draws its
        first step at once when it is None, else once that cost fits in :data:`WATCH_BUDGET`."""
        self.references: dict[str, RunState] = {}
        """The runs of prompt A alone and prompt B alone that the provenance of a switched run A
        compares it with ("A alone", "B alone"; sampled after the runs on screen, not shown)."""
        self._pending_references: dict[str, RunState] = {}
        self.last_export: Path | None = None
        """The page the Export button wrote last."""
        self.traceback: str | None = None
        """The traceback of the last failure in drawing, for a bug report."""
        self._pending: dict[str, RunState] | None = None
        self._refresher: threading.Thread | None = None
        self._lock = threading.RLock()
        self._build_controls(prompt, second_prompt, num_steps, scheduler, guidance, seed, size)
        self._build_document(spectral.levels_for(*self._grid(size)))
        self._build_layout()
        self._wire()

    # ------------------------------------------------------------------ building
    def _build_controls(self, prompt, second_prompt, num_steps, scheduler, guidance, seed, size) -> None:
        conditional = self.model.conditional
        if not conditional:  # an unconditional model takes no prompt: the fields stay empty and disabled
            prompt = second_prompt = None
        narrow = W.Layout(width="170px")
        a, b = self.model.example_prompts or ("cat", "moon")  # prompts this model knows
        self.prompt = W.Text(value=prompt or "", description="prompt A", disabled=not conditional,
                             placeholder=f"a prompt, or a schedule: [{a}:{b}:m=4]" if conditional else "",
                             layout=W.Layout(width="330px"))
        self.second_prompt = W.Text(value=second_prompt or "", description="prompt B", disabled=not conditional,
                                    layout=W.Layout(width="280px"))
        self.switch = W.ToggleButton(value=False, description="switch A → B", icon="exchange", disabled=not conditional,
                                     tooltip="hand over from prompt A to prompt B at the switch time; can be flipped mid-run")
        self.switch_unit = W.Dropdown(options=SWITCH_UNITS, value="level", description="at", layout=W.Layout(width="210px"))
        self.switch_value = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, description="", readout_format=".2f",
                                          layout=W.Layout(width="220px", display="none"))
        self.switch_m = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64], value=8, description="",
                                          tooltip="switch at the birth of level m (m²·SNR = 1)", layout=W.Layout(width="220px"))
        self.switch_level = W.Dropdown(options=[1, 2, 4, 8, 16, 32], value=8, description="", layout=W.Layout(width="60px"))
        self.from_theory = W.Button(description="at birth of level m", layout=W.Layout(width="150px"),
                                    tooltip="set the switch time, in the chosen unit, to the birth of level m (m²·SNR = 1)")
        self.seed = W.BoundedIntText(value=seed, min=0, max=MAX_SEED, description="seed", layout=W.Layout(width="150px"))
        self.steps = W.IntSlider(value=num_steps, min=STEPS[0], max=STEPS[1], description="steps", layout=W.Layout(width="260px"))
        self.scheduler = W.Dropdown(options=self.scheduler_names, value=scheduler, description="scheduler", layout=W.Layout(width="260px"))
        self.guidance = W.FloatSlider(value=guidance, min=0.0, max=10.0, step=0.25, description="guidance",
                                      disabled=not conditional, layout=W.Layout(width="260px"))
        self.size = W.Dropdown(options=SIZES if size in SIZES else (*SIZES, size), value=size, description="size", layout=narrow)
        self.side_by_side = W.Checkbox(value=False, description="run B beside A (same seed)", indent=False, layout=W.Layout(width="250px"))
        self.variant = W.Dropdown(options=[*VARIANTS, *[f"scheduler: {n}" for n in self.scheduler_names[1:]]],
                                  description="B differs by", layout=W.Layout(width="380px"))
        self.provenance = W.Checkbox(value=True, indent=False, layout=W.Layout(width="300px"),
                                     description="where each band came from",
                                     tooltip="after a run with the switch on, also sample prompt A alone and prompt B alone "
                                             "and show which prompt each band of run A came from")
        self.method = W.Dropdown(options=["rings", "pyramid"], value="rings", description="measure",
                                 layout=W.Layout(width="180px"))
        self.run_button = W.Button(description="Run", button_style="success", icon="play", layout=W.Layout(width="90px"))
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True, layout=W.Layout(width="90px"))
        self.export_button = W.Button(description="Export", icon="download", disabled=True, layout=W.Layout(width="110px"),
                                      tooltip="write the runs on screen as one page that scrubs without a kernel, and offer it "
                                              "for download")
        self.export_link = W.HTML(value="")
        self.export_link.add_class("chromaviz-export")
        self.progress = W.IntProgress(value=0, min=0, max=num_steps, description="", layout=W.Layout(width="200px"))
        self.rate = W.Label(value="", layout=W.Layout(margin="0 12px 0 8px"))
        self.more_button = W.ToggleButton(value=False, description="More settings", icon="sliders",
                                          tooltip="the switch time, steps, scheduler, guidance, seed, size, run B and the "
                                                  "band measure", layout=W.Layout(width="170px"))
        self.status = W.HTML(value="")
        self.steps.add_class("chromaviz-steps")
        self.status.add_class("chromaviz-status")

    def _build_document(self, levels) -> None:
        """The bokeh document of the runs (rebuilt when a run's levels differ)."""
        self.view = RunDocument(levels, runs=RUN_NAMES)
        self.view.arrange(("A",))
        self.view.set_header(f"chromaviz explorer: {self.model.name}", self.method.value, ("A",))
        self._bokeh = self.view.browser = BatchedBokehModel(self.view.layout)

    def _build_layout(self) -> None:
        self.view_box = W.Box([self._bokeh], layout=W.Layout(width="100%"))
        wrap = W.Layout(flex_flow="row wrap", align_items="center")
        # Type for a projector: ipywidgets' and bokeh's sizes, set once for everything inside.
        style = (f".{CSS_CLASS} {{--jp-widgets-font-size: {FONT_PX}px; --jp-widgets-inline-height: 34px; "
                 f"--jp-widgets-inline-label-width: 96px; --bokeh-font-size: {FONT_PX}px; font-size: {FONT_PX}px}} "
                 f".{CSS_CLASS} .widget-inline-hbox {{margin: 2px 4px 2px 0}} "
                 f".{CSS_CLASS} .widget-label, .{CSS_CLASS} .widget-html-content, .{CSS_CLASS} button, "
                 f".{CSS_CLASS} input, .{CSS_CLASS} select {{font-size: {FONT_PX}px}}")
        # What a lecture changes (the prompts and the switch) in view, the rest folded away behind
        # "More settings": the runs, their bands and the plot then fit a 1280×800 screen.
        self.more = W.VBox([
            W.HBox([self.switch_unit, self.switch_value, self.switch_m, self.from_theory, self.switch_level, self.steps],
                   layout=wrap),
            W.HBox([self.scheduler, self.guidance, self.seed, self.size, self.method], layout=wrap),
            W.HBox([self.side_by_side, self.variant, self.provenance], layout=wrap),
        ], layout=W.Layout(display="none"))
        self.more.add_class("chromaviz-more")
        self.widget = W.VBox([
            W.HTML(f"<style>{style}</style>"),
            W.HBox([self.run_button, self.stop_button, self.export_button, self.progress, self.rate, self.status,
                    self.export_link], layout=wrap),
            W.HBox([self.prompt, self.second_prompt, self.switch, self.more_button], layout=wrap),
            self.more,
            self.view_box,
        ], layout=W.Layout(width="100%"))
        self.widget.add_class(CSS_CLASS)

    def _wire(self) -> None:
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.export_button.on_click(lambda _: self._guarded(self._export_clicked))
        self.from_theory.on_click(lambda _: self.set_switch_from_theory())
        self.switch.observe(self._switch_changed, "value")
        self.more_button.observe(self._show_more, "value")
        self.switch_unit.observe(lambda _: self.set_switch_from_theory(), "value")
        self.switch_value.observe(self._switch_changed, "value")
        self.switch_m.observe(self._switch_changed, "value")
        self.method.observe(lambda _: self._guarded(self._remeasure), "value")

    def _show_more(self, _change=None) -> None:
        """Unfold or fold the settings behind "More settings"."""
        self.more.layout.display = None if self.more_button.value else "none"

    def _ipython_display_(self) -> None:
        from IPython.display import display

        load_bokehjs(self.view.layout)
        display(self.widget)

    # ------------------------------------------------------------------ read-outs
    @property
    def levels(self) -> tuple[int, ...]:
        """Block sizes m of the plot and the band images."""
        return self.view.levels

    @property
    def trajectories(self) -> dict[str, Trajectory | None]:
        """The finished (or stopped) trajectory of each run on screen (None while it goes)."""
        return {name: state.trajectory for name, state in self.runs.items()}

    def shown(self, run: str = "A") -> dict[str, Any]:
        """The frame of run ``run`` at the scrubber's position, as the browser draws it: a dict of
        the frame's columns (caption, image data URIs, positions, spectra)."""
        data = self.view.frames[run].data
        n = len(data["caption"])
        if not n:
            raise ValueError(f"run {run} has no frames on screen")
        k = min(self.view.slider.value, n - 1)
        return {key: values[k] for key, values in data.items()}

    # ------------------------------------------------------------------ settings
    def settings(self) -> RunSpec:
        """Run A as the controls set it: a :class:`chromaviz.runs.RunSpec` of this explorer's model,
        prompt A as typed, batch 1 and the chosen band method (run B differs by its variant; the
        prompt switch is the live part each run samples with: :class:`~chromaviz.widgets.worker.LivePrompt`)."""
        return RunSpec(model=self.model, prompt=self.prompt.value if self.model.conditional else "",
                       scheduler=self.scheduler.value, steps=self.steps.value, seed=self.seed.value,
                       size=self.size.value, batch=BATCH, guidance=self.guidance.value, method=self.method.value,
                       device=self.device or "")

    def boundary(self) -> Boundary:
        """The switch time as set in the UI."""
        unit = self.switch_unit.value
        if unit == "level":
            return Boundary.level(int(self.switch_m.value))
        return Boundary(float(self.switch_value.value), unit)

    def _prompts(self, boundary: Boundary) -> tuple[PromptSchedule, PromptSchedule | None]:
        """Prompt A as a schedule (parsed as ``sample`` parses it) and, if the switch can apply,
        the schedule with the switch to B."""
        if not self.model.conditional:
            return PromptSchedule.constant(None), None
        first = PromptSchedule.parse(self.prompt.value) if self.prompt.value else PromptSchedule.constant(None)
        second = self.second_prompt.value or None
        switched = None
        if first.is_constant:
            switched = PromptSchedule.switch(first.prompt_at(0, 1), second, boundary)
        elif self.switch.value:
            raise ValueError(f"prompt A is already a prompt schedule ({first}); the switch A → B needs a plain "
                             "prompt A: turn the switch off, or write B into the schedule")
        return first, switched

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
            states = list((self._pending or self.runs).values()) if self.job is not None and self.job.running else []
            for state in states:
                flipped = state.name == "B" and self.variant.value == "prompt switch flipped"
                if state.prompt.switched is not None:
                    first = state.prompt.schedule.prompt_at(0, 1)
                    state.prompt.switched = PromptSchedule.switch(first, self.second_prompt.value or None, boundary)
                state.prompt.enabled = self.switch.value != flipped
        except (ValueError, TypeError) as err:
            self._show_error(f"switch time: {err}")

    def set_switch_from_theory(self) -> None:
        """Set the switch time, in the chosen unit, to the birth of the chosen level (m²·SNR = 1),
        as :func:`chromaviz.apps.composing.plan` places it for this model, scheduler and N."""
        try:
            m, unit = int(self.switch_level.value), self.switch_unit.value
            self._configure_switch_slider(unit)
            if unit == "level":
                self.switch_m.value = m
            else:  # raises for a level inherited from the initial noise, which has no birth time
                switch = composing.plan(PromptSchedule.switch("A", "B", Boundary.level(m)), self.model,
                                        self.steps.value, self.scheduler.value)[0]
                self.switch_value.value = switch.time(unit)
            self._switch_changed()
            self.status.value = html.escape(f"switch set to the birth of level {m}: {self.boundary().describe()}")
        except (ValueError, TypeError) as err:
            self._show_error(f"switch time: {err}")

    # ------------------------------------------------------------------ running
    def _plan_runs(self) -> dict[str, RunState]:
        """The runs a click on Run starts, each a :class:`~chromaviz.runs.RunSpec` checked and planned
        once (:meth:`RunSpec.check <chromaviz.runs.RunSpec.check>`, as :func:`chromaviz.sampling.sample`
        checks a run before its first step) for every prompt the run can give (raises ValueError/TypeError)."""
        settings = self.settings()
        boundary = self.boundary()
        first, switched = self._prompts(boundary)
        variants = [("A", settings, self.switch.value)]
        if self.side_by_side.value:
            if self.variant.value in VARIANTS:
                if switched is None:
                    raise ValueError(f"run B: {self.variant.value} needs the prompt switch, that is a conditional model "
                                     "and a plain prompt A (not a schedule): choose another variant for B")
                variants.append(("B", settings, self.variant.value == VARIANTS[0] and not self.switch.value))
            else:
                variants.append(("B", dataclasses.replace(settings, scheduler=self.variant.value.split(": ", 1)[1]),
                                 self.switch.value))
        planned = []
        for name, s, enabled in variants:
            active = switched if enabled and switched is not None else first
            notes, plan = [], None
            for schedule in (first, switched if enabled or name == "A" else None):
                if schedule is None:
                    continue
                with warnings.catch_warnings(record=True) as caught:  # a switch that never happens, say
                    warnings.simplefilter("always")
                    try:  # the UI's values are all the user's: none is refused as one the model ignores
                        plan = s.check(self.model, given=(), prompt=schedule, plan=plan)  # planned once
                    except (ValueError, TypeError) as err:
                        raise type(err)(f"run {name} ({s.scheduler}, {s.steps} steps): {err}") from None
                if schedule is active:  # noted for the prompt the run starts with
                    notes += [str(w.message) for w in caught if str(w.message) not in notes]
            planned.append((name, s, LivePrompt(first, switched, enabled, plan.num_evaluations), plan, notes))
        levels = spectral.levels_for(*self._grid(settings.size))
        runs = {name: RunState(name, s, prompt, plan, StepwiseComparison(self.model, method=self.method.value, levels=levels),
                               notes=notes)
                for name, s, prompt, plan, notes in planned}
        self._pending_references = {}
        if self.provenance.value and self.switch.value and switched is not None and self.second_prompt.value:
            # the provenance of switched run A: its bands against prompt A alone and prompt B alone, same seed
            plan = runs["A"].plan
            alone = {"A alone": first, "B alone": PromptSchedule.constant(self.second_prompt.value)}
            if "B" in runs and self.variant.value in VARIANTS and not runs["B"].prompt.enabled:
                del alone["A alone"]  # run B is prompt A alone
            for name, schedule in alone.items():
                s = settings if name == "A alone" else dataclasses.replace(settings, prompt=self.second_prompt.value)
                self._pending_references[name] = RunState(
                    name, s, LivePrompt(schedule, None, False, plan.num_evaluations),
                    s.check(self.model, given=(), prompt=schedule, plan=plan),
                    StepwiseComparison(self.model, method=self.method.value, levels=levels))
        return runs

    def run(self) -> None:
        """Start sampling (run A, and run B beside it if chosen) in the background.

        Bad settings, prompts or step plans are reported in the status line; the runs on screen
        stay until the new run has recorded its first step."""
        if self.job is not None and self.job.running:
            return
        try:
            runs = self._plan_runs()
        except (ValueError, TypeError) as err:
            self._show_error(str(err))
            return
        with self._lock:
            self._pending = runs
            states = [*runs.values(), *self._pending_references.values()]
            self.progress.max = sum(s.plan.num_evaluations for s in states)
            self.progress.value = 0
            self.progress.bar_style = "info"
            self.status.value = html.escape(" · note: ".join(["sampling…", *_notes(runs.values())]))
            self.rate.value = ""
            self.run_button.disabled, self.stop_button.disabled = True, False
            self.job = SamplingJob(self.model, states, self._on_step, self._on_done).start()
            self._refresher = threading.Thread(target=self._refresh_loop, args=(self.job,), name="chromaviz-view", daemon=True)
            self._refresher.start()

    def _grid(self, size: int) -> tuple[int, int]:
        """(h, w) of the samples of a size×size run: the latent grid for latent models."""
        return tuple(self.model.latent_size(size, size))

    def stop(self) -> None:
        """Stop after the current step; what was recorded stays scrubbable."""
        if self.job is not None:
            self.job.stop()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the current job ends and its last frames are drawn (for scripts, tests and
        executed notebooks)."""
        end = None if timeout is None else time.monotonic() + timeout
        for thread in (self.job.thread if self.job else None, self._refresher):
            if thread is not None:
                thread.join(None if end is None else max(0.0, end - time.monotonic()))

    def _on_step(self, state: RunState, rec: StepRecord, elapsed: float) -> None:
        """Called on the sampling thread: only note the step; the refresher draws it."""
        state.records.append(rec)
        state.stamps.append(time.perf_counter())
        state.elapsed = elapsed

    def _on_done(self, state: RunState, traj: Trajectory, error: str | None) -> None:
        """Called on the sampling thread when a run ends."""
        state.records = list(traj.steps)  # a step recorded as the run failed is in the trajectory only
        state.error = error
        state.trajectory = traj

    def _refresh_loop(self, job: SamplingJob) -> None:
        """Refresh the view at the first recorded step and then as often as :class:`RefreshPacer`
        allows (every ``preview_interval`` seconds at most) while ``job`` samples; then put every step
        on the scrubber, and the end.

        Notes
        -----
        Each refresh calls torch with one intra-op thread (the setting is restored after it): a
        frame's tensors are single images, far too small to split, and a second OpenMP team
        spin-waiting beside the sampler's costs the sampler its cores.
        """
        try:
            started = time.perf_counter()
            while job.running and not any(state.records for state in job.runs):
                job.join(0.005)  # the first step is drawn as soon as it is recorded, if affordable
            pacer = RefreshPacer(self.preview_interval, first_cost=self.refresh_cost)
            progressed = started
            while job.running:
                stamps = [state.stamps for state in job.runs]
                wait = pacer.wait(time.perf_counter(), stamps)
                if wait > 0:  # looked at again as steps come: the cost measured may allow one sooner
                    now = time.perf_counter()
                    if now - progressed >= PROGRESS_INTERVAL and now - started >= PROGRESS_AFTER:
                        self._show_progress(job.runs)  # the bar moves between frames
                        progressed = now
                    job.join(min(wait, max(self.preview_interval, 0.05)))
                    continue
                pacer.refreshed(time.perf_counter(), stamps)
                self._show_progress(job.runs)  # before the frame, which may take longer than the rest of the run
                with one_thread():
                    if self._refresh(final=False):
                        self.preview_updates += 1
            # the rate the refreshes kept: from the first to the last (None: fewer than two, a short run)
            starts = pacer.refreshes
            self.refresh_rate = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else None
            self.refresh_interval = pacer.interval
            self.refresh_cost = pacer.cost if pacer.cost is not None else self.refresh_cost
            with one_thread():
                self._refresh(final=True)
                self._show_provenance()
        except Exception as err:  # anything in drawing: stop the run, say so in the widget, never leave it stuck
            self.traceback = traceback.format_exc()
            job.stop()
            job.join()
            self._pending = None
            self._show_error(f"drawing the run failed, so it was stopped: {type(err).__name__}: {err}")
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.export_button.disabled = not any(s.shown for s in self.runs.values())

    def _refresh(self, final: bool) -> bool:
        """Bring the view up to date with the recorded steps; returns whether anything was drawn.
        The document's changes go to the browser as one message."""
        with self._lock, self._bokeh.batch():
            pending = self._pending
            if pending is not None:
                if not any(s.records for s in pending.values()):
                    if final:  # the new run ended before its first step: the old runs stay on screen
                        self._pending = None
                        errors = [f"run {s.name}: {s.error}" for s in pending.values() if s.error]
                        self._show_error(" · ".join(errors) or "the run ended before its first step")
                    return False
                self._start_showing(pending)
            drawn = False
            for state in self.runs.values():
                drawn |= self._draw(state, final=final and state.done)
            self._show_progress([*self.runs.values(), *self.references.values()])
            if final:
                self._finish()
            return drawn

    def _show_progress(self, states: Sequence[RunState]) -> None:
        """The progress bar and the rate line of the runs sampling (``states``, references included): two
        small widget values, cheap beside a frame, so they move between the paced refreshes."""
        self.progress.value = min(sum(len(s.records) for s in states), self.progress.max)
        runs = [s for s in states if s.name in RUN_NAMES] or list(states)
        latest = max(runs, key=lambda s: (len(s.records) > 0, s.name if s.records else ""))
        if latest.records:
            n = len(latest.records)
            self.rate.value = (f"run {latest.name}: {n}/{latest.plan.num_evaluations} · "
                               f"{n / max(latest.elapsed, 1e-9):.1f} steps/s")

    def _start_showing(self, runs: dict[str, RunState]) -> None:
        """The new runs have recorded a step: they replace the old ones on screen."""
        self._pending = None
        self.runs = runs
        self.references, self._pending_references = self._pending_references, {}
        levels = next(iter(runs.values())).comparison.levels
        if tuple(levels) != self.view.levels:
            self._build_document(levels)
            self.view_box.children = [self._bokeh]
        self.view.clear()
        self.view.arrange(tuple(runs))
        self.view.set_header(f"chromaviz explorer: {self.model.name}", self.method.value, tuple(runs))
        self.export_link.value = ""
        for name in self.view.runs:  # the planned theory, replaced by compare()'s when each run is complete
            if name in runs:
                self._show_theory(run=name)
            else:
                self.view.clear_theory(name)
        for name, title in self.view.titles.items():
            if name in runs:
                s = runs[name]
                title.text = "<b>" + html.escape(f"run {name}: {s.spec.scheduler}, {s.spec.steps} steps, "
                                                 f"seed {s.spec.seed}, prompt {s.prompt.active}") + "</b>"

    def _draw(self, state: RunState, final: bool) -> bool:
        """Draw the newest step ``state`` recorded since the last refresh (the scrubber gets one
        frame per refresh while the run goes); at the end, put every step on the scrubber and show
        the finished run, measured by :func:`chromaviz.analysis.compare`."""
        n, rows = len(state.records), self.view.count(state.name)
        if n > state.shown and not final:
            newest = state.records[n - 1]
            state.comparison.extend([newest])
            self.view.append_frames(state.name, build_frames([newest], self.model.to_rgb, self.view.levels))
        elif final and rows < n:
            if rows == state.shown:  # no step was skipped: the rest follow the rows there
                self.view.append_frames(state.name, build_frames(state.records[rows:], self.model.to_rgb, self.view.levels))
            else:
                frames = build_frames(state.records, self.model.to_rgb, self.view.levels)
                following = self.view.slider.value >= len(self.view) - 1
                self.view.set_frames(state.name, frames, follow=following, arrays=False)
        elif not final or not rows:
            return False
        state.shown = n
        comparison, steps = self._comparison(state)
        self.view.set_comparison(state.name, comparison, steps=steps)
        if final and state.name == "A":
            self.view.set_final_rapsd(rapsd(state.trajectory.sample)[1])
        if final and state.complete:  # else the planned theory stays
            self._show_theory(comparison, run=state.name)
        return True

    def _own_theory(self, run: str) -> bool:
        """Whether run ``run`` has a theory of its own: run A, and run B where it steps otherwise
        (another scheduler; the same theory is not drawn twice)."""
        return run == "A" or (run in self.runs and self.runs[run].spec.scheduler != self.runs["A"].spec.scheduler)

    def _show_theory(self, comparison: analysis.Comparison | None = None, run: str = "A") -> None:
        """Draw the theory curves of run ``run``: those of ``comparison`` (:func:`chromaviz.analysis.compare`
        of the complete run), else its planned theory over every planned step, on the chosen bands
        (:func:`chromaviz.analysis.planned_theory`: the curves compare() gives the run). A run B that
        steps as run A does draws none of its own."""
        if not self._own_theory(run):
            self.view.clear_theory(run)
            return
        state = self.runs[run]
        try:
            if comparison is not None:
                theory = comparison.theory
            else:
                theory = analysis.planned_theory(state.plan, self.model, *self._grid(state.spec.size),
                                                 method=self.method.value, levels=self.view.levels,
                                                 batch_size=state.spec.batch, prompt=state.prompt.active)  # with its band
        except Exception as err:  # the theory is a reference: without it the run still draws, and says why
            note = f"run {run}: no theory drawn ({type(err).__name__}: {err})"
            if note not in state.notes:
                state.notes.append(note)
                self.traceback = traceback.format_exc()
            self.view.clear_theory(run)
            return
        self.view.set_theory(theory.timesteps, theory.log_snr, theory.spectrum_aware, theory.m2_law,
                             expected=theory.expected, expected_std=theory.expected_std, run=run)

    def _show_provenance(self) -> None:
        """After a switched run A and the runs of each prompt alone: where each band of A's sample
        came from (:func:`chromaviz.apps.composing.band_provenance`), shown beside its bands."""
        alone_a = self.references.get("A alone", self.runs.get("B"))  # run B, where it is prompt A alone
        alone_b = self.references.get("B alone")
        a = self.runs.get("A")
        if a is None or alone_a is None or alone_b is None or not all(s.complete for s in (a, alone_a, alone_b)):
            return
        provenance = composing.band_provenance(a.trajectory, alone_a.trajectory, alone_b.trajectory, levels=self.view.levels)
        with self._lock, self._bokeh.batch():
            self.view.set_provenance("A", provenance)

    def _comparison(self, state: RunState) -> tuple[analysis.Comparison, list[int] | None]:
        """The measured signal fractions of ``state`` and the indices of the steps they are of (None:
        all, in order): :func:`chromaviz.analysis.compare` of the ended run, so that what is shown is
        what compare() and the report give; while it goes, the step-by-step form over the steps
        drawn so far (measuring every step as it comes would cost a fast sampler its speed)."""
        if state.done and state.shown == len(state.trajectory):
            return analysis.compare(state.trajectory, self.model, method=self.method.value, levels=self.view.levels,
                                    plan=state.plan), None
        return state.comparison.comparison(), [s.index for s in state.comparison.steps]

    def _finish(self) -> None:
        """Status, progress colour and buttons once the job has ended."""
        states = list(self.runs.values())
        errors = [f"run {s.name}: {s.error}" for s in states if s.error]
        if errors:
            kept = next(s for s in states if s.error)
            self._show_error(f"{' · '.join(errors)}. The {len(kept.records)} recorded steps stay scrubbable.")
        else:
            kept = ", ".join(f"run {s.name}: {s.trajectory.status} ({len(s.trajectory)} steps)" for s in states if s.done)
            self.status.value = html.escape(" · note: ".join([f"done · {kept}", *_notes(states)]))
            complete = all(s.complete for s in states)
            self.progress.bar_style = "success" if complete else "warning"

    def _remeasure(self) -> None:
        """Measure every run on screen again with the chosen band method, and draw the theory on
        those bands."""
        with self._lock, self._bokeh.batch():
            self.view.set_header(f"chromaviz explorer: {self.model.name}", self.method.value, tuple(self.runs) or ("A",))
            for state in self.runs.values():
                drawn = state.comparison.steps
                state.comparison = StepwiseComparison(self.model, method=self.method.value, levels=self.view.levels)
                state.comparison.extend(drawn)
                comparison, steps = self._comparison(state) if state.shown else (None, None)
                if comparison is not None:
                    self.view.set_comparison(state.name, comparison, steps=steps)
                self._show_theory(comparison if steps is None and state.complete else None, run=state.name)

    # ------------------------------------------------------------------ views
    def show_step(self, step: int) -> None:
        """Move the scrubber to recorded step ``step``; negative steps count from the newest, as
        Python indexes (−1 is the newest). The browser draws the frame.

        Raises
        ------
        TypeError, IndexError
            For a non-integer, or a step outside ``[−n, n)`` with n recorded steps.
        """
        n = len(self.view)
        step = _checks.integer("step", step)
        if not -n <= step < n:
            raise IndexError(f"step {step} is out of range: {n} recorded steps (0…{n - 1}, or −{n}…−1 from the newest)")
        self.view.show(step % n)

    def _guarded(self, action) -> None:
        try:
            action()
        except Exception as err:  # a control's callback: say so in the widget
            self._show_error(f"{type(err).__name__}: {err}")

    def _show_error(self, message: str) -> None:
        self.status.value = f'<span class="chromaviz-error" style="color:#b00020"><b>error:</b> {html.escape(message)}</span>'
        self.progress.bar_style = "danger"

    # ------------------------------------------------------------------ export
    def export_html(self, path: str | Path, run: str | None = None) -> Path:
        """Write the runs on screen as one standalone page whose scrubber works without a kernel.

        Parameters
        ----------
        path : str or Path
            Output ``.html`` file.
        run : {"A", "B"}, optional
            Only this run (its recorded steps, measured by :func:`chromaviz.analysis.compare`);
            default: this explorer's own document, runs A and B as on screen.

        Raises
        ------
        ValueError
            Before the first recorded step, or for a run that is not on screen.
        """
        if not any(s.shown for s in self.runs.values()):
            raise ValueError("there is no recorded step to export yet; click Run first")
        if run is not None:
            if run not in self.runs or self.runs[run].partial() is None:
                raise ValueError(f"run must be one of the runs on screen {sorted(self.runs)}, got {run!r}")
            return export_html(self.runs[run].partial(), self.model, path, method=self.method.value)
        with self._lock:
            text = page(self.view, title=f"chromaviz: {self.model.name}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def _export_clicked(self) -> None:
        """The Export button: write the runs on screen to ``chromaviz-<model>-<time>.html`` in the
        working folder, and offer the page for download (a data link: it works in an app with no file
        browser, too)."""
        name = f"chromaviz-{re.sub(r'[^A-Za-z0-9_.-]+', '-', self.model.name)}-{time.strftime('%Y%m%d-%H%M%S')}.html"
        path = self.last_export = self.export_html(Path.cwd() / name)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        self.export_link.value = (f'<a class="chromaviz-download" style="color:#0645ad;text-decoration:underline" '
                                  f'download="{html.escape(path.name)}" '
                                  f'href="data:text/html;base64,{data}">download {html.escape(path.name)}</a> '
                                  f'({path.stat().st_size / 1e6:.1f} MB, also written to the notebook\'s folder)')


class RefreshPacer:
    """Spaces the live view's refreshes by what they cost the run, as measured in its step times.

    The browser draws each refresh on the machine's cores and the kernel builds it beside the
    sampler, so neither side's own clock says what a refresh takes from the run. The run's steps
    do: the time the steps took beyond as many undisturbed steps is what watching has cost so far.
    A refresh is due once that cost, and the next refresh's (the mean so far), fit in ``budget``
    (:data:`WATCH_BUDGET`) of the time since the run's first step, and never sooner than ``least``
    seconds after the last: refreshes that cost little come every ``least`` seconds, costly ones
    rarely (at least every ``longest`` seconds). The first refresh (which also puts the new run on
    screen, the costliest) is due at once when nothing is known of its cost, else when
    ``first_cost`` fits in the budget: a short run on a slow machine is then drawn when it ends.

    The undisturbed step time is the lower quartile, over the gaps of :data:`QUIET_GAP` seconds or
    more from the run's first step or a refresh to the next, of the mean step time in
    the last third of the gap (its quiet end, once the previous refresh is drawn); for steps too
    slow for three in such a third, the faster quarter of all steps so far.

    Parameters
    ----------
    least : float
        Least seconds between refreshes (the explorer's ``preview_interval``).
    first_cost : float, optional
        Seconds a refresh cost the run before (the last run's :attr:`cost`); None: not known.
    budget : float
        Share by which the refreshes may lengthen the run.
    longest : float
        The most seconds between two refreshes, and from the run's first step to the first refresh.
    """

    def __init__(self, least: float, first_cost: float | None = None, budget: float = WATCH_BUDGET,
                 longest: float = LONGEST_INTERVAL) -> None:
        self.least, self.first_cost, self.budget, self.longest = least, first_cost, budget, max(longest, least)
        self.step: float | None = None
        """Undisturbed seconds per step (None until it could be measured)."""
        self.cost: float | None = None
        """Mean seconds one refresh has cost the run so far (None before it could be measured)."""
        self.spent = 0.0
        """Seconds the refreshes have cost the run so far."""
        self.refreshes: list[float] = []
        """When each refresh started (``time.perf_counter()`` seconds)."""
        self._quiet: list[float] = []

    @property
    def interval(self) -> float:
        """Seconds between refreshes at the cost measured so far (else ``first_cost``; ``least`` when
        neither is known)."""
        cost = self.cost if self.cost is not None else self.first_cost
        return self.least if cost is None else min(self.longest, max(self.least, cost / self.budget))

    def refreshed(self, at: float, stamps: Sequence[Sequence[float]]) -> None:
        """Note a refresh starting at ``at`` (``time.perf_counter()`` seconds); ``stamps``: when each
        run's steps ended, in order (each run's own list, growing)."""
        quiet = self._quiet_mean(at, stamps)
        if quiet is not None:
            self._quiet.append(quiet)
        self.refreshes.append(at)

    def wait(self, now: float, stamps: Sequence[Sequence[float]]) -> float:
        """Seconds from ``now`` until the next refresh is due (0: now). ``stamps`` as :meth:`refreshed`."""
        runs = [list(times) for times in stamps]  # the sampling thread appends meanwhile: copies
        begun = min((times[0] for times in runs if times), default=now)
        if not self.refreshes and self.first_cost is None:
            return 0.0
        last = self.refreshes[-1] if self.refreshes else begun
        quiet = self._quiet_mean(now, runs)
        means = sorted(self._quiet + ([quiet] if quiet is not None else []))
        if means:
            self.step = means[(len(means) - 1) // 4]
        elif now - last >= QUIET_GAP:  # steps too slow for three in a quiet third
            durations = sorted(b - a for times in runs for a, b in zip(times, times[1:]))
            self.step = durations[len(durations) // 4] if len(durations) >= 4 else self.step
        if not self.refreshes:
            due = begun + self.first_cost / self.budget
        elif self.step is None:
            due = last + self.longest
        else:
            since = self.refreshes[0]
            durations = [b - a for times in runs for a, b in zip(times, times[1:]) if b > since]
            self.spent = max(0.0, sum(durations) - len(durations) * self.step)
            self.cost = self.spent / len(self.refreshes)
            due = begun + (self.spent + self.cost) / self.budget
        due = min(max(due, last + self.least if self.refreshes else due), last + self.longest)
        return max(0.0, due - now)

    def _quiet_mean(self, now: float, stamps: Sequence[Sequence[float]]) -> float | None:
        """The mean step time in the last third of the gap from the last refresh (or the run's first
        step) to ``now``, if the gap is long enough and the third holds three steps or more."""
        runs = [list(times) for times in stamps]
        last = self.refreshes[-1] if self.refreshes else min((t[0] for t in runs if t), default=now)
        if now - last < QUIET_GAP:
            return None
        calm = now - (now - last) / 3
        quiet = []
        for times in runs:
            k = max(1, bisect.bisect_right(times, calm))
            quiet += [b - a for a, b in zip(times[k - 1:], times[k:]) if b <= now]
        return sum(quiet) / len(quiet) if len(quiet) >= 3 else None


def load_bokehjs(model) -> None:
    """Load BokehJS into the notebook page, from the package (never a CDN), for the components
    ``model``'s document uses; then, in a notebook, empty the output that carried it, so that saving
    the notebook does not save megabytes of JavaScript into it (the page keeps what it ran). In a
    Voilà app (its kernels have ``VOILA_BASE_URL`` set) the output stays: the app's page is built
    from the outputs, and is not saved.
    """
    import os

    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.io.notebook import JS_MIME_TYPE, LOAD_MIME_TYPE, _loading_js
    from bokeh.resources import INLINE
    from IPython.display import display

    if model.document is None:
        from bokeh.document import Document

        Document().add_root(model)
    bundle = bundle_for_objs_and_resources([model.document], INLINE)
    outputs = {JS_MIME_TYPE: _loading_js(bundle, None, 5000, register_mime=True),
               LOAD_MIME_TYPE: _loading_js(bundle, None, 5000, register_mime=False)}
    handle = display(outputs, raw=True, display_id=True)
    if handle is not None and not any(key.startswith("VOILA_") for key in os.environ):
        handle.update({"text/plain": ""}, raw=True)


def _notes(states) -> list[str]:
    """The runs' planning notes (warnings), each once, named by run when there are two runs."""
    states = list(states)
    notes = {}
    for state in states:
        for note in state.notes:
            notes.setdefault(note, []).append(state.name)
    return [note if len(states) == 1 or len(names) == len(states) else f"run {'/'.join(names)}: {note}"
            for note, names in notes.items()]
