"""Tests for chromaviz.prompts: prompt schedules, A1111 prompt editing, λ/level boundaries."""

from __future__ import annotations

import contextlib
import json
import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chromaviz.noise.levels import BIRTH_TOLERANCE
from chromaviz.prompts import (
    UNITS, Boundary, PromptSchedule, PromptSwitchWarning, Segment, join_and, plain_text, split_and,
)

# A synthetic 50-step run: t from 999 to 0, λ from −6 to 7.
N_RUN = 50
TIMESTEPS = [999 - 999 * k / (N_RUN - 1) for k in range(N_RUN)]
LOG_SNRS = [-6 + 13 * k / (N_RUN - 1) for k in range(N_RUN)]


@contextlib.contextmanager
def lost_switch(expected: bool):
    """A PromptSwitchWarning where ``expected`` (a switch that never happens, or happened before the
    first step), and none where not."""
    if expected:
        with pytest.warns(PromptSwitchWarning):
            yield
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PromptSwitchWarning)
            yield


def steps_only(schedule: PromptSchedule, n: int) -> list[str | None]:
    """Prompts for an n-step run whose timesteps/λ do not matter (fraction/step boundaries)."""
    return schedule.prompts_for_steps(list(range(n - 1, -1, -1)))


def first_index(prompts: list, value) -> int:
    return prompts.index(value) if value in prompts else len(prompts)


# ---------------------------------------------------------------------- reference A1111 rule
def a1111_reference(groups: list[tuple[str, str, str]], n: int) -> list[list[str]]:
    """Transcription of AUTOMATIC1111's algorithm (modules/prompt_parser.py, default scheduling).

    ``collect_steps``: each ``when`` string gives ``v = float(s) * steps`` if it contains ``"."``
    else ``float(s)``; ``when = min(steps, int(v))``; switch steps = sorted(set([steps] + those ≥ 1)).
    ``at_step(t)``: a group shows ``before`` if ``t <= when`` else ``after``.
    ``reconstruct_cond_batch(current_step)``: first entry with ``current_step <= end_at_step``.
    Returns, per step, the list of the groups' chosen texts.
    """
    whens = []
    for _, _, s in groups:
        v = float(s)
        v = v * n if "." in s else v
        whens.append(min(n, int(v)))
    entries = sorted({n, *[w for w in whens if w >= 1]})
    out = []
    for step in range(n):
        t = next(e for e in entries if step <= e)
        out.append([b if t <= w else a for (b, a, _), w in zip(groups, whens)])
    return out


# ---------------------------------------------------------------------- Boundary
@pytest.mark.parametrize(
    "text, value, unit",
    [
        ("0.6", 0.6, "fraction"),
        (".25", 0.25, "fraction"),
        ("0.", 0.0, "fraction"),
        ("1.0", 1.0, "fraction"),
        ("0", 0, "step"),
        ("12", 12, "step"),
        (" 7 ", 7, "step"),
        ("t=745", 745.0, "timestep"),
        ("timestep = 12.5", 12.5, "timestep"),
        ("logsnr=-1.5", -1.5, "log_snr"),
        ("log_snr=2", 2.0, "log_snr"),
        ("λ=-1.5", -1.5, "log_snr"),
        ("lambda=0.25", 0.25, "log_snr"),
        ("m=4", 4, "level"),
        ("level=1", 1, "level"),
        ("M=8", 8, "level"),
    ],
)
def test_boundary_parse_all_forms_and_round_trip(text, value, unit):
    b = Boundary.parse(text)
    assert b == Boundary(value, unit)
    assert b.unit == unit and b.value == value
    assert Boundary.parse(b.token()) == b
    assert Boundary.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def test_boundary_normalises_and_constructors():
    assert Boundary(12.0, "step").value == 12 and isinstance(Boundary(12.0, "step").value, int)
    assert isinstance(Boundary(1, "fraction").value, float)
    assert Boundary.fraction(0.5) == Boundary(0.5, "fraction")
    assert Boundary.step(3) == Boundary(3, "step")
    assert Boundary.timestep(500) == Boundary(500.0, "timestep")
    assert Boundary.log_snr(-1) == Boundary(-1.0, "log_snr")
    assert Boundary.level(4) == Boundary(4, "level")
    assert Boundary.level(4).log_snr_threshold == pytest.approx(-2 * math.log(4))
    assert Boundary.step(3).log_snr_threshold is None
    tiny = Boundary.fraction(1e-7)
    assert Boundary.parse(tiny.token()) == tiny


def test_boundary_describe():
    assert Boundary.level(4).describe() == "birth of level 4 (λ ≥ −2.77)"
    assert Boundary.log_snr(-1.5).describe() == "λ ≥ −1.50"
    assert Boundary.timestep(745).describe() == "t ≤ 745"
    assert Boundary.fraction(0.6).describe().startswith("60% of steps")
    assert Boundary.step(12).describe().startswith("step 12")


@pytest.mark.parametrize(
    "value, unit, match",
    [
        (0.5, "seconds", r"unknown boundary unit 'seconds'.*fraction, step, timestep, log_snr, level"),
        (1.5, "fraction", r"fraction boundary must lie in \[0, 1\]"),
        (-0.1, "fraction", r"fraction boundary must lie in \[0, 1\]"),
        (2.5, "step", r"non-negative integer"),
        (-1, "step", r"non-negative integer"),
        (3, "level", r"power of two"),
        (0, "level", r"power of two"),
        (-1.0, "timestep", r"≥ 0"),
        (math.inf, "log_snr", r"finite"),
        (math.nan, "timestep", r"finite"),
    ],
)
def test_boundary_validation(value, unit, match):
    with pytest.raises(ValueError, match=match):
        Boundary(value, unit)


def test_boundary_value_type():
    with pytest.raises(TypeError):
        Boundary("3", "step")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Boundary(True, "step")


def test_units_constant():
    assert UNITS == ("fraction", "step", "timestep", "log_snr", "level")


def test_crossed_needs_the_coordinate_of_its_unit():
    with pytest.raises(ValueError, match="timestep"):
        Boundary.timestep(500).crossed(0, 10)
    with pytest.raises(ValueError, match="log SNR"):
        Boundary.level(4).crossed(0, 10, 999.0)
    with pytest.raises(ValueError, match="log SNR"):
        PromptSchedule.parse("[a:b:m=2]").prompts_for_steps(TIMESTEPS)


def test_switch_index_a1111():
    # first prompt for steps 0..W, second from W+1; W < 1 → second throughout
    assert Boundary.fraction(0.5).switch_index(20) == 11
    assert Boundary.fraction(0.6).switch_index(20) == 13
    assert Boundary.fraction(0.04).switch_index(20) == 0  # int(0.8) = 0
    assert Boundary.fraction(0.0).switch_index(20) == 0
    assert Boundary.fraction(1.0).switch_index(20) == 21  # never
    assert Boundary.step(0).switch_index(20) == 0
    assert Boundary.step(1).switch_index(20) == 2
    assert Boundary.step(25).switch_index(20) == 21
    with pytest.raises(ValueError):
        Boundary.level(2).switch_index(20)


# ---------------------------------------------------------------------- A1111 semantics
A = "a photo of a cat on grass"
B = "a photo of a dog on grass"


@pytest.mark.parametrize(
    "when, n_first",
    [
        ("0.5", 11),  # W = 10: steps 0..10 keep the first prompt
        ("0.6", 13),  # W = int(0.6·20) = 12
        ("0.25", 6),  # W = 5
        ("0.99", 20),  # W = 19: never switches within 20 steps
        ("1.0", 20),
        ("0.04", 0),  # W = int(0.8) = 0 → second prompt throughout
        ("0.0", 0),
        ("0", 0),
        ("1", 2),  # W = 1: steps 0 and 1
        ("5", 6),
        ("19", 20),
        ("25", 20),  # clipped to the step count
    ],
)
def test_a1111_switch_20_steps(when, n_first):
    s = PromptSchedule.parse(f"a photo of a [cat:dog:{when}] on grass")
    with lost_switch(n_first == 20):
        assert steps_only(s, 20) == [A] * n_first + [B] * (20 - n_first)


def test_a1111_add_and_remove_forms_20_steps():
    add = PromptSchedule.parse("a [b:5] c")
    assert steps_only(add, 20) == ["a  c"] * 6 + ["a b c"] * 14
    remove = PromptSchedule.parse("a [b::0.25] c")
    assert steps_only(remove, 20) == ["a b c"] * 6 + ["a  c"] * 14
    assert add.segments == (Segment("a  c", Boundary.step(5)), Segment("a b c"))


def test_a1111_doctests_10_steps():
    # From the docstring of get_learned_conditioning_prompt_schedules (10 steps), e.g.
    # g("a [b:3]") == [[3, 'a '], [10, 'a b']]  → 'a ' for steps 0..3, 'a b' for 4..9
    assert steps_only(PromptSchedule.parse("a [b:3]"), 10) == ["a "] * 4 + ["a b"] * 6
    assert steps_only(PromptSchedule.parse("a [b: 3]"), 10) == ["a "] * 4 + ["a b"] * 6
    # g("a [b:.5] c") == [[5, 'a  c'], [10, 'a b c']]
    assert steps_only(PromptSchedule.parse("a [b:.5] c"), 10) == ["a  c"] * 6 + ["a b c"] * 4
    # g("[(a:2):3]") == [[3, ''], [10, '(a:2)']]: parentheses protect their ':'
    assert steps_only(PromptSchedule.parse("[(a:2):3]"), 10) == [""] * 4 + ["(a:2)"] * 6
    # g("a [b : c : 1] d") == [[1, 'a b  d'], [10, 'a  c  d']]: text kept as written, whitespace too
    # (issue 16: this assertion used to expect stripped parts, "a b d", a difference now removed)
    assert steps_only(PromptSchedule.parse("a [b : c : 1] d"), 10) == ["a b  d"] * 2 + ["a  c  d"] * 8
    # g("a[b:[c:d:2]:1]e") == [[1, 'abe'], [2, 'ace'], [10, 'ade']]: nested groups
    assert steps_only(PromptSchedule.parse("a[b:[c:d:2]:1]e"), 10) == ["abe"] * 2 + ["ace"] + ["ade"] * 7
    # g("a [[[b]]:2]") == [[2, 'a '], [10, 'a [[b]]']]: de-emphasis brackets inside a group
    assert steps_only(PromptSchedule.parse("a [[[b]]:2]"), 10) == ["a "] * 3 + ["a [[b]]"] * 7


def test_a1111_multi_group_example_100_steps():
    # The example at the top of A1111's prompt_parser.py (steps=100):
    table = [
        (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
        (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
        (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
        (75, "fantasy landscape with a lake and an oak in background masterful"),
        (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
    ]
    # Same prompt with the spaces moved outside the groups (ours strips whitespace inside them).
    s = PromptSchedule.parse(
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75] "
        "[in foreground::0.6] [in background:0.25] [shoddy:masterful:0.5]"
    )
    assert s.is_composite and len(s.boundaries) == 5
    got = [" ".join(p.split()) for p in steps_only(s, 100)]
    expected = [next(text for end, text in table if i <= end) for i in range(100)]
    assert got == expected


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 60),
    whens=st.lists(
        st.one_of(
            st.integers(0, 80).map(str),
            st.integers(0, 1000).map(lambda k: f"{k / 1000}"),
            st.sampled_from(["0.05", "0.1", "0.3", "0.7", ".5", "1.0", "0.", "0.15"]),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_matches_a1111_reference_for_any_fraction_or_step(n, whens):
    groups = [(f"b{k}", f"a{k}", w) for k, w in enumerate(whens)]
    text = " ".join(f"[{b}:{a}:{w}]" for b, a, w in groups)
    reference = a1111_reference(groups, n)
    never = any(all(row[k] == before for row in reference) for k, (before, _, _) in enumerate(groups))
    with lost_switch(never):
        got = steps_only(PromptSchedule.parse(text), n)
    assert got == [" ".join(row) for row in reference]


# ---------------------------------------------------------------------- timestep / λ / level
def test_timestep_boundary_synthetic_run():
    s = PromptSchedule.parse("a [cat:dog:t=745] photo")
    prompts = s.prompts_for_steps(TIMESTEPS, LOG_SNRS)
    k = first_index(prompts, "a dog photo")
    assert k == 13  # t_13 = 734.9 ≤ 745 < t_12 = 754.3
    assert prompts == ["a cat photo"] * k + ["a dog photo"] * (N_RUN - k)
    assert all(t <= 745 for t in TIMESTEPS[k:]) and TIMESTEPS[k - 1] > 745


def test_log_snr_boundary_synthetic_run():
    for text in ("[x:y:logsnr=-1.5]", "[x:y:λ=-1.5]"):
        prompts = PromptSchedule.parse(text).prompts_for_steps(TIMESTEPS, LOG_SNRS)
        assert prompts == ["x"] * 17 + ["y"] * (N_RUN - 17)  # λ_17 = −1.49


@pytest.mark.parametrize("m, k", [(32, 0), (16, 2), (8, 7), (4, 13), (2, 18), (1, 23)])
def test_level_boundary_synthetic_run(m, k):
    with lost_switch(k == 0):  # level 32 is born before the run's first step
        prompts = PromptSchedule.parse(f"[coarse:fine:m={m}]").prompts_for_steps(TIMESTEPS, LOG_SNRS)
    assert prompts == ["coarse"] * k + ["fine"] * (N_RUN - k)
    expected = next((i for i, lam in enumerate(LOG_SNRS) if lam >= -2 * math.log(m)), N_RUN)
    assert k == expected


def test_coarse_levels_are_born_first():
    with pytest.warns(PromptSwitchWarning, match="before the first step"):  # levels 64 and 32
        births = [
            first_index(PromptSchedule.switch("a", "b", Boundary.level(m)).prompts_for_steps(TIMESTEPS, LOG_SNRS), "b")
            for m in (64, 32, 16, 8, 4, 2, 1)
        ]
    assert births == sorted(births)


@settings(max_examples=300, deadline=None)
@given(
    lams=st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=80).map(sorted),
    exponent=st.integers(0, 12),
)
def test_level_switches_once_at_first_step_past_birth(lams, exponent):
    m = 2**exponent
    n = len(lams)
    timesteps = [float(n - 1 - i) for i in range(n)]
    schedule = PromptSchedule.switch("coarse", "fine", Boundary.level(m))
    # the one birth rule (chromaviz.noise.levels): λ ≥ −2·ln m, within BIRTH_TOLERANCE
    birth = next((i for i, lam in enumerate(lams) if lam >= -2 * math.log(m) - BIRTH_TOLERANCE), n)
    with lost_switch(birth in (0, n)):
        prompts = schedule.prompts_for_steps(timesteps, lams)
    changes = sum(1 for a, b in zip(prompts, prompts[1:]) if a != b)
    assert changes <= 1
    assert prompts == ["coarse"] * birth + ["fine"] * (n - birth)
    assert [schedule.prompt_at(i, n, timesteps[i], lams[i]) for i in range(n)] == prompts


def test_level_accepts_minus_infinity_log_snr():
    # zero-terminal-SNR schedules start at λ = −∞
    lams = [-math.inf, -3.0, -1.0, 2.0]
    assert PromptSchedule.parse("[a:b:m=2]").prompts_for_steps([3, 2, 1, 0], lams) == ["a", "a", "b", "b"]


# ---------------------------------------------------------------------- several groups, sequences
def test_multiple_groups_each_resolved_by_its_own_boundary():
    s = PromptSchedule.parse("a [cat:dog:0.5] on [grass:sand:t=300], [sketch:photo:m=4]")
    assert s.is_composite
    prompts = s.prompts_for_steps(TIMESTEPS, LOG_SNRS)
    for i, p in enumerate(prompts):
        animal = "cat" if i <= int(0.5 * N_RUN) else "dog"
        ground = "sand" if TIMESTEPS[i] <= 300 else "grass"
        style = "photo" if LOG_SNRS[i] >= -2 * math.log(4) else "sketch"
        assert p == f"a {animal} on {ground}, {style}"
    assert len(set(prompts)) == 4  # sketch→photo at 13, cat→dog at 26, grass→sand at 35
    assert [s.prompt_at(i, N_RUN, TIMESTEPS[i], LOG_SNRS[i]) for i in range(N_RUN)] == prompts


def test_three_segment_sequential_schedule_and_stickiness():
    s = PromptSchedule(
        (
            Segment("noise", Boundary.level(16)),
            Segment("shape", Boundary.timestep(300)),
            Segment(None),
        )
    )
    prompts = s.prompts_for_steps(TIMESTEPS, LOG_SNRS)
    assert prompts[:2] == ["noise"] * 2 and prompts[2] == "shape" and prompts[-1] is None
    assert first_index(prompts, None) == 35  # t_35 = 285.4 ≤ 300
    # a non-monotone run: once past a boundary, the schedule does not go back
    back = PromptSchedule.switch("a", "b", Boundary.log_snr(0.0)).prompts_for_steps([3, 2, 1, 0], [-1, 1, -1, 1])
    assert back == ["a", "b", "b", "b"]


def test_later_boundary_already_crossed_skips_segment():
    s = PromptSchedule((Segment("a", Boundary.step(3)), Segment("b", Boundary.fraction(0.1)), Segment("c")))
    assert steps_only(s, 20) == ["a"] * 4 + ["c"] * 16


# ---------------------------------------------------------------------- parsing details
def test_plain_text_is_constant():
    s = PromptSchedule.parse("a photo of a cat (detailed:1.2), [soft]")
    assert s == PromptSchedule.constant("a photo of a cat (detailed:1.2), [soft]")
    assert s.is_constant and s.boundaries == ()
    assert steps_only(s, 3) == ["a photo of a cat (detailed:1.2), [soft]"] * 3
    assert PromptSchedule.parse("") == PromptSchedule.constant("")


def test_escapes_are_literal():
    # Issue 16: as in the webui, an escape stays in the step's text as written and the model's
    # emphasis parser makes it the literal character (these used to be resolved here).
    s = PromptSchedule.parse(r"a \[not a group\] and a \\ plus \(kept\)")
    assert s == PromptSchedule.constant(r"a \[not a group\] and a \\ plus \(kept\)")
    assert plain_text(s.prompt_at(0, 1)) == r"a [not a group] and a \ plus (kept)"
    s = PromptSchedule.parse(r"[x\:y:z\]:3]")
    assert s == PromptSchedule.switch(r"x\:y", r"z\]", Boundary.step(3))
    assert [plain_text(p) for p in steps_only(s, 5)] == ["x:y"] * 4 + ["z]"]


def test_whitespace_kept_as_written_and_empty_parts_allowed():
    # Issue 16: whitespace inside a group is part of its text, as in the webui (it used to be stripped)
    assert PromptSchedule.parse("[ a : b : 0.5 ]") == PromptSchedule.switch(" a ", " b ", Boundary.fraction(0.5))
    assert PromptSchedule.parse("[::3]") == PromptSchedule.switch("", "", Boundary.step(3))
    assert PromptSchedule.parse("x[:y:m=2]") == PromptSchedule.switch("x", "xy", Boundary.level(2))


@pytest.mark.parametrize(
    "text, match",
    [
        ("a [cat:dog:0.5", r"unbalanced brackets in prompt 'a \[cat:dog:0.5'"),
        ("a cat:dog:0.5]", r"unbalanced brackets .*'\]' at position 13"),
        ("[a:[b:c:2]:x]", r"in the group '\[a:\[b:c:2\]:x\]'.*invalid 'when' 'x'"),
        ("[a|b:2]", r"':' and '\|' mixed in the group '\[a\|b:2\]'"),
        ("[a:b:[c:d:1]]", r"the 'when' part cannot hold a group"),
        ("a (cat", r"unbalanced parentheses .*never closed"),
        ("a cat)", r"unbalanced parentheses .*'\)' at position 5"),
        ("[a:[b:c:2]", r"unbalanced brackets .*'\[' at position 0 is never closed"),
        ("[cat:dog:x=3]", r"'\[cat:dog:x=3\]'.*unknown unit 'x'.*t=<timestep>"),
        ("[cat:dog:1.5]", r"'1.5'.*fraction of the steps and must lie in \[0, 1\].*integer \(e.g. 1\)"),
        ("[cat:dog:soon]", r"invalid 'when' 'soon'.*expected"),
        ("[cat:dog:]", r"empty 'when'"),
        ("[cat:dog:-2]", r"non-negative integer"),
        ("[cat:dog:m=3]", r"'m=3'.*power of two"),
        ("[cat:dog:t=-5]", r"'t=-5'.*≥ 0"),
        ("[cat:dog:t=abc]", r"not a number after 't='"),
        ("[a:b:c:0.5]", r"too many ':' in the group '\[a:b:c:0.5\]'"),
        ("[(a:b:0.5]", r"unbalanced parentheses"),
        ("[cat:dog:1e-1]", r"invalid 'when' '1e-1'"),
    ],
)
def test_parse_errors(text, match):
    with pytest.raises(ValueError, match=match):
        PromptSchedule.parse(text)


# ---------------------------------------------------------------------- construction, data, text
def test_schedule_validation():
    with pytest.raises(ValueError, match="at least one segment"):
        PromptSchedule(())
    with pytest.raises(ValueError, match="only the last segment"):
        PromptSchedule((Segment("a"), Segment("b")))
    with pytest.raises(ValueError, match="last segment"):
        PromptSchedule((Segment("a", Boundary.step(2)),))
    with pytest.raises(ValueError, match="not both"):
        PromptSchedule((Segment("a"),), (PromptSchedule.constant("b"),))
    with pytest.raises(TypeError):
        Segment(3)  # type: ignore[arg-type]


def test_constructors_and_coerce():
    c = PromptSchedule.constant("x")
    assert PromptSchedule.coerce(c) is c
    assert PromptSchedule.coerce(None) == PromptSchedule.constant(None)
    assert PromptSchedule.coerce(None).prompt_at(0, 1) is None
    assert PromptSchedule.coerce("[a:b:m=4]") == PromptSchedule.switch("a", "b", Boundary.level(4))
    assert PromptSchedule.switch("a", "b", "t=500") == PromptSchedule.switch("a", "b", Boundary.timestep(500))
    assert PromptSchedule.coerce(c.to_dict()) == c
    with pytest.raises(TypeError):
        PromptSchedule.coerce(3)  # type: ignore[arg-type]
    u = PromptSchedule.concat(PromptSchedule.switch(None, "late", Boundary.step(1)), None)
    assert steps_only(u, 3) == [None, None, "late"]
    assert PromptSchedule.concat("x") == PromptSchedule.constant("x")


@pytest.mark.parametrize(
    "schedule",
    [
        PromptSchedule.constant(None),
        PromptSchedule.constant("a cat"),
        PromptSchedule.parse("a photo of a [cat:dog:0.6] on grass"),
        PromptSchedule.parse("[a:b:12] [c:d:t=745.5] [e::logsnr=-1.25] [f:m=8] \\[x\\]"),
        PromptSchedule((Segment("a", Boundary.level(16)), Segment("b", Boundary.fraction(0.75)), Segment(None))),
    ],
)
def test_to_dict_round_trip(schedule):
    data = json.loads(json.dumps(schedule.to_dict()))
    assert PromptSchedule.from_dict(data) == schedule
    assert PromptSchedule.from_dict(data).prompts_for_steps(TIMESTEPS, LOG_SNRS) == schedule.prompts_for_steps(
        TIMESTEPS, LOG_SNRS
    )


def test_from_dict_rejects_bad_input():
    with pytest.raises(ValueError):
        PromptSchedule.from_dict({"segmnets": []})
    with pytest.raises(ValueError):
        PromptSchedule.from_dict({"segments": [{"text": "a"}]})
    with pytest.raises(ValueError):
        Boundary.from_dict({"value": 3})


def test_str_is_a_readable_one_liner():
    s = str(PromptSchedule.switch("a cat", "a dog", Boundary.level(4)))
    assert s == '"a cat" until birth of level 4 (λ ≥ −2.77), then "a dog"'
    assert str(PromptSchedule.constant(None)) == "<unconditional>"
    multi = PromptSchedule.parse("a [cat:dog:0.5] on [grass:sand:t=300] \\[x\\]")
    assert str(multi) == "a [cat:dog:0.5] on [grass:sand:t=300] \\[x\\]"
    assert PromptSchedule.parse(str(multi)) == multi
    assert "\n" not in str(PromptSchedule.parse("[a:b:3]"))


def test_prompts_for_steps_checks_lengths_and_handles_empty():
    with pytest.raises(ValueError, match="log_snrs has 2 entries"):
        PromptSchedule.constant("a").prompts_for_steps([1, 2, 3], [0.0, 1.0])
    assert PromptSchedule.parse("[a:b:0.5]").prompts_for_steps([]) == []


# ---------------------------------------------------------------------- differential: the webui's grammar
# Each row: a prompt, a step count N and the expected schedule in the webui's own notation
# ([[end_at_step, text], …], as in the doctests of get_learned_conditioning_prompt_schedules):
# 0-based step i uses the first entry with i <= end_at_step. Expected texts are derived by hand
# from the webui's documented grammar (webui ≥ 1.6): a `when` with "." is a fraction, W =
# min(N, int(f·N)), an integer is a step, W = min(N, s); a group shows its first part iff
# W ≥ 1 and i ≤ W; text (whitespace, escapes, emphasis) is kept exactly as written.
WEBUI_TABLE = [
    ("test", 10, [(10, "test")]),
    ("", 3, [(3, "")]),
    ("a castle[ at night::0.5]", 10, [(5, "a castle at night"), (10, "a castle")]),
    ("a [red:[blue:green:4]:2] car", 10, [(2, "a red car"), (4, "a blue car"), (10, "a green car")]),
    ("a [[old]:new:3] house", 10, [(3, "a [old] house"), (10, "a new house")]),
    ("a [b:3]", 10, [(3, "a "), (10, "a b")]),
    ("a [b: 3]", 10, [(3, "a "), (10, "a b")]),
    ("a [[[b]]:2]", 10, [(2, "a "), (10, "a [[b]]")]),
    ("[(a:2):3]", 10, [(3, ""), (10, "(a:2)")]),
    ("a [b : c : 1] d", 10, [(1, "a b  d"), (10, "a  c  d")]),
    ("a[b:[c:d:2]:1]e", 10, [(1, "abe"), (2, "ace"), (10, "ade")]),
    ("a [b:.5] c", 10, [(5, "a  c"), (10, "a b c")]),
    (
        "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75][ in foreground::0.6]"
        "[ in background:0.25] [shoddy:masterful:0.5]",
        100,
        [
            (25, "fantasy landscape with a mountain and an oak in foreground shoddy"),
            (50, "fantasy landscape with a lake and an oak in foreground in background shoddy"),
            (60, "fantasy landscape with a lake and an oak in foreground in background masterful"),
            (75, "fantasy landscape with a lake and an oak in background masterful"),
            (100, "fantasy landscape with a lake and a christmas tree in background masterful"),
        ],
    ),
    ("[cat:dog:0]", 10, [(10, "dog")]),
    ("[cat:dog:0.0]", 10, [(10, "dog")]),
    ("[cat:dog:0.05]", 10, [(10, "dog")]),  # int(0.5) = 0 < 1: the second part throughout
    ("[cat:dog:0.1]", 10, [(1, "cat"), (10, "dog")]),
    ("[cat:dog:1]", 10, [(1, "cat"), (10, "dog")]),
    ("[cat:moon:50]", 10, [(10, "cat")]),  # beyond the run (warns)
    ("[cat:dog:9]", 10, [(10, "cat")]),
    ("[cat:dog:1.0]", 10, [(10, "cat")]),
    ("[cat:dog:0.99]", 20, [(20, "cat")]),
    ("[cat:dog:0.5]", 7, [(3, "cat"), (7, "dog")]),
    ("[cat:dog:0.5]", 1, [(1, "dog")]),
    ("[cat:dog:0.5]", 2, [(2, "cat")]),
    ("a [cat::2] [dog:4] end", 8, [(2, "a cat  end"), (4, "a   end"), (8, "a  dog end")]),
    ("[[a:b:5]:c:2]", 10, [(2, "a"), (10, "c")]),
    ("[[a:b:1]:c:3]", 10, [(1, "a"), (3, "b"), (10, "c")]),
    ("[a:[b:[c:[d:e:8]:6]:4]:2]", 10, [(2, "a"), (4, "b"), (6, "c"), (8, "d"), (10, "e")]),
    (r"a \[b\] [c:d:2]", 5, [(2, r"a \[b\] c"), (5, r"a \[b\] d")]),
    (r"[x\:y:z:1]", 4, [(1, r"x\:y"), (4, "z")]),
    ("a [(red:1.2):blue:3] car", 6, [(3, "a (red:1.2) car"), (6, "a blue car")]),
    ("([cat:dog:2]:1.3)", 5, [(2, "(cat:1.3)"), (5, "(dog:1.3)")]),
    ("[a:b: 3 ]", 6, [(3, "a"), (6, "b")]),
    ("a  [ b :  c :2]  d", 5, [(2, "a   b   d"), (5, "a    c   d")]),
    ("a dog[, running:0.25]", 40, [(10, "a dog"), (40, "a dog, running")]),
    ("[a:b:3] [c:d:3]", 6, [(3, "a c"), (6, "b d")]),
    ("un [chat:chien:2] noir", 4, [(2, "un chat noir"), (4, "un chien noir")]),
    ("[a:b:0.3] [c:d:7]", 20, [(6, "a c"), (7, "b c"), (20, "b d")]),
]

# Alternation, as the webui's code numbers it (prompt_parser.py: its schedule lists steps 1…N and
# sampling step i takes the first entry ending at or after i, so entry 1 serves steps 0 and 1):
# [a|b] gives a, a, b, a, b. Worked by hand from that rule, not from chromaviz.
ALTERNATION_TABLE = [
    ("[cat|dog]", 5, ["cat", "cat", "dog", "cat", "dog"]),
    ("[fe|]male", 6, ["female", "female", "male", "female", "male", "female"]),
    ("[fe|||]male", 9, ["female", "female", "male", "male", "male", "female", "male", "male", "male"]),
    ("[cat|dog|cow]", 5, ["cat", "cat", "dog", "cow", "cat"]),
    ("[a|(b:1.1)]", 4, ["a", "a", "(b:1.1)", "a"]),
    ("a [cat|[dog:fox:2]] b", 6, ["a cat b", "a cat b", "a dog b", "a cat b", "a fox b", "a cat b"]),
    ("[[cat|dog]:cow:3]", 6, ["cat", "cat", "dog", "cat", "cow", "cow"]),
    ("[ x | y ]z", 3, [" x z", " x z", " y z"]),
]


def _expand(entries, n):
    return [next(text for end, text in entries if i <= end) for i in range(n)]


@pytest.mark.filterwarnings("ignore:the switch at")
@pytest.mark.parametrize("text, n, entries", WEBUI_TABLE)
def test_differential_against_the_webui_grammar(text, n, entries):
    s = PromptSchedule.parse(text)
    expected = _expand(entries, n)
    assert steps_only(s, n) == expected
    assert [s.prompt_at(i, n, float(n - 1 - i)) for i in range(n)] == expected
    assert PromptSchedule.parse(s.to_text()) == s
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize("text, n, expected", ALTERNATION_TABLE)
def test_alternation_numbers_steps_as_the_webui(text, n, expected):
    s = PromptSchedule.parse(text)
    assert steps_only(s, n) == expected
    assert [s.prompt_at(i, n, float(n - 1 - i)) for i in range(n)] == expected
    assert PromptSchedule.parse(s.to_text()) == s
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_table_size_and_step_counts():
    assert len(WEBUI_TABLE) + len(ALTERNATION_TABLE) >= 30
    assert len({n for _, n, _ in WEBUI_TABLE}) >= 5


def test_switch_beyond_the_run_warns():
    with pytest.warns(UserWarning, match=r"step 50 .*never happens in this 10-step run"):
        PromptSchedule.parse("[cat:moon:50]").prompts_for_steps(range(10))
    with pytest.warns(UserWarning, match=r"t ≤ 5 .*never happens"):
        PromptSchedule.parse("[cat:moon:t=5]").prompts_for_steps([999, 500, 10])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PromptSchedule.parse("[cat:moon:5]").prompts_for_steps(range(10))
        PromptSchedule.parse("[cat:moon:0]").prompts_for_steps(range(10))  # counted in steps: as written
        PromptSchedule.parse("[cat:moon:t=500]").prompts_for_steps([999, 500, 10])


@pytest.mark.parametrize("text, timesteps, log_snrs, words", [
    ("[cat:moon:t=5000]", [999, 500, 10], None, r"t ≤ 5000 .*has happened before the first step of this 3-step run"),
    ("[cat:moon:m=128]", [999, 500, 10], [-9.0, 0.0, 5.0], r"birth of level 128 .*before the first step"),
    ("[cat:moon:logsnr=-20]", [999, 500, 10], [-9.0, 0.0, 5.0], r"before the first step .*the prompt before it is never used"),
])
def test_a_switch_on_the_noise_level_before_the_first_step_warns(text, timesteps, log_snrs, words):
    """The run never uses the first prompt (a level coarser than the image, a timestep past the
    schedule's): said, as a switch that never happens is."""
    with pytest.warns(UserWarning, match=words):
        got = PromptSchedule.parse(text).prompts_for_steps(timesteps, log_snrs)
    assert got == ["moon"] * 3


def test_every_unit_at_every_depth():
    s = PromptSchedule.parse("a [red:[blue:[green:grey:logsnr=2]:m=4]:t=800] [x|[y:z:0.5]] car")
    got = s.prompts_for_steps(TIMESTEPS, LOG_SNRS)
    for i, p in enumerate(got):
        if TIMESTEPS[i] > 800:
            colour = "red"
        elif LOG_SNRS[i] < -2 * math.log(4):
            colour = "blue"
        else:
            colour = "green" if LOG_SNRS[i] < 2 else "grey"
        alt = "x" if (max(i, 1) - 1) % 2 == 0 else ("y" if i <= int(0.5 * N_RUN) else "z")
        assert p == f"a {colour} {alt} car"
    assert {"a red x car", "a blue y car", "a green x car", "a grey z car"} <= set(got)
    assert [s.prompt_at(i, N_RUN, TIMESTEPS[i], LOG_SNRS[i]) for i in range(N_RUN)] == got
    assert sorted(b.unit for b in s.boundaries) == ["fraction", "level", "log_snr", "timestep"]


# ---------------------------------------------------------------------- AND
@pytest.mark.parametrize(
    "text, terms",
    [
        ("a cat AND a dog:0.5", [("a cat", 1.0), (" a dog", 0.5)]),
        ("a cat AND a dog", [("a cat", 1.0), (" a dog", 1.0)]),
        ("a cat :1.5 AND a dog : -0.5", [("a cat", 1.5), (" a dog", -0.5)]),
        ("a cat:2", [("a cat", 2.0)]),
        ("ANDROID AND x", [("ANDROID", 1.0), (" x", 1.0)]),
        ("plain", [("plain", 1.0)]),
        ("a cat AND", [("a cat", 1.0), ("", 1.0)]),
    ],
)
def test_split_and_is_the_webui_rule(text, terms):
    assert split_and(text) == terms
    again = split_and(join_and(terms))
    assert [(t.strip(), w) for t, w in again] == [(t.strip(), w) for t, w in terms]


def test_and_terms_each_with_their_own_schedule():
    s = PromptSchedule.parse("a [cat:dog:1] AND a [moon|sun]:0.5")
    assert len(s.terms) == 2 and s.weights == (1.0, 0.5)
    got = steps_only(s, 4)
    assert got == ["a cat AND a moon:0.5", "a cat AND a moon:0.5", "a dog AND a sun:0.5", "a dog AND a moon:0.5"]
    assert [split_and(p) for p in got][2] == [("a dog", 1.0), (" a sun", 0.5)]
    assert PromptSchedule.parse(s.to_text()) == s
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert steps_only(PromptSchedule.parse("a cat:1"), 2) == ["a cat"] * 2


def test_join_and_refuses_a_term_with_the_word_and():
    with pytest.raises(ValueError, match="contain the word AND"):
        steps_only(PromptSchedule(terms=(PromptSchedule.constant("x AND y"), PromptSchedule.constant("z")),
                                  weights=(1.0, 0.5)), 2)
    with pytest.raises(ValueError, match="weights"):
        PromptSchedule(terms=(PromptSchedule.constant("x"),), weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="two options"):
        PromptSchedule(cycle=(PromptSchedule.constant("x"),))


# ---------------------------------------------------------------------- fuzz
_SYNTAX = st.text(alphabet="ab [](){}:|\\.0123456789tm=λ-AND,", max_size=40)


@settings(max_examples=400, deadline=2000)
@given(text=_SYNTAX)
def test_fuzz_any_text_parses_or_raises_value_error(text):
    try:
        s = PromptSchedule.parse(text)
    except ValueError:
        return
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    try:
        prompts = s.prompts_for_steps(TIMESTEPS[::7], LOG_SNRS[::7])
    except ValueError:
        return  # e.g. a term whose text forms the word AND
    assert len(prompts) == len(TIMESTEPS[::7])
    assert PromptSchedule.parse(s.to_text()).prompts_for_steps(TIMESTEPS[::7], LOG_SNRS[::7]) == prompts
    assert PromptSchedule.parse(s.to_text()) == s


def _when(draw_n):
    return st.one_of(
        st.integers(0, 12).map(lambda k: (str(k), ("step", k))),
        st.sampled_from(["0.1", "0.25", ".5", "0.75", "1.0", "0.0"]).map(lambda s: (s, ("fraction", float(s)))),
    )


@st.composite
def _prompt(draw, depth=0):
    """A random prompt in the full grammar, with a reference evaluator (i, n) → text."""
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["text", "text", "switch", "add", "cycle", "emph"] if depth < 3 else ["text"]))
        if kind == "text":
            t = draw(st.sampled_from(["a", " b ", "cat", "(x:1.2)", r"\[y\]", "  ", "z,"]))
            pieces.append((t, lambda i, n, t=t: t))
        elif kind in ("switch", "add"):
            b_txt, b_eval = draw(_prompt(depth + 1)) if kind == "switch" else ("", lambda i, n: "")
            a_txt, a_eval = draw(_prompt(depth + 1))
            w_txt, (unit, v) = draw(_when(None))

            def ev(i, n, b_eval=b_eval, a_eval=a_eval, unit=unit, v=v):
                w = min(n, int(v * n)) if unit == "fraction" else min(n, v)
                return b_eval(i, n) if (w >= 1 and i <= w) else a_eval(i, n)

            head = f"{b_txt}:" if kind == "switch" else ""
            pieces.append((f"[{head}{a_txt}:{w_txt}]", ev))
        elif kind == "cycle":
            options = [draw(_prompt(depth + 1)) for _ in range(draw(st.integers(2, 3)))]
            pieces.append(("[" + "|".join(t for t, _ in options) + "]",
                           lambda i, n, o=options: o[(max(i, 1) - 1) % len(o)][1](i, n)))
        else:
            inner_t, inner_e = draw(_prompt(depth + 1))
            pieces.append((f"[{inner_t}]", lambda i, n, e=inner_e: f"[{e(i, n)}]"))
    return "".join(t for t, _ in pieces), (lambda i, n: "".join(e(i, n) for _, e in pieces))


@pytest.mark.filterwarnings("ignore:the switch at")
@settings(max_examples=300, deadline=2000)
@given(p=_prompt(), n=st.integers(1, 14))
def test_fuzz_grammar_prompts_match_the_reference(p, n):
    text, reference = p
    s = PromptSchedule.parse(text)
    assert steps_only(s, n) == [reference(i, n) for i in range(n)]
    assert PromptSchedule.parse(s.to_text()) == s
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_docs_examples():
    import doctest
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "prompts.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


def test_long_and_deep_prompts_are_bounded():
    import time

    started = time.perf_counter()
    assert PromptSchedule.parse("a" + " " * 20000 + "b").is_constant  # linear weight rule, no backtracking
    assert len(PromptSchedule.parse("[a:b:3] " * 500).boundaries) == 500
    nested = "[a:" * 100 + "b" + ":1]" * 100
    assert len(PromptSchedule.parse(nested).boundaries) == 100
    with pytest.raises(ValueError, match="nested too deeply"):
        PromptSchedule.parse("[" * 5000 + "a" + "]" * 5000)
    with pytest.raises(ValueError, match="nested too deeply"):
        PromptSchedule.parse("(" * 5000 + "a" + ")" * 5000)
    assert time.perf_counter() - started < 20


@pytest.mark.filterwarnings("ignore:the switch at")
@settings(max_examples=150, deadline=2000)
@given(terms=st.lists(st.tuples(_prompt(), st.sampled_from([None, "0.5", "2", "-1", "1.25"])), min_size=1, max_size=3),
       n=st.integers(1, 10))
def test_fuzz_and_terms_match_the_reference(terms, n):
    text = " AND ".join(t + ("" if w is None else f":{w}") for (t, _), w in terms)
    s = PromptSchedule.parse(text)
    for i, p in enumerate(steps_only(s, n)):
        got = [(t.strip(), w) for t, w in split_and(p)]
        expected = [(ref(i, n).strip(), 1.0 if w is None else float(w)) for (_, ref), w in terms]
        assert got == expected
    assert PromptSchedule.parse(s.to_text()) == s
    assert PromptSchedule.from_dict(json.loads(json.dumps(s.to_dict()))) == s


@pytest.mark.parametrize("make, why", [
    (lambda: Boundary(10**400, "step"), r"\(an integer of about 400 digits\) is too large for a step boundary"),
    (lambda: Boundary(10**400, "fraction"), "too large for a fraction boundary"),
    (lambda: Boundary.parse("1" * 400), "a step of 400 digits is too large"),
    (lambda: Boundary.parse("1" * 5000), "a step of 5000 digits is too large"),
    (lambda: PromptSchedule.parse("[cat:moon:" + "1" * 400 + "]"), "a step of 400 digits is too large"),
    (lambda: PromptSchedule.parse("[cat:moon:m=" + "1" * 400 + "]"), "must be finite"),
])
def test_numbers_too_large_for_a_boundary_are_one_value_error(make, why):
    """More than 308 digits overflowed a float (OverflowError, a raw traceback on the CLI); more
    than 4300 were blamed on "not an integer"."""
    with pytest.raises(ValueError, match=why):
        make()


@pytest.mark.parametrize("text", ["(word:" + "9" * 400 + ")", "a AND b:" + "9" * 400])
def test_an_infinite_weight_is_refused_where_it_is_written(text):
    from chromaviz.prompts.emphasis import parse_emphasis
    from chromaviz.prompts.syntax import split_and

    with pytest.raises(ValueError, match="is not a finite number"):
        parse_emphasis(text) if text.startswith("(") else split_and(text)
