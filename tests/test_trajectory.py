"""Tests for chromaviz.sampling.trajectory: the safetensors file format and measured signal fractions."""

from __future__ import annotations

import json
import math
import struct
import threading

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from chromaviz import spectral
from chromaviz.models import ExemplarMixture, GaussianPowerLaw
from chromaviz.sampling import sample
from chromaviz.noise.schedules import Schedule
from chromaviz.sampling.trajectory import RECORDABLE, Trajectory

SIZE = 32


@pytest.fixture(scope="module")
def gaussian() -> GaussianPowerLaw:
    return GaussianPowerLaw(size=SIZE)


def run(model, prompt=None, **kwargs) -> Trajectory:
    kwargs.setdefault("num_inference_steps", 6)
    kwargs.setdefault("batch_size", 2)
    kwargs.setdefault("device", "cpu")
    return sample(model, prompt, **kwargs)


def assert_round_trip(traj: Trajectory, loaded: Trajectory) -> None:
    assert loaded.metadata == traj.metadata
    assert len(loaded) == len(traj)
    assert loaded.prompts == traj.prompts
    np.testing.assert_array_equal(loaded.timesteps, traj.timesteps)
    np.testing.assert_array_equal(loaded.log_snr, traj.log_snr)  # equal_nan not needed: ±inf compare equal
    for a, b in zip(traj.steps, loaded.steps):
        assert (a.index, a.timestep, a.alpha, a.sigma, a.prompt, a.num_steps) == (
            b.index, b.timestep, b.alpha, b.sigma, b.prompt, b.num_steps,
        )
        assert a.log_snr == b.log_snr
        for name in RECORDABLE:
            va, vb = getattr(a, name), getattr(b, name)
            assert (va is None) == (vb is None), name
            if va is not None:
                assert va.dtype == vb.dtype and torch.equal(va, vb), name
    assert (loaded.final is None) == (traj.final is None)
    if traj.final is not None:
        assert torch.equal(loaded.final, traj.final)


def read_header(path) -> dict:
    """The safetensors header: an 8-byte little-endian length, then that many bytes of JSON."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 0 < n <= len(raw) - 8
    return json.loads(raw[8 : 8 + n].decode("utf-8"))


# ---------------------------------------------------------------------- save / load
def test_round_trip_with_prompts_including_none(tmp_path):
    # margin=0: one window per photograph, so the unconditional (all-photograph) steps are cheap.
    model = ExemplarMixture(size=SIZE, margin=0.0)
    traj = run(model, "[cat::0.5]", num_inference_steps=6)  # "cat", then the empty prompt (unconditional)
    assert traj.prompts == ["cat"] * 4 + [None] * 2
    path = traj.save(tmp_path / "sub" / "run.safetensors")
    assert path.exists()
    loaded = Trajectory.load(path)
    assert_round_trip(traj, loaded)
    assert loaded.status == "complete"
    assert loaded.metadata["prompt"] == "[cat::0.5]"


def test_round_trip_with_minus_infinite_log_snr(tmp_path):
    model = GaussianPowerLaw(schedule=Schedule.preset("scaled_linear").zero_terminal_snr(), size=SIZE)
    traj = run(model, scheduler="ddim", num_inference_steps=8)
    assert traj.status == "complete"
    assert traj.log_snr[0] == -math.inf and np.isfinite(traj.log_snr[1:]).all()
    loaded = Trajectory.load(traj.save(tmp_path / "zsnr.safetensors"))
    assert_round_trip(traj, loaded)
    assert loaded.log_snr[0] == -math.inf and loaded.steps[0].alpha == 0.0
    assert repr(loaded) == repr(traj)


def test_round_trip_of_a_cancelled_run(tmp_path, gaussian):
    stop = threading.Event()
    traj = run(gaussian, num_inference_steps=10, stop=stop, callback=lambda rec: rec.index == 3 and stop.set())
    assert traj.status == "cancelled" and len(traj) == 4 and traj.final is None
    loaded = Trajectory.load(traj.save(tmp_path / "partial.safetensors"))
    assert_round_trip(traj, loaded)
    assert loaded.status == "cancelled" and loaded.final is None
    assert torch.equal(loaded.sample, traj.steps[-1].x0)
    assert loaded.metadata["num_steps"] == 10


def test_round_trip_of_a_run_cancelled_before_its_first_step(tmp_path, gaussian):
    stop = threading.Event()
    stop.set()
    traj = run(gaussian, stop=stop)
    loaded = Trajectory.load(traj.save(tmp_path / "empty.safetensors"))
    assert_round_trip(traj, loaded)
    assert len(loaded) == 0 and loaded.status == "cancelled"


def test_record_only_x0(tmp_path, gaussian):
    traj = run(gaussian, record=("x0",))
    path = traj.save(tmp_path / "x0.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"timesteps", "log_snr", "alpha", "sigma", "x0", "final"}
    loaded = Trajectory.load(path)
    assert_round_trip(traj, loaded)
    assert all(s.x_t is None and s.eps is None for s in loaded.steps)
    with pytest.raises(ValueError, match=r"'x_t' was not recorded in this run"):
        loaded.x_t
    with pytest.raises(ValueError, match=r"'eps' was not recorded"):
        loaded.eps
    assert loaded.x0.shape == (6, 2, 3, SIZE, SIZE)


def test_loading_a_safetensors_file_that_is_not_a_trajectory(tmp_path):
    plain = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(3, 2)}, str(plain))
    with pytest.raises(ValueError, match="not a chromaviz trajectory"):
        Trajectory.load(plain)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 2)}, str(other), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="not a chromaviz trajectory"):
        Trajectory.load(other)


def test_a_file_damaged_after_saving_is_refused(tmp_path, gaussian):
    """A changed byte anywhere in the tensors' data (a bit flipped on disk or in a copy) is caught
    by the checksums written with the file; a file without them (an older chromaviz) still loads."""
    path = run(gaussian, num_inference_steps=3).save(tmp_path / "run.safetensors")
    raw = bytearray(path.read_bytes())
    (header_length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_length])
    for name in ("x0", "final", "log_snr"):
        start, end = header[name]["data_offsets"]
        damaged = bytearray(raw)
        damaged[8 + header_length + (start + end) // 2] ^= 0x10
        bad = tmp_path / f"damaged-{name}.safetensors"
        bad.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match=f"the bytes of the tensor '{name}' do not match the checksum"):
            Trajectory.load(bad)
    loaded = Trajectory.load(path)
    doc = json.loads(header["__metadata__"]["chromaviz"])
    del doc["crc32"]
    older = tmp_path / "older.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(older), metadata={"chromaviz": json.dumps(doc)})
    assert torch.equal(Trajectory.load(older).x0, loaded.x0)


def _rewritten(path, out, edit_text=None, edit_tensors=None, keep_checksum=True):
    """``path`` saved again as ``out`` with its document text and tensors edited; the document
    checksum is the one written with the original (a damaged header) unless ``keep_checksum`` is False."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_text:
        meta["chromaviz"] = edit_text(meta["chromaviz"])
    if edit_tensors:
        edit_tensors(tensors)
    if not keep_checksum:
        del meta["chromaviz.crc32"]
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("old, new", [
    ('"num_inference_steps": 3', '"num_inference_steps": 4'),
    ('"beta_end": 0.012', '"beta_end": 0.013'),
    ('"epsilon"', '"epsiloo"'),
])
def test_a_damaged_header_is_refused(tmp_path, gaussian, old, new):
    """One changed character in the JSON header (a bit flip, or a hand edit) no longer loads as a complete run."""
    path = run(gaussian, num_inference_steps=3).save(tmp_path / "run.safetensors")
    assert old in read_header(path)["__metadata__"]["chromaviz"]
    bad = _rewritten(path, tmp_path / "bad.safetensors", edit_text=lambda t: t.replace(old, new, 1))
    with pytest.raises(ValueError, match="document does not match the checksum written with it"):
        Trajectory.load(bad)
    stripped = _rewritten(path, tmp_path / "stripped.safetensors", keep_checksum=False)
    with pytest.raises(ValueError, match="document checksum is missing"):
        Trajectory.load(stripped)


def _unchecked(path, out, edit_doc=None, edit_tensors=None):
    """``path`` saved again as ``out``, edited, without any checksum (as a file from before them)."""
    def text(t):
        doc = json.loads(t)
        doc.pop("crc32")
        if edit_doc:
            edit_doc(doc)
        return json.dumps(doc)
    return _rewritten(path, out, edit_text=text, edit_tensors=edit_tensors, keep_checksum=False)


def _set(path, value):
    def edit(doc):
        *parents, last = path
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value
    return edit


@pytest.mark.parametrize("edit, why", [
    (_set(["metadata", "model"], "x"), "'model' is \"x\"; it must be an object with a string 'name'"),
    (_set(["metadata", "num_steps"], "two"), "'num_steps' is \"two\"; it must be a positive integer"),
    (_set(["metadata", "scheduler_config"], [1, 2]), "'scheduler_config' is \\[1, 2\\]; it must be an object"),
    (_set(["metadata", "seed"], -1), "'seed' is -1"),
    (_set(["metadata", "num_inference_steps"], 2.5), "'num_inference_steps' is 2.5"),
    (_set(["metadata", "guidance"], {"$float": "NaN"}), "'guidance' is NaN; it must be a finite number"),
])
def test_every_metadata_field_the_code_reads_is_checked(tmp_path, gaussian, edit, why):
    path = run(gaussian, num_inference_steps=3).save(tmp_path / "run.safetensors")
    with pytest.raises(ValueError, match=why):
        Trajectory.load(_unchecked(path, tmp_path / "bad.safetensors", edit_doc=edit))


def _replace(name, make):
    def edit(tensors):
        tensors[name] = make(tensors[name])
    return edit


@pytest.mark.parametrize("edit, why", [
    (_replace("x0", lambda t: torch.cat([t, t[:, :1]], dim=1)), "recorded tensors disagree in shape"),
    (_replace("final", lambda t: t[:, :, :8].contiguous()), "the tensor 'final' has shape"),
    (_replace("x0", lambda t: t.to(torch.int8)), "'x0' has dtype torch.int8, not floating point"),
    (_replace("timesteps", lambda t: t.double() * math.nan), "'timesteps' holds NaN or infinite values"),
    (_replace("log_snr", lambda t: t * math.nan), "'log_snr' holds NaN"),
])
def test_the_tensors_are_checked_against_each_other(tmp_path, gaussian, edit, why):
    path = run(gaussian, num_inference_steps=3).save(tmp_path / "run.safetensors")
    with pytest.raises(ValueError, match=why):
        Trajectory.load(_unchecked(path, tmp_path / "bad.safetensors", edit_tensors=edit))


def test_saving_to_an_empty_path_or_a_folder_and_comparing_a_non_trajectory_are_refused(tmp_path, gaussian):
    from chromaviz import compare

    traj = run(gaussian, num_inference_steps=2)
    with pytest.raises(ValueError, match="cannot save a trajectory to '': that is empty"):
        traj.save("")
    with pytest.raises(ValueError, match="that is a folder"):
        traj.save(tmp_path)
    with pytest.raises(TypeError, match="compare\\(\\) needs a Trajectory .*, got str"):
        compare("x", gaussian)


def test_file_is_safetensors_without_pickle(tmp_path, gaussian):
    traj = run(gaussian, num_inference_steps=3)
    path = traj.save(tmp_path / "run.safetensors")
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80")  # pickle protocol ≥ 2 opcode
    assert not raw.startswith(b"PK")  # torch.save's zip container
    header = read_header(path)
    assert set(header) == {"__metadata__", "timesteps", "log_snr", "alpha", "sigma", "x_t", "x0", "eps", "final"}
    assert header["x0"]["dtype"] == "F32" and header["x0"]["shape"] == [3, 2, 3, SIZE, SIZE]
    assert header["log_snr"]["dtype"] == "F64" and header["log_snr"]["shape"] == [3]
    doc = json.loads(header["__metadata__"]["chromaviz"])
    assert set(doc) == {"metadata", "prompts", "num_steps", "crc32"}
    assert doc["metadata"]["status"] == "complete" and doc["prompts"] == [None] * 3
    # The tensor payload is exactly what the header describes: nothing else hides in the file.
    n = struct.unpack("<Q", raw[:8])[0]
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert 8 + n + end == len(raw)


# ---------------------------------------------------------------------- signal fractions
@pytest.mark.parametrize("method", ["rings", "pyramid"])
def test_signal_fractions_reach_one_at_the_last_step(gaussian, method):
    traj = run(gaussian, scheduler="ddim", num_inference_steps=20, batch_size=4)
    # DDIM with set_alpha_to_one: its last step returns its own x̂0, equal to ours up to rounding.
    assert traj.metadata["scheduler_config"]["set_alpha_to_one"] is True
    torch.testing.assert_close(traj.final, traj.steps[-1].x0, atol=1e-5, rtol=0)
    levels = spectral.levels_for(SIZE, SIZE)
    g = traj.signal_fractions(levels, method=method)
    assert g.shape == (20, len(levels)) and g.dtype == torch.float64
    np.testing.assert_allclose(g[-1].numpy(), 1.0, atol=1e-6)
    assert (g[0] < 0.5).all()  # the first prediction explains little of any band
    assert (g[0, 0] < g[0, -1])  # fine detail least of all


def test_signal_fractions_of_a_partial_run_use_the_last_x0(gaussian):
    stop = threading.Event()
    traj = run(gaussian, num_inference_steps=10, batch_size=3, stop=stop, callback=lambda rec: rec.index == 5 and stop.set())
    g = traj.signal_fractions()
    assert g.shape == (6, len(spectral.levels_for(SIZE, SIZE)))
    np.testing.assert_allclose(g[-1].numpy(), 1.0, rtol=0, atol=1e-12)


def test_signal_fractions_of_a_single_sample_use_no_reference(gaussian):
    traj = run(gaussian, batch_size=1)
    auto = traj.signal_fractions()
    explicit = traj.signal_fractions(reference=None)
    assert torch.equal(auto, explicit)
    with pytest.raises(ValueError, match="reference='batch' needs at least 2 samples"):
        traj.signal_fractions(reference="batch")


# ---------------------------------------------------------------------- files that are not what they claim
def write_doc(path, doc_text: str, tensors: dict | None = None):
    """A safetensors file with ``doc_text`` as its chromaviz document (and 3 steps' tensors by default)."""
    if tensors is None:
        tensors = {name: torch.zeros(3, dtype=torch.float64) for name in ("timesteps", "log_snr", "alpha", "sigma")}
    save_file(tensors, str(path), metadata={"chromaviz": doc_text})
    return path


def good_doc(n: int = 3, **changes) -> dict:
    doc = {"metadata": {"status": "cancelled", "num_steps": 5}, "prompts": [None] * n, "num_steps": [5] * n}
    doc.update(changes)
    return doc


@pytest.mark.parametrize("doc_text, why", [
    ("{}", r"lacks \['metadata', 'prompts', 'num_steps'\]"),
    ("[1, 2]", "is a JSON list, not an object"),
    (json.dumps(good_doc(4)), r"the tensor 'timesteps' has shape \(3,\); 4 prompts need \(4,\)"),
    (json.dumps(good_doc(2)), r"the tensor 'timesteps' has shape \(3,\); 2 prompts need \(2,\)"),
    (json.dumps(good_doc(3, metadata={"status": "complete", "num_steps": 5})), "complete with 5 steps but holds 3"),
    (json.dumps(good_doc(3, metadata={"status": "done"})), "'status' is \"done\"; it must be one of"),
    (json.dumps(good_doc(3, prompts=[1, 2, 3])), "'prompts' must be a list of strings or nulls"),
    (json.dumps(good_doc(3, num_steps=[5, 5])), "3 prompts but 2 step counts"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ('{"metadata": {"x": NaN}, "prompts": [], "num_steps": []}', "not valid JSON"),
    ("not json", "not valid JSON"),
])
def test_a_bad_document_is_one_value_error_naming_the_file(tmp_path, doc_text, why):
    path = write_doc(tmp_path / "bad.safetensors", doc_text)
    with pytest.raises(ValueError, match=why) as exc:
        Trajectory.load(path)
    assert str(path) in str(exc.value)


def test_a_recording_shorter_than_the_prompts_is_refused(tmp_path):
    tensors = {name: torch.zeros(3, dtype=torch.float64) for name in ("timesteps", "log_snr", "alpha", "sigma")}
    tensors["x0"] = torch.zeros(2, 1, 3, 4, 4)
    path = write_doc(tmp_path / "short.safetensors", json.dumps(good_doc(3)), tensors)
    with pytest.raises(ValueError, match=r"'x0' has shape \(2, 1, 3, 4, 4\); 3 prompts need \(3, B, C, H, W\)"):
        Trajectory.load(path)


def test_a_png_a_folder_and_a_missing_file_are_named(tmp_path):
    png = tmp_path / "picture.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png)
    for target, why in [(png, "not a safetensors file"), (tmp_path, "it is a folder"), (tmp_path / "nope.safetensors", "no such file")]:
        with pytest.raises(ValueError, match=why) as exc:
            Trajectory.load(target)
        assert str(target) in str(exc.value)


def test_metadata_is_strict_json_with_non_finite_numbers_tagged(tmp_path, gaussian):
    # DPM-Solver's config holds lambda_min_clipped = -inf; the document must still be RFC 8259 JSON
    traj = run(gaussian, scheduler="dpmsolver++", num_inference_steps=3)
    assert traj.metadata["scheduler_config"]["lambda_min_clipped"] == -math.inf
    traj.metadata["extra"] = {"nan": math.nan, "inf": math.inf, "text": "Infinity", "np": np.float32(-np.inf)}
    path = traj.save(tmp_path / "dpm.safetensors")
    text = read_header(path)["__metadata__"]["chromaviz"]
    doc = json.loads(text, parse_constant=lambda name: pytest.fail(f"non-standard JSON literal {name}"))
    assert doc["metadata"]["scheduler_config"]["lambda_min_clipped"] == {"$float": "-Infinity"}
    loaded = Trajectory.load(path)
    assert loaded.metadata["scheduler_config"]["lambda_min_clipped"] == -math.inf
    extra = loaded.metadata["extra"]
    assert math.isnan(extra["nan"]) and extra["inf"] == math.inf and extra["np"] == -math.inf
    assert extra["text"] == "Infinity"  # a string stays a string


@pytest.mark.parametrize("where", ["/proc/no-such-folder/run.safetensors", "x" * 300 + ".safetensors"])
def test_a_save_that_cannot_be_written_names_the_file_and_leaves_nothing(tmp_path, gaussian, where):
    traj = run(gaussian, num_inference_steps=2)
    target = where if where.startswith("/") else tmp_path / where
    with pytest.raises(OSError, match="cannot save the trajectory to") as err:
        traj.save(target)
    assert str(target) in str(err.value) and ".partial" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_save_writes_the_steps_without_stacking_them(tmp_path, gaussian, monkeypatch):
    """No stacked copy of the recording is made, so a run that fitted in memory can be saved; the
    file reads back bit for bit (safetensors' own reader)."""
    traj = run(gaussian, num_inference_steps=4)
    monkeypatch.setattr(torch, "stack", lambda *a, **k: pytest.fail("save stacked the recording"))
    path = traj.save(tmp_path / "run.safetensors")
    monkeypatch.undo()
    with safe_open(str(path), framework="pt") as f:
        assert torch.equal(f.get_tensor("x0"), traj.x0) and torch.equal(f.get_tensor("final"), traj.final)
    assert not (tmp_path / "run.safetensors.partial").exists()
