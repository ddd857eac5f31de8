"""The explorer driven from Python: clicks, live switch flips, stop, errors, export."""

import math
import re
import time

import numpy as np
import pytest
import torch

from chromaviz import GaussianPowerLaw, theory
from chromaviz.models import ExemplarMixture
from chromaviz.sampling.prompts import Boundary
from widgets import Explorer
from widgets.imaging import data_uri, png_bytes, sample_rgb


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


def wait_for(predicate, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def mixture():
    return ExemplarMixture(size=32)


def test_run_records_everything_and_fills_the_views(mixture):
    ex = Explorer(mixture, num_steps=12, size=32)
    ex.run_button.click()
    ex.wait(30)
    traj = ex.trajectories["A"]
    assert traj.status == "complete" and len(traj) == 12
    assert ex.status.value.startswith("done") and not ex.run_button.disabled and ex.stop_button.disabled
    assert ex.scrub.max == 11 and ex.progress.value == 12
    for img in (ex.panels["A"].x_t, ex.panels["A"].x0, ex.panels["A"].bands):
        assert img.value[:8] == b"\x89PNG\r\n\x1a\n"
    measured = ex.chroma.measured["A"].data
    assert len(measured["step"]) == 12
    expected = traj.signal_fractions(ex.levels, method="rings").numpy()
    np.testing.assert_allclose(measured["g0"], expected[:, 0])
    assert np.isfinite(ex.chroma.theory.data["sa0"]).all()  # filled from the samples' spectrum at the end


def test_scrubbing_shows_the_chosen_step_and_moves_the_cursor(mixture):
    ex = Explorer(mixture, num_steps=10, size=32)
    ex.run()
    ex.wait(30)
    ex.scrub.value = 3
    rec = ex.records["A"][3]
    assert f"step 4/10 · t = {rec.timestep:.1f}" in ex.panels["A"].caption.value
    assert ex.chroma.cursor.location == 3
    ex.coordinate.value = "log_snr"
    assert ex.chroma.cursor.location == pytest.approx(rec.log_snr)
    assert ex.chroma.fig.xaxis[0].axis_label == "log-SNR λ"
    np.testing.assert_allclose(ex.chroma.measured["A"].data["x"], ex.trajectories["A"].log_snr)


def test_stop_button_keeps_a_scrubbable_partial_run():
    ex = Explorer(Slow(GaussianPowerLaw(size=32), delay=0.05), num_steps=100, size=32)
    ex.run_button.click()
    wait_for(lambda: len(ex.records["A"]) >= 5)
    ex.stop_button.click()
    ex.wait(10)
    traj = ex.trajectories["A"]
    assert traj.status == "cancelled" and 5 <= len(traj) < 100
    assert "cancelled" in ex.status.value
    ex.scrub.value = 2
    assert "step 3/100" in ex.panels["A"].caption.value


def test_flipping_the_switch_mid_run_takes_effect_from_the_next_step(mixture):
    ex = Explorer(Slow(mixture, delay=0.04), prompt="cat", second_prompt="moon", num_steps=40, size=32)
    ex.switch_unit.value = "fraction"
    ex.switch_value.value = 0.0  # once switched on, B applies at once
    ex.run()
    wait_for(lambda: len(ex.records["A"]) >= 8)
    ex.switch.value = True
    flipped_after = len(ex.records["A"])
    ex.wait(30)
    prompts = ex.trajectories["A"].prompts
    first_b = prompts.index("moon")
    assert set(prompts[:first_b]) == {"cat"} and set(prompts[first_b:]) == {"moon"}
    assert flipped_after <= first_b <= flipped_after + 1  # the step under way keeps its prompt


def test_switch_from_theory_in_each_unit(mixture):
    ex = Explorer(mixture, num_steps=50, size=32)
    ex.switch_level.value = 4
    ex.switch_unit.value = "timestep"
    birth = theory.level_timings(mixture.schedule, [4])[0].birth_timestep
    assert ex.switch_value.value == pytest.approx(birth, abs=0.01) and 740 < birth < 750
    ex.switch_unit.value = "log_snr"
    assert ex.switch_value.value == pytest.approx(-2 * math.log(4), abs=1e-3)
    ex.switch_unit.value = "fraction"
    _, lam = mixture.schedule.visited(50, "default")
    first_born = int(np.nonzero(lam >= -2 * math.log(4))[0][0])
    assert Boundary.fraction(ex.switch_value.value).switch_index(50) == first_born
    ex.switch_unit.value = "level"
    assert ex.boundary() == Boundary.level(4)
    ex.switch_level.value = 32
    ex.switch_unit.value = "timestep"
    ex.from_theory.click()
    assert "inherited from the initial noise" in ex.status.value


def test_side_by_side_runs_share_the_seed_and_differ_by_the_switch(mixture):
    ex = Explorer(mixture, prompt="cat", second_prompt="moon", num_steps=10, size=32)
    ex.switch.value = True
    ex.switch_unit.value = "fraction"
    ex.switch_value.value = 0.5
    ex.side_by_side.value = True
    ex.run()
    ex.wait(30)
    a, b = ex.trajectories["A"], ex.trajectories["B"]
    assert a.prompts[-1] == "moon" and set(b.prompts) == {"cat"}
    assert torch.equal(a.steps[0].x_t, b.steps[0].x_t)  # same seed, same initial noise
    assert ex.panels["B"].widget.layout.display is None


def test_bad_prompt_is_shown_in_the_widget_not_raised(mixture):
    ex = Explorer(mixture, prompt="a dog", num_steps=5, size=32)
    ex.run_button.click()
    assert ex.job is None
    assert "error" in ex.status.value and "names none of the built-in photographs" in ex.status.value
    assert "astronaut" in ex.status.value and not ex.run_button.disabled


def test_nan_mid_run_is_reported_and_the_partial_run_stays_scrubbable():
    ex = Explorer(Slow(GaussianPowerLaw(size=32), delay=0.0, nan_from=6), num_steps=20, size=32)
    ex.run()
    ex.wait(30)
    traj = ex.trajectories["A"]
    assert traj.status == "failed" and len(traj) == 6
    assert re.search(r"NaN or infinity at step 6", ex.status.value)
    assert "6 recorded steps stay scrubbable" in ex.status.value
    assert not ex.run_button.disabled and ex.stop_button.disabled
    ex.scrub.value = 4
    assert "step 5/20" in ex.panels["A"].caption.value


def test_export_writes_a_page_with_every_frame(mixture, tmp_path):
    ex = Explorer(mixture, num_steps=8, size=32)
    with pytest.raises(ValueError, match="no recorded steps"):
        ex.export_html(tmp_path / "empty.html")
    ex.run()
    ex.wait(30)
    page = ex.export_html(tmp_path / "run.html").read_text()
    assert page.count("data:image/png;base64,") >= 3 * 8  # x_t, x̂0 and bands for every step
    step5 = ex.trajectories["A"].steps[5]
    assert data_uri(png_bytes(sample_rgb(step5.x0[0], mixture.to_rgb))) in page
    assert 'name":"scrubber"' in page.replace(" ", "") or '"scrubber"' in page
    assert "cdn.bokeh.org" not in page  # BokehJS is inline: the page works offline
