"""The explorer driven from Python: clicks, live switch flips, stop, errors, export, and the numbers
it shows against compare() and the report."""

import base64
import gzip
import io
import math
import re
import sys
import time

import bokeh
import numpy as np
import pytest
import torch
from PIL import Image

from chromaviz import GaussianPowerLaw, compare, sample, spectral, theory
from chromaviz.models import ExemplarMixture
from chromaviz.noise import plan_steps
from chromaviz.prompts import Boundary
from chromaviz.views.frames import build_frames, sample_rgb
from chromaviz.widgets import Explorer, export_html, run_page
from chromaviz.widgets.export import run_document
from chromaviz.widgets.worker import release_openmp_threads


def Slow(model, delay=0.03, nan_from=None):
    """The same model, but each call takes at least ``delay`` seconds (a stand-in for a big
    network), and returns NaN after ``nan_from`` calls if given."""
    base = type(model)

    class Slowed(base):
        def __call__(self, x_t, level, cond):
            time.sleep(delay)
            out = base.__call__(self, x_t, level, cond)
            self.calls += 1
            return out * float("nan") if nan_from is not None and self.calls > nan_from else out

    slowed = Slowed.__new__(Slowed)
    slowed.__dict__.update(model.__dict__)
    slowed.calls = 0
    return slowed


def BrokenPreview(model):
    """The same model, but its ``to_rgb`` raises (a bug in a model's preview)."""
    base = type(model)

    class Broken(base):
        def to_rgb(self, x):
            raise RuntimeError("preview decoder exploded")

    broken = Broken.__new__(Broken)
    broken.__dict__.update(model.__dict__)
    return broken


def wait_for(predicate, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def decoded(uri):
    """The RGB pixels of a data URI."""
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def mixture():
    return ExemplarMixture(size=32)


@pytest.fixture(scope="module")
def finished(mixture):
    ex = Explorer(mixture, num_steps=12, size=32)
    ex.run_button.click()
    ex.wait(60)
    return ex


def test_run_records_everything_and_fills_the_view(finished):
    ex = finished
    traj = ex.trajectories["A"]
    assert traj.status == "complete" and len(traj) == 12
    assert ex.status.value.startswith("done") and not ex.run_button.disabled and ex.stop_button.disabled
    assert len(ex.view) == 12 and ex.view.slider.end == 11 and ex.view.slider.value == 11  # followed the newest
    assert ex.progress.value == 12
    frame = ex.shown()
    for key in ("x_t", "x0", "bands"):
        assert frame[key].startswith("data:image/webp;base64,")
    assert frame["caption"].startswith("step 12/12")
    assert ex.preview_updates >= 0 and ex.runs["A"].shown == 12


def test_every_number_shown_equals_compare_and_the_report(finished, mixture):
    """The explorer's measured points, theory, spectra and captions for a finished run are what
    compare() and the report compute for the same trajectory."""
    ex = finished
    traj = ex.trajectories["A"]
    expected = compare(traj, mixture, levels=ex.levels)
    measured = ex.view.chroma.measured["A"].data
    for j in range(len(ex.levels)):
        np.testing.assert_allclose(measured[f"g{j}"], expected.measured[:, j], rtol=1e-12)
        np.testing.assert_allclose(ex.view.chroma.theory.data[f"sa{j}"], expected.spectrum_aware[:, j], rtol=1e-12)
        np.testing.assert_allclose(ex.view.chroma.theory.data[f"m2{j}"], expected.m2_law[:, j], rtol=1e-12)
    np.testing.assert_allclose(measured["timestep"], expected.timesteps)
    np.testing.assert_allclose(measured["log_snr"], expected.log_snr)
    rows = ex.view.frames["A"].data
    for i in (0, 5, 11):
        freqs, power = spectral.centred_rapsd(traj.steps[i].x0, dc=False)
        np.testing.assert_allclose(rows["f"][i], freqs, rtol=1e-6)
        np.testing.assert_allclose(rows["rapsd_x0"][i], power, rtol=1e-6)
        assert rows["floor"][i] == pytest.approx(math.exp(-traj.steps[i].log_snr))
        assert f"t = {traj.steps[i].timestep:.1f} · λ = {traj.steps[i].log_snr:+.2f}" in rows["caption"][i]
    np.testing.assert_allclose(ex.view.final.data["p"], spectral.centred_rapsd(traj.sample, dc=False)[1], rtol=1e-6)
    # The step plan the explorer planned is the run's.
    np.testing.assert_array_equal(ex.runs["A"].plan.timesteps, plan_steps(mixture.schedule, 12).timesteps)
    # The exported page of the same trajectory shows the same numbers.
    doc = run_document(traj, mixture)
    for key in ("caption", "step", "timestep", "log_snr", "floor"):
        assert list(doc.frames["A"].data[key]) == list(rows[key])
    for j in range(len(ex.levels)):
        np.testing.assert_allclose(doc.chroma.measured["A"].data[f"g{j}"], measured[f"g{j}"], rtol=1e-12)


def theory_shown(ex):
    """The theory the explorer draws: timesteps (S,), spectrum-aware and m² law (S, L)."""
    data = ex.view.chroma.theory.data
    columns = range(len(ex.levels))
    return (np.asarray(data["timestep"]), np.column_stack([data[f"sa{j}"] for j in columns]),
            np.column_stack([data[f"m2{j}"] for j in columns]))


def assert_theory_is(ex, comparison):
    timesteps, spectrum_aware, m2 = theory_shown(ex)
    np.testing.assert_allclose(timesteps, comparison.timesteps)
    np.testing.assert_allclose(spectrum_aware, comparison.spectrum_aware, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(m2, comparison.m2_law, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["rings", "pyramid"])
def test_the_theory_shown_is_compares_on_the_chosen_bands(method):
    """The explorer draws compare()'s theory for the band method chosen: planned, over every planned
    step, while a run goes and after it was stopped; when the method changes; and compare()'s of
    the complete run."""
    model = GaussianPowerLaw(size=32)
    steps, other = 30, {"rings": "pyramid", "pyramid": "rings"}[method]
    run = sample(model, num_inference_steps=steps, height=32, width=32, record=("x0",))
    expected, expected_other = (compare(run, model, method=m) for m in (method, other))
    assert np.nanmax(np.abs(expected.spectrum_aware - expected_other.spectrum_aware)) > 0.02  # the methods differ

    ex = Explorer(Slow(model, delay=0.03), num_steps=steps, size=32)
    ex.method.value = method
    ex.run()
    wait_for(lambda: len(theory_shown(ex)[0]) > 0)
    assert_theory_is(ex, expected)  # planned, while the run goes
    ex.stop()
    ex.wait(20)
    assert ex.trajectories["A"].status == "cancelled" and len(ex.trajectories["A"]) < steps
    assert_theory_is(ex, expected)  # planned, every step, for the stopped run
    ex.method.value = other
    assert_theory_is(ex, expected_other)
    ex.method.value = method

    ex.run()
    ex.wait(60)
    traj = ex.trajectories["A"]
    assert traj.status == "complete"
    assert_theory_is(ex, compare(traj, model, method=method, levels=ex.levels))
    assert_theory_is(ex, expected)
    ex.method.value = other
    assert_theory_is(ex, compare(traj, model, method=other, levels=ex.levels))


def test_frames_are_the_recorded_images(finished, mixture):
    ex = finished
    rec = ex.trajectories["A"].steps[5]
    ex.show_step(5)
    shown = decoded(ex.shown()["x0"]).astype(int)
    truth = sample_rgb(rec.x0[0], mixture.to_rgb).astype(int)
    assert shown.shape == truth.shape and np.abs(shown - truth).mean() < 6  # lossy WebP, same picture
    other = sample_rgb(ex.trajectories["A"].steps[0].x0[0], mixture.to_rgb).astype(int)
    assert np.abs(shown - other).mean() > 3 * np.abs(shown - truth).mean()


def test_show_step_indexes_like_python_and_refuses_the_rest(finished):
    ex = finished
    ex.show_step(3)
    assert ex.view.slider.value == 3 and ex.shown()["caption"].startswith("step 4/12")
    ex.show_step(-2)
    assert ex.view.slider.value == 10 and ex.shown()["caption"].startswith("step 11/12")
    for bad in (12, -13):
        with pytest.raises(IndexError, match=r"out of range: 12 recorded steps"):
            ex.show_step(bad)
    with pytest.raises(TypeError, match="step"):
        ex.show_step(1.5)
    ex.show_step(np.int64(2))
    assert ex.view.slider.value == 2


def test_bad_constructor_arguments_are_clear_errors(mixture):
    with pytest.raises(ValueError, match=r"scheduler must be one of .*'ddim'.*got 'bogus'"):
        Explorer(mixture, scheduler="bogus")
    with pytest.raises(ValueError, match=r"num_steps.*0"):
        Explorer(mixture, num_steps=0)
    with pytest.raises(ValueError, match=r"num_steps.*500"):
        Explorer(mixture, num_steps=500)
    with pytest.raises(TypeError, match="prompt"):
        Explorer(mixture, prompt=3)
    with pytest.raises(ValueError, match=r"seed .*9007199254740991"):  # was clamped to 2**63 − 1 without a word
        Explorer(mixture, seed=2**63)


def test_a_refresh_draws_the_newest_step_and_the_end_puts_every_step_on_the_scrubber(mixture):
    """Steps recorded faster than the refreshes: each refresh draws the newest one (a frame on the
    scrubber, measured at its own step); when the run ends, the scrubber holds every step, in
    order, each its own frame, measured as compare() measures the run."""
    ex = Explorer(mixture, num_steps=12, size=32)
    runs = ex._plan_runs()
    traj = sample(mixture, ex.prompt.value, num_inference_steps=12, height=32, width=32)
    ex._pending = runs
    for n in (5, 9):
        runs["A"].records[:] = traj.steps[:n]
        assert ex._refresh(final=False)
    assert not ex._refresh(final=False)  # nothing new: nothing drawn
    rows = ex.view.frames["A"].data
    assert [c.split(" ·")[0] for c in rows["caption"]] == ["step 5/12", "step 9/12"]
    assert all(uri.startswith("data:image/webp;base64,") for uri in rows["x0"])
    measured = ex.view.chroma.measured["A"].data
    assert list(measured["step"]) == [5.0, 9.0] and np.isfinite(measured["g0"]).all()  # counted as the captions count
    assert ex.view.slider.value == 1  # following the newest

    runs["A"].records[:] = traj.steps
    runs["A"].trajectory = traj
    ex._refresh(final=True)
    rows = ex.view.frames["A"].data
    assert len(rows["caption"]) == 12 and ex.view.slider.value == 11
    for i, rec in enumerate(traj.steps):  # every row is its step's frame
        assert rows["caption"][i] == build_frames([rec], mixture.to_rgb, ex.levels)[0].caption
        truth = sample_rgb(rec.x0[0], mixture.to_rgb).astype(int)
        assert np.abs(decoded(rows["x0"][i]).astype(int) - truth).mean() < 6
    np.testing.assert_allclose(ex.view.chroma.measured["A"].data["g0"], compare(traj, mixture, levels=ex.levels).measured[:, 0])
    assert list(ex.view.chroma.measured["A"].data["step"]) == list(range(1, 13))


def test_the_kernel_takes_no_echo_of_its_own_changes(finished):
    """jupyter_bokeh's frontend sends back what the kernel changed. The document's BokehJS drops
    those echoes (SYNCED_ONLY_JS, at document_ready; tested in the browser), and the kernel drops
    streamed columns from the browser, which streams nothing by itself: jupyter_bokeh's own handler
    would stream the frame into the kernel's copy a second time."""
    from jupyter_bokeh.widgets import BokehModel

    from chromaviz.widgets.live import SYNCED_ONLY_JS

    ex = finished
    src = ex.view.frames["A"]

    def echo():  # a streamed frame, as jupyter_bokeh's frontend sends it
        rows = {k: [[0.5, 0.25]] if k in ("f", "rapsd_x0", "rapsd_xt") else [v[-1]] for k, v in src.data.items()}
        return {"event": "jsevent", "kind": "ColumnsStreamed", "model": {"id": src.id}, "attr": "data", "rollover": None,
                "data": {"type": "map", "entries": [[k, v] for k, v in rows.items()]}}

    ex._bokeh._sync_model(ex._bokeh, echo(), [])
    assert len(src.data["caption"]) == 12
    try:
        BokehModel._sync_model(ex._bokeh, ex._bokeh, echo(), [])
        assert len(src.data["caption"]) == 13  # what the echo did before
    finally:
        src.data = {k: v[:12] for k, v in src.data.items()}
    value = ex.view.slider.value
    try:  # what the user did in the browser still arrives
        ex._bokeh._sync_model(ex._bokeh, {"event": "jsevent", "kind": "ModelChanged", "model": {"id": ex.view.slider.id},
                                          "attr": "value", "new": 3}, [])
        assert ex.view.slider.value == 3
    finally:
        ex.view.slider.value = value
    ready = ex.view.layout.document.callbacks.js_event_callbacks["document_ready"]
    assert [cb.code for cb in ready].count(SYNCED_ONLY_JS) == 1
    display_only = (ex.view.chroma.cursor, ex.view.chroma.theory, *ex.view.chroma.measured.values(), ex.view.rapsd.spectra,
                    ex.view.rapsd.floor)
    assert not any(model.syncable for model in display_only)


def test_starting_a_job_frees_the_starting_threads_openmp_team():
    """The notebook thread's idle OpenMP team is freed before the worker samples (GNU OpenMP,
    as torch's Linux wheels load it); elsewhere the call is a no-op that says so."""
    torch.ones(1024, 1024).add_(1)  # a parallel operation: this thread has a team now
    freed = release_openmp_threads()
    if sys.platform.startswith("linux") and torch.get_num_threads() > 1:
        assert freed
    assert torch.ones(1024, 1024).add_(1).sum().item() == 2 * 1024 * 1024  # torch goes on, with a new team


def test_stop_button_keeps_a_scrubbable_partial_run():
    ex = Explorer(Slow(GaussianPowerLaw(size=32), delay=0.05), num_steps=100, size=32)
    ex.run_button.click()
    wait_for(lambda: len(ex.job.runs[0].records) >= 5)
    ex.stop_button.click()
    ex.wait(20)
    traj = ex.trajectories["A"]
    assert traj.status == "cancelled" and 5 <= len(traj) < 100
    assert "cancelled" in ex.status.value and not ex.run_button.disabled
    assert len(ex.view) == len(traj)
    ex.show_step(2)
    assert ex.shown()["caption"].startswith("step 3/100")


def test_flipping_the_switch_mid_run_takes_effect_from_the_next_step(mixture):
    ex = Explorer(Slow(mixture, delay=0.04), prompt="cat", second_prompt="moon", num_steps=40, size=32)
    ex.switch_unit.value = "fraction"
    ex.switch_value.value = 0.0  # once switched on, B applies at once
    ex.run()
    wait_for(lambda: len(ex.job.runs[0].records) >= 8)
    ex.switch.value = True
    flipped_after = len(ex.job.runs[0].records)
    ex.wait(60)
    prompts = ex.trajectories["A"].prompts
    first_b = prompts.index("moon")
    assert set(prompts[:first_b]) == {"cat"} and set(prompts[first_b:]) == {"moon"}
    assert flipped_after <= first_b <= flipped_after + 1  # the step under way keeps its prompt


def test_the_explorers_runs_are_run_specs_planned_once(mixture, monkeypatch):
    """The explorer's settings are a RunSpec (its model, batch 1), and each run goes through the
    RunSpec API: checked for every prompt it can give and planned once, sampled with that plan, and
    compared with it (one set_timesteps per run, counted on the real scheduler class)."""
    from diffusers import DDIMScheduler

    from chromaviz.runs import RunSpec

    calls, runs = [], []
    set_timesteps, run = DDIMScheduler.set_timesteps, RunSpec.run

    def counted(self, *args, **kwargs):
        calls.append(args)
        return set_timesteps(self, *args, **kwargs)

    def spied(self, *args, **kwargs):
        runs.append((self, kwargs))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "set_timesteps", counted)
    monkeypatch.setattr(RunSpec, "run", spied)
    ex = Explorer(mixture, prompt="cat", second_prompt="moon", num_steps=6, size=32, seed=3)
    spec = ex.settings()
    assert spec == RunSpec(model=mixture, prompt="cat", steps=6, seed=3, size=32, batch=1)
    ex.switch.value = True
    ex.side_by_side.value = True  # run B: the switch flipped; each run can give prompt A and the switch to B
    ex.run()
    ex.wait(60)
    assert {n: s.trajectory.status for n, s in ex.runs.items()} == {"A": "complete", "B": "complete"}
    assert len(calls) == 2  # one plan per run: both prompts checked with it, sampled and compared with it
    # and prompt B alone, for the provenance of switched run A (run B is prompt A alone), on A's plan
    alone = ex.references["B alone"]
    assert list(ex.references) == ["B alone"] and alone.spec.prompt == "moon" and alone.plan is ex.runs["A"].plan
    assert [r[0] for r in runs] == [ex.runs["A"].spec, ex.runs["B"].spec, alone.spec]
    assert ex.runs["A"].spec == ex.runs["B"].spec == spec
    assert [r[1]["plan"] for r in runs] == [ex.runs["A"].plan, ex.runs["B"].plan, alone.plan]
    assert [r[1]["prompt"] for r in runs] == [ex.runs["A"].prompt, ex.runs["B"].prompt, alone.prompt]  # the live prompts
    assert ex.view.provenance["A"].visible and "where each band came from" in ex.view.provenance["A"].text
    assert ex.trajectories["A"].x0.shape[1] == 1  # batch 1, the explorer's default
    assert "moon" in ex.trajectories["A"].prompts and ex.trajectories["B"].prompts == ["cat"] * 6


def test_prompt_a_takes_a_prompt_schedule_as_sample_does(mixture):
    ex = Explorer(mixture, prompt="[cat:moon:0.6]", num_steps=10, size=32)
    ex.run()
    ex.wait(60)
    assert ex.trajectories["A"].prompts == sample(mixture, "[cat:moon:0.6]", num_inference_steps=10).prompts
    ex.switch.value = True  # a schedule in A and the switch: refused in the widget
    ex.run()
    assert "already a prompt schedule" in ex.status.value and ex.job.thread.is_alive() is False
    ex.prompt.value = "[cat:moon"
    ex.switch.value = False
    ex.run()
    assert "error" in ex.status.value and not ex.run_button.disabled


def test_a_planning_warning_is_a_note_in_the_status_line(mixture):
    """A switch already crossed at the first step (level 64 on a 32-pixel image) warns in sample();
    in the explorer the note stays in the widget, not in the notebook's output."""
    import warnings

    ex = Explorer(mixture, prompt="[cat:moon:m=64]", num_steps=6, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex.run()
    assert "note: the switch at birth of level 64" in ex.status.value
    ex.wait(60)
    assert ex.status.value.startswith("done") and "the prompt before it is never used" in ex.status.value
    ex.prompt.value = "cat"
    ex.run()
    ex.wait(60)
    assert "note" not in ex.status.value


def test_switch_from_theory_in_each_unit(mixture):
    ex = Explorer(mixture, num_steps=50, size=32)
    ex.switch_level.value = 4
    ex.switch_unit.value = "timestep"
    birth = theory.level_timings(mixture.schedule, [4])[0].birth_timestep
    assert ex.switch_value.value == pytest.approx(birth, abs=0.01) and 740 < birth < 750
    ex.switch_unit.value = "log_snr"
    assert ex.switch_value.value == pytest.approx(-2 * math.log(4), abs=1e-3)
    ex.switch_unit.value = "fraction"
    lam = plan_steps(mixture.schedule, 50).log_snr
    first_born = int(np.nonzero(lam >= -2 * math.log(4))[0][0])
    assert Boundary.fraction(ex.switch_value.value).switch_index(50) == first_born
    ex.switch_unit.value = "level"
    assert ex.boundary() == Boundary.level(4)
    ex.switch_level.value = 32
    ex.switch_unit.value = "timestep"
    ex.from_theory.click()
    assert "inherited from the initial noise" in ex.status.value


def test_side_by_side_runs_share_the_seed_and_the_export_shows_both(mixture, tmp_path):
    ex = Explorer(mixture, prompt="cat", second_prompt="moon", num_steps=10, size=32)
    ex.switch.value = True
    ex.switch_unit.value = "fraction"
    ex.switch_value.value = 0.5
    ex.side_by_side.value = True
    ex.run()
    ex.wait(60)
    a, b = ex.trajectories["A"], ex.trajectories["B"]
    assert a.prompts[-1] == "moon" and set(b.prompts) == {"cat"}
    assert torch.equal(a.steps[0].x_t, b.steps[0].x_t)  # same seed, same initial noise
    assert ex.view.titles["B"].visible and len(ex.view.frames["B"].data["caption"]) == 10
    page = ex.export_html(tmp_path / "ab.html").read_text()
    assert page.count("data:image/webp;base64,") >= 2 * 3 * 10  # both runs, every frame
    assert "prompt 'moon'" in page and "frames-B" in page


def test_run_b_with_another_scheduler_has_its_own_theory_and_sits_beside_a(mixture):
    ex = Explorer(mixture, prompt="cat", second_prompt="moon", num_steps=8, size=32)
    ex.side_by_side.value = True
    ex.variant.value = "scheduler: euler"
    ex.run()
    ex.wait(60)
    b = compare(ex.trajectories["B"], mixture, levels=ex.levels)
    theory_b = ex.view.chroma.theories["B"].data
    np.testing.assert_allclose(theory_b["sa0"], b.spectrum_aware[:, 0], rtol=1e-12)  # B's own, drawn paler
    assert [c.name for c in ex.view.main.children[:2]] == ["run-A", "run-B"]  # side by side, one scrubber
    assert ex.view.layout.children[0] is ex.view.header and ex.view.header not in ex.view.plots.children  # above both
    ex.variant.value = "prompt switch flipped"  # B steps as A does: one theory, drawn once
    ex.run()
    ex.wait(60)
    assert not ex.view.chroma.theories["B"].data["sa0"]


def test_a_switched_run_shows_where_each_band_came_from(mixture):
    from chromaviz.apps.composing import band_provenance

    ex = Explorer(mixture, prompt="cat", second_prompt="moon", num_steps=8, size=32)
    ex.switch.value = True
    ex.run()
    ex.wait(60)
    alone_a, alone_b = ex.references["A alone"].trajectory, ex.references["B alone"].trajectory
    assert set(alone_a.prompts) == {"cat"} and set(alone_b.prompts) == {"moon"}  # same seed, each prompt alone
    expected = band_provenance(ex.trajectories["A"], alone_a, alone_b, levels=ex.levels)
    text = ex.view.provenance["A"].text
    assert ex.view.provenance["A"].visible and all(f"{w:+.2f}" in text for w in expected.weight_a)
    assert ex.progress.value == ex.progress.max  # the references count in the progress
    ex.switch.value = False  # no switch: nothing to trace, and nothing more sampled
    ex.run()
    ex.wait(60)
    assert not ex.references and not ex.view.provenance["A"].visible


def test_the_export_button_writes_the_page_and_offers_it(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not finished.export_button.disabled
    finished.export_button.click()
    path = finished.last_export
    assert path.exists() and path.parent == tmp_path and "chromaviz-run" in path.read_text()
    link = finished.export_link.value
    assert f'download="{path.name}"' in link and base64.b64encode(path.read_bytes()).decode() in link


def test_the_live_view_refreshes_as_often_as_its_cost_allows(finished, mixture):
    from chromaviz.widgets.explorer import WATCH_BUDGET

    assert 0 < WATCH_BUDGET < 0.1  # under the 1.10× the live view may cost the run
    assert finished.refresh_interval >= finished.preview_interval
    assert finished.refresh_rate is None or finished.refresh_rate <= 1 / finished.preview_interval * 1.05
    slow = Explorer(Slow(mixture, delay=0.03), num_steps=60, size=32)  # a run of about 2 s: several refreshes
    slow.run()
    slow.wait(60)
    assert slow.preview_updates >= 2 and slow.refresh_rate is not None and 0 < slow.refresh_rate <= 10.5
    assert slow.refresh_interval >= slow.preview_interval
    assert len(slow.runs["A"].stamps) == len(slow.runs["A"].records)


def test_the_rarely_changed_settings_are_folded_away_and_one_run_has_its_header_beside_it(mixture):
    ex = Explorer(mixture, num_steps=8, size=32)
    assert ex.more.layout.display == "none"  # at first: the prompts and the switch only
    for control in (ex.steps, ex.scheduler, ex.guidance, ex.seed, ex.size, ex.side_by_side, ex.variant, ex.method):
        assert any(control in row.children for row in ex.more.children)
    ex.more_button.value = True
    assert ex.more.layout.display is None
    ex.more_button.value = False
    assert ex.more.layout.display == "none"
    assert ex.view.plots.children[0] is ex.view.header and ex.view.header not in ex.view.layout.children


def test_a_refresh_is_due_when_what_the_refreshes_cost_the_run_fits_the_budget():
    """Steps of 10 ms, each refresh making the next 4 steps slower by ``cost`` seconds in all: the
    refreshes come every ``cost / budget`` seconds (every ``least`` seconds when they cost nothing,
    every ``longest`` when they cost more than that allows), and what they cost stays in the budget."""
    from chromaviz.widgets.explorer import LONGEST_INTERVAL, RefreshPacer

    for cost, every in ((0.020, 0.020 / 0.08), (0.0, 0.1), (0.3, LONGEST_INTERVAL)):
        pacer = RefreshPacer(0.1, budget=0.08)
        t, stamps, owed = 0.0, [], 0
        while t < 20:
            if pacer.wait(t, [stamps]) == 0:
                pacer.refreshed(t, [stamps])
                owed = 4
            t += 0.010 + (cost / 4 if owed else 0.0)
            owed = max(0, owed - 1)
            stamps.append(t)
        starts = pacer.refreshes
        assert pacer.step == pytest.approx(0.010, rel=0.01)
        assert (starts[-1] - starts[0]) / (len(starts) - 1) == pytest.approx(every, rel=0.15), (cost, len(starts))
        assert pacer.interval == pytest.approx(every, rel=0.05)
        if cost < 0.3:
            assert pacer.spent <= 0.08 * (t - starts[0]) + cost  # in the budget, but for the refresh in hand
    assert RefreshPacer(0.2).wait(5.0, [[]]) == 0  # the first refresh is due at once when its cost is not known
    steps = [0.01 * k for k in range(1, 51)]  # a run's first 50 steps, from its start
    assert RefreshPacer(0.1, first_cost=0.2, budget=0.08).wait(0.5, [steps]) == pytest.approx(0.01 + 2.5 - 0.5)
    assert RefreshPacer(0.1, first_cost=1.0, budget=0.08).wait(0.5, [steps]) == pytest.approx(0.01 + LONGEST_INTERVAL - 0.5)
    assert RefreshPacer(0.1, first_cost=0.0).wait(0.5, [steps]) == 0


def test_the_plot_fits_values_above_one_and_labels_the_bands(finished):
    ex = finished
    chroma = ex.view.chroma
    assert "m = 1" in ex.view.panels["A"].text and all(f"m = {m}" in ex.view.panels["A"].text for m in ex.levels)
    keys = {item.label["value"] for item in chroma.fig.legend[0].items}
    assert {"m² law", "latest each band can form", "replay (consistency check)", "measured, run A",
            "measured, run B"} <= keys and any(k.startswith("expected") for k in keys)
    levels = len(ex.levels)
    chroma.set_measured("B", [900.0, 500.0], [-3.0, 0.0], np.full((2, levels), 1.4), coordinate="step")
    assert chroma.fig.y_range.end >= 1.45  # an overshoot stays in view
    chroma.clear_measured("B")
    assert chroma.fig.y_range.end < 1.45 + 0.01 or chroma.fig.y_range.end >= 1.05
    chroma.set_theory(np.linspace(999, 1, 5), np.linspace(-8, 8, 5), np.zeros((5, levels)), np.zeros((5, levels)),
                      coordinate="timestep", run="B")
    assert chroma.fig.x_range.start > chroma.fig.x_range.end  # timesteps: noisy (high t) on the left
    chroma.clear_theory("B")
    ex._show_theory()  # back as it was


def test_a_batch_that_replaces_then_streams_sends_each_row_once():
    from bokeh.document import Document
    from bokeh.models import ColumnDataSource
    from bokeh.protocol import Protocol

    from chromaviz.widgets.live import superseded

    src, other = ColumnDataSource({"a": [0]}), ColumnDataSource({"a": [0]})
    doc = Document()
    doc.add_root(src)
    doc.add_root(other)
    events = []
    doc.callbacks.on_change(events.append)
    other.stream({"a": [1]})  # streamed, no replacement: kept
    src.data = {"a": []}  # cleared for a new run, then its first frame streamed: as the explorer's first refresh
    src.stream({"a": [1]})
    sent = Protocol().create("PATCH-DOC", superseded(events)).content
    kinds = [e["kind"] for e in sent["events"]]
    assert kinds == ["ColumnsStreamed", "ColumnDataChanged"]  # the replacement carries the row, once


def test_bad_prompt_is_shown_in_the_widget_not_raised(mixture):
    ex = Explorer(mixture, prompt="a dog", num_steps=5, size=32)
    ex.run_button.click()
    assert ex.job is None
    assert "error" in ex.status.value and "names none of the built-in photographs" in ex.status.value
    assert "astronaut" in ex.status.value and not ex.run_button.disabled


def test_a_plan_diffusers_cannot_step_is_an_error_and_the_previous_run_stays():
    ex = Explorer(GaussianPowerLaw(schedule="squaredcos_cap_v2", size=32), num_steps=12, size=32)
    ex.run()
    ex.wait(60)
    before = ex.trajectories["A"]
    ex.scheduler.value = "dpmsolver++_karras"  # Karras sigmas of the cosine schedule: diffusers cannot step 50 of them
    ex.steps.value = 50
    ex.run_button.click()
    assert "error" in ex.status.value and "run A (dpmsolver++_karras, 50 steps)" in ex.status.value
    assert not ex.run_button.disabled and ex.stop_button.disabled
    assert ex.trajectories["A"] is before and len(ex.view) == 12  # still on screen, still scrubbable
    ex.show_step(4)
    assert ex.shown()["caption"].startswith("step 5/12")


def test_nan_mid_run_is_reported_and_the_partial_run_stays_scrubbable():
    ex = Explorer(Slow(GaussianPowerLaw(size=32), delay=0.0, nan_from=6), num_steps=20, size=32)
    ex.run()
    ex.wait(60)
    traj = ex.trajectories["A"]
    assert traj.status == "failed" and len(traj) == 6
    assert re.search(r"NaN or infinity at step 6", ex.status.value)
    assert "6 recorded steps stay scrubbable" in ex.status.value
    assert not ex.run_button.disabled and ex.stop_button.disabled
    ex.show_step(4)
    assert ex.shown()["caption"].startswith("step 5/20")


def test_a_failing_preview_is_an_error_in_the_widget(mixture):
    ex = Explorer(BrokenPreview(mixture), num_steps=30, size=32)
    ex.run()
    ex.wait(60)
    assert "error" in ex.status.value and "preview decoder exploded" in ex.status.value
    assert not ex.run_button.disabled and ex.stop_button.disabled and not ex.job.running


def test_export_writes_a_standalone_page_with_every_frame(finished, mixture, tmp_path):
    empty = Explorer(mixture, num_steps=8, size=32)
    with pytest.raises(ValueError, match="no recorded step"):
        empty.export_html(tmp_path / "empty.html")
    page = finished.export_html(tmp_path / "run.html").read_text()
    assert finished.export_html(tmp_path / "a.html", run="A").read_text().count("data:image/webp;base64,") >= 3 * 12
    with pytest.raises(ValueError, match="runs on screen"):
        finished.export_html(tmp_path / "b.html", run="B")
    assert page.count("data:image/webp;base64,") >= 3 * 12  # x_t, x̂0 and bands for every step
    assert '"scrubber"' in page and "cdn.bokeh.org" not in page  # BokehJS is inline: works offline
    packed = re.search(r'<script type="application/gzip;base64" id="chromaviz-bokehjs">([^<]*)</script>', page).group(1)
    bokehjs = gzip.decompress(base64.b64decode(packed)).decode()
    assert bokeh.__version__ in bokehjs and len(page) < len(bokehjs)  # BokehJS, compressed: the page is smaller
    traj = finished.trajectories["A"]
    text = run_page(traj, mixture)
    assert text.lstrip().lower().startswith("<!doctype html>") and text.count("data:image/webp;base64,") >= 3 * 12
    path = export_html(traj, mixture, tmp_path / "same.html", method="pyramid")
    assert path.read_text().count("data:image/webp;base64,") >= 3 * 12
    with pytest.raises(TypeError, match="Trajectory"):
        run_page("run.safetensors", mixture)


def test_frames_refuse_a_run_without_x0(mixture):
    traj = sample(mixture, "cat", num_inference_steps=3, record=("x_t",))
    with pytest.raises(ValueError, match="x0"):
        build_frames(traj.steps, mixture.to_rgb, (1, 2))
    with pytest.raises(ValueError, match="x0"):
        run_page(traj, mixture)


def test_frames_of_a_finished_run_built_side_by_side_are_those_built_one_by_one(mixture):
    """A finished run's frames and their images are built on every usable core at once (frame_map):
    the same frames, in order, as built one at a time beside a sampler."""
    from chromaviz.widgets.document import frame_rows

    traj = sample(mixture, "cat", num_inference_steps=6, batch_size=2)
    together = build_frames(traj.steps, mixture.to_rgb, (1, 2, 4))
    alone = [build_frames([rec], mixture.to_rgb, (1, 2, 4))[0] for rec in traj.steps]
    assert [f.index for f in together] == list(range(6))
    for a, b in zip(together, alone):
        for name in ("x_t", "x0", "bands", "rapsd_x0", "rapsd_xt"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    rows = frame_rows(together)
    assert rows["x0"] == [frame_rows([f])["x0"][0] for f in alone]
    assert rows["caption"] == [f.caption for f in alone]


def test_sizes_the_pyramid_cannot_split_get_the_rings_row_alone(tmp_path):
    """A 30×30 run has levels (1, 2, 4), and 30 is not a multiple of 4: its frames, the exported
    page and the explorer show the FFT rings only, instead of failing after sampling."""
    model = GaussianPowerLaw(size=30)
    traj = sample(model, num_inference_steps=4, batch_size=2, height=30, width=30)
    levels = spectral.levels_for(30, 30)
    assert levels == (1, 2, 4)
    frames = build_frames(traj.steps, model.to_rgb, levels)
    assert frames[0].bands.shape == (30, 3 * (30 + 2) - 2, 3)
    assert build_frames(traj.steps, model.to_rgb, (1, 2))[0].bands.shape == (2 * 30 + 2, 2 * (30 + 2) - 2, 3)
    assert "chromaviz-caption" in run_page(traj, model)
    ex = Explorer(model, num_steps=4, size=30)
    ex.run()
    ex.wait(60)
    assert ex.runs["A"].error is None and ex.trajectories["A"].status == "complete" and len(ex.view) == 4


def test_a_frame_is_plain_data_from_its_step(mixture):
    traj = sample(mixture, "cat", num_inference_steps=6)
    frames = build_frames(traj.steps, mixture.to_rgb, (1, 2, 4))
    f = frames[2]
    rec = traj.steps[2]
    assert f.x0.dtype == np.uint8 and f.x0.shape == (32, 32, 3) and f.x_t.shape == (32, 32, 3)
    assert f.bands.shape == (2 * 32 + 2, 3 * (32 + 2) - 2, 3)  # pyramid above rings, three levels
    assert f.caption == f"step 3/6 · t = {rec.timestep:.1f} · λ = {rec.log_snr:+.2f} · prompt 'cat'"
    assert (f.position("step"), f.position("timestep"), f.position("log_snr")) == (3.0, rec.timestep, rec.log_snr)
    assert f.noise_floor == pytest.approx(math.exp(-rec.log_snr))
    np.testing.assert_allclose(f.rapsd_xt, spectral.centred_rapsd(rec.x_t / rec.alpha, dc=False)[1], rtol=1e-6)
    with pytest.raises(ValueError, match="coordinate"):
        f.position("sigma")
    with pytest.raises(ValueError, match="batch index"):
        build_frames(traj.steps, mixture.to_rgb, (1, 2), sample=1)
    from chromaviz.views.frames import encode_image

    assert encode_image(f.x0, "png").startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match="format"):
        encode_image(f.x0, "gif")


def test_prompt_a_takes_and_terms_as_sample_does(mixture):
    """`cat AND moon:0.5` in prompt A is checked term by term (as sample() does) and the run records it."""
    ex = Explorer(mixture, prompt="cat AND moon:0.5", num_steps=4, size=32)
    ex.run()
    ex.wait(60)
    traj = ex.trajectories["A"]
    assert traj.status == "complete", ex.status.value
    assert traj.prompts == sample(mixture, "cat AND moon:0.5", num_inference_steps=4).prompts
