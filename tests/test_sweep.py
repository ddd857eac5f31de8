"""Sweeps on Dask: the grid and its checks, a local cluster, a real scheduler with a worker killed, faults.

Clusters are real: ``LocalCluster`` worker processes, and ``dask scheduler`` / ``dask worker``
processes started (and stopped, by pid) on 127.0.0.1. Runs are tiny Gaussian-model runs (32×32,
batch 2, a few steps).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chromaviz.cli import main
from chromaviz.notebook.report import read_figures
from chromaviz.sweep import SweepError, make_grid, read_table, sweep
from chromaviz.sweep.grid import axes, grid_from_pairs

SMALL = {"size": [32], "batch": [2]}
DASK = Path(sys.executable).with_name("dask")


def _ctrl_c_as_from_a_terminal() -> None:
    """In the child: SIGINT raises KeyboardInterrupt, even when the tests run under a background shell (which
    starts its commands with SIGINT ignored, and Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cell_files(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*/cell.json")}


# ---------------------------------------------------------------------- the grid (no cluster)
def test_grid_is_the_cartesian_product_of_typed_report_parameters():
    cells = make_grid({"scheduler": ["ddim", "euler"], "steps": [4, "6"], "guidance": [1]})
    assert [c.swept for c in cells] == [
        {"scheduler": "ddim", "steps": 4, "guidance": 1.0}, {"scheduler": "ddim", "steps": 6, "guidance": 1.0},
        {"scheduler": "euler", "steps": 4, "guidance": 1.0}, {"scheduler": "euler", "steps": 6, "guidance": 1.0},
    ]
    assert cells[0].name == "scheduler-ddim_steps-4_guidance-1.0"
    assert cells[0].values["model"] == "gaussian" and "output_dir" not in cells[0].values  # report defaults
    assert isinstance(cells[1].values["guidance"], float) and cells[1].pairs() == [("scheduler", "ddim"), ("steps", "6"), ("guidance", "1.0")]
    odd = make_grid({"model": ["exemplars"], "prompt": ["a cat/dog", "a cat dog"]})  # prompts the model takes
    assert len({c.name for c in odd}) == 2 and all(re.fullmatch(r"[A-Za-z0-9._+=-]+", c.name) for c in odd)
    # the product may pair values a model ignores: the report refuses guidance 3 for the
    # unconditional model, a sweep runs that cell as the report's notebook would (unguided)
    assert len(make_grid({"model": ["gaussian", "exemplars"], "guidance": [1, 3]})) == 4
    assert axes({"a": [1, 2], "b": [1], "c": [1, 2]}, None, None) == ("a", "c")
    assert axes({"a": [1, 2], "c": [1, 2]}, "c", None) == ("c", "a")


@pytest.mark.parametrize("grid, kind, words", [
    ({"stepz": [4]}, ValueError, ["'stepz' is not a parameter", "did you mean 'steps'"]),
    ({"steps": []}, SweepError, ["'steps' has an empty value list"]),
    ({"steps": ["x"]}, ValueError, ["'steps' expects an integer", "got 'x'"]),
    ({"steps": [2.5]}, ValueError, ["'steps' expects an integer", "got '2.5'"]),
    ({"output_dir": ["a"]}, ValueError, ["'output_dir' is set by the command itself"]),
    ({"steps": [4, 4]}, SweepError, ["repeats the value 4"]),
    ({"prompt": [3]}, TypeError, ["'prompt' takes text", "got 3"]),
    ({"steps": 4}, TypeError, ["grid['steps'] must be a list"]),
])
def test_bad_grids_name_the_parameter_before_anything_runs(grid, kind, words, tmp_path):
    with pytest.raises(kind) as err:
        sweep(grid, tmp_path / "out", workers=1)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, words", [
    (["-p", "stepz", "4"], "'stepz' is not a parameter"),
    (["-p", "steps", "four"], "'steps' expects an integer"),
    (["-p", "steps"], "'steps' has an empty value list"),
    (["-p", "steps", "4", "-p", "steps", "5"], "'steps' is given twice"),
    (["-p", "steps", "4", "5", "--x", "seed"], "x='seed' is not a parameter of this sweep"),
    (["-p", "steps", "4", "--workers", "0"], "workers must be"),
    (["-p", "steps", "4", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "not allowed with argument"),
])
def test_command_line_mistakes_exit_2_before_any_cell(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", *argv, "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("out, words", [
    ("a-file", "that is an existing file, not a folder"),
    ("a-file/sub", "is a file, so no folder can be made inside it"),
])
def test_out_at_or_inside_a_file_exits_2_before_any_cell(out, words, tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "-p", "steps", "4", "-o", str(tmp_path / out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_unreachable_scheduler_exits_2_within_seconds(tmp_path, capsys):
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_:
        main(["sweep", "-p", "steps", "4", "-o", str(tmp_path / "out"), "--scheduler", address, "--connect-timeout", "2"])
    assert exit_.value.code == 2 and time.perf_counter() - start < 15
    assert f"cannot reach the Dask scheduler at '{address}' within 2 s" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_port_that_accepts_but_never_answers_exits_2_within_seconds(tmp_path, capsys):
    """Dask's own connect would wait for its handshake without a limit; the sweep gives up after --connect-timeout."""
    import threading

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        accepted = []
        threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        start = time.perf_counter()
        with pytest.raises(SystemExit) as exit_:
            main(["sweep", "-p", "steps", "4", "-o", str(tmp_path / "out"), "--scheduler", address, "--connect-timeout", "2"])
        assert exit_.value.code == 2 and time.perf_counter() - start < 15
        for conn, _ in accepted:
            conn.close()
    assert f"cannot reach the Dask scheduler at '{address}' within 2 s" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grid_from_command_line_groups():
    assert grid_from_pairs([["steps", "4", "6"], ["scheduler", "ddim"]]) == {"steps": ["4", "6"], "scheduler": ["ddim"]}


# ---------------------------------------------------------------------- a local cluster
@pytest.mark.slow
def test_local_cluster_2x2_matches_the_reports_of_the_same_runs(tmp_path):
    """Two worker processes, a 2×2 grid with --reports: every row's figures equal those its own report recorded.

    Each report is a separate papermill run of ``chromaviz report`` with the cell's parameters (the
    same seed), so the sweep's in-process computation is checked against the report's.
    """
    out = tmp_path / "sweep"
    rows = sweep({"scheduler": ["ddim", "euler"], "steps": [4, 6], **SMALL}, out, workers=2, reports=True, progress=False)
    assert len(rows) == 4 and [r["status"] for r in rows] == ["complete"] * 4, rows
    assert {r["scheduler"] for r in rows} == {"ddim", "euler"} and {r["steps"] for r in rows} == {4, 6}
    assert len({r["worker"] for r in rows}) >= 1 and all(r["run_device"] == "cpu" for r in rows)
    table = read_table(out / "sweep.csv")
    assert [t["cell"] for t in table] == [r["cell"] for r in rows]
    for row, line in zip(rows, table):
        assert float(line["max_deviation"]) == pytest.approx(row["max_deviation"], rel=1e-12)
        born = row["birth_step_measured_m1"]
        assert line["birth_step_measured_m1"] == ("" if born is None else str(born))  # None: never born, an empty cell
        figures = read_figures(out / "cells" / row["cell"] / "report.ipynb")
        levels = figures["levels"]
        assert row["levels"] == levels and row["steps_recorded"] == figures["steps_recorded"] == row["steps"]
        assert row["max_deviation"] == pytest.approx(figures["max_deviation"], rel=1e-6, abs=1e-9)
        assert [row[f"birth_step_measured_m{m}"] for m in levels] == figures["measured_half_steps"]
        assert [row[f"birth_step_m2law_m{m}"] for m in levels] == figures["m2_half_steps"]
        assert [m for m in levels if row[f"inherited_m{m}"]] == figures["inherited_levels"]
    gallery = (out / "gallery.html").read_text(encoding="utf-8")
    assert gallery.count("data:image/png;base64,") == 8  # each cell's final samples and chromatogram
    assert all((out / "cells" / r["cell"] / "samples.png").is_file() for r in rows)
    assert all(f'href="cells/{r["cell"]}/report.html"' in gallery for r in rows)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", gallery) and "<script" not in gallery  # offline
    page = (out / "cells" / rows[0]["cell"] / "index.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "birth step measured" in page


@pytest.mark.slow
def test_a_failing_cell_is_recorded_and_a_rerun_skips_finished_cells(tmp_path, capsys):
    out = tmp_path / "sweep"
    # A folder passes the pre-flight (it could hold a pipeline, and the cells may run elsewhere), but
    # this one holds none: its cell fails as it loads the model.
    empty = tmp_path / "not-a-pipeline"
    empty.mkdir()
    argv = ["sweep", "-p", "model", "gaussian", str(empty), "-p", "steps", "3", "-p", "size", "32", "-p", "batch", "2",
            "-o", str(out), "--workers", "1", "--quiet"]
    assert main(argv) == 1
    rows = {r["model"]: r for r in read_table(out / "sweep.csv")}
    failed, done = rows[str(empty)], rows["gaussian"]
    assert f"cell {failed['cell']} failed" in capsys.readouterr().err
    assert done["status"] == "complete" and done["error"] == ""
    assert failed["status"] == "error" and "not a diffusers pipeline" in failed["error"]
    assert "ValueError" in (out / "cells" / failed["cell"] / "index.html").read_text(encoding="utf-8")
    before = _cell_files(out)
    assert main(argv) == 1  # the finished cell is kept, the failed one runs again
    after = _cell_files(out)
    assert after[done["cell"]] == before[done["cell"]]
    assert after[failed["cell"]] != before[failed["cell"]]
    assert len(read_table(out / "sweep.csv")) == 2


@pytest.mark.slow
def test_ctrl_c_keeps_every_finished_cell_and_their_table(tmp_path):
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "chromaviz.cli", "sweep", "-p", "steps", *map(str, range(20, 30)), "-p", "batch", "2",
           "-p", "size", "32", "-o", str(out), "--workers", "1", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ctrl_c_as_from_a_terminal)
    try:
        deadline = time.monotonic() + 240
        while not _cell_files(out) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _cell_files(out), "no cell finished"
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group, workers too
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted; the finished cells are kept" in err
    assert "Traceback" not in err and "WARNING" not in err and "still alive" not in err, err  # Dask's noise stays off
    finished = _cell_files(out)
    table = read_table(out / "sweep.csv")
    assert 1 <= len(table) < 10 and {t["cell"] for t in table} == set(finished)
    assert all(t["status"] == "complete" for t in table)
    assert "not run" in (out / "gallery.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------- an existing cluster
@pytest.fixture
def dask_cluster():
    """``dask scheduler`` and two ``dask worker`` processes (no nanny) on 127.0.0.1; stopped by pid."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                           "--host", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address, procs[1:]
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_scheduler_address_and_a_worker_killed_mid_sweep(dask_cluster, tmp_path):
    from distributed import Client

    address, workers = dask_cluster
    out = tmp_path / "sweep"
    with Client(address, timeout=60) as client:
        client.wait_for_workers(2, timeout=120)
        pids = client.run(os.getpid)  # worker address → pid
        cmd = [sys.executable, "-m", "chromaviz.cli", "sweep", "-p", "steps", *map(str, range(20, 28)), "-p", "batch", "4",
               "-o", str(out), "--scheduler", address, "--torch-threads", "1", "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            victim, lost = None, []
            deadline = time.monotonic() + 240
            while victim is None and time.monotonic() < deadline and proc.poll() is None:
                if _cell_files(out):  # mid-sweep: a cell has finished
                    busy = {w: keys for w, keys in client.processing().items() if keys}
                    if busy:
                        worker, lost = next(iter(busy.items()))
                        victim = pids[worker]
                time.sleep(0.1)
            assert victim is not None, "no worker was busy mid-sweep"
            os.kill(victim, signal.SIGKILL)
            stdout, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    table = read_table(out / "sweep.csv")
    assert len(table) == 8 and all(t["status"] == "complete" for t in table)
    survivor = next(p.pid for p in workers if p.pid != victim)
    rerun = [t for t in table if any(f"-{t['cell']}-" in str(k) for k in lost)]
    # A lost cell the victim finished in the instant between the look and the kill keeps its name;
    # every other one ran again, on the survivor.
    again = [t for t in rerun if not t["worker"].endswith(f":{victim}")]
    assert rerun and all(t["worker"].endswith(f":{survivor}") for t in again), (lost, table)


@pytest.mark.slow
def test_a_scheduler_without_workers_says_so_while_the_cells_wait(tmp_path):
    """A sweep against a scheduler that has no worker waited without a word."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweeping = None
    try:
        cmd = [sys.executable, "-m", "chromaviz.cli", "sweep", "-p", "steps", "2", "-p", "size", "32", "-o", str(tmp_path / "s"),
               "--scheduler", address, "--connect-timeout", "60", "--quiet"]
        sweeping = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                    preexec_fn=_ctrl_c_as_from_a_terminal)
        seen, deadline = b"", time.monotonic() + 120
        while b"the cells wait for one" not in seen:
            chunk = os.read(sweeping.stderr.fileno(), 4096)
            assert chunk and time.monotonic() < deadline, seen.decode(errors="replace")
            seen += chunk
        assert f"no worker is connected to the scheduler at {address}".encode() in seen
        os.killpg(sweeping.pid, signal.SIGINT)
        _, err = sweeping.communicate(timeout=60)
        assert sweeping.returncode == 130 and b"Traceback" not in seen + err, (seen + err).decode(errors="replace")
    finally:
        for proc in (sweeping, scheduler):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.mark.slow
def test_a_sweep_across_pipeline_folders_shows_each_cells_samples(tmp_path):
    """``-p model FOLDER1 FOLDER2``: a UNet and a flow-matching transformer pipeline (tiny, random
    weights, written by save_pretrained), on CPU workers; the gallery shows each cell's decoded samples."""
    import diffusers_models as tiny

    folders = [tiny.save_sd(tmp_path / "sd"), tiny.save_sd3(tmp_path / "sd3")]
    out = tmp_path / "sweep"
    code = main(["sweep", "-p", "model", *map(str, folders), "-p", "steps", "2", "-p", "size", "32", "-p", "batch", "2",
                 "-o", str(out), "--workers", "1", "--quiet"])
    table = read_table(out / "sweep.csv")
    assert code == 0 and [t["status"] for t in table] == ["complete", "complete"], table
    gallery = (out / "gallery.html").read_text(encoding="utf-8")
    assert gallery.count('class="samples"') == 2 and gallery.count("data:image/png;base64,") == 4


@pytest.mark.slow
def test_save_trajectory_writes_each_cells_run(tmp_path, capfd):
    """``-p save_trajectory true`` wrote nothing in a sweep (only ``--reports`` ran the report that saves it);
    the cluster closes without Dask's "Worker process still alive … killing"."""
    from chromaviz.sampling import Trajectory

    out = tmp_path / "sweep"
    rows = sweep({"steps": [3], "save_trajectory": [True], **SMALL}, out, workers=1, progress=False)
    assert [r["status"] for r in rows] == ["complete"]
    traj = Trajectory.load(out / "cells" / rows[0]["cell"] / "trajectory.safetensors")
    assert traj.status == "complete" and len(traj) == 3 and traj.sample.shape == (2, 3, 32, 32)
    assert "still alive" not in capfd.readouterr().err


@pytest.mark.parametrize("text", ["[]", '{"row": []}', '{"row": {"status": "complete"}, "parameters": 3}', "null"])
def test_a_damaged_cell_file_means_the_cell_runs_again(tmp_path, text):
    """A ``cell.json`` holding ``[]`` stopped every re-run with a raw AttributeError."""
    from chromaviz.sweep import make_grid
    from chromaviz.sweep.results import cell_folder, finished_cells

    (cell,) = make_grid({"steps": [4]})
    folder = cell_folder(tmp_path, cell)
    folder.mkdir(parents=True)
    (folder / "cell.json").write_text(text, encoding="utf-8")
    assert finished_cells(tmp_path, [cell]) == {}
