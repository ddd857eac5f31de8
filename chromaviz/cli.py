"""Command line: ``chromaviz run`` samples a built-in model and shows its chromatography;
``chromaviz report`` executes the parameterised report notebook; ``chromaviz sweep`` runs it on a grid.

Only the standard library and :mod:`chromaviz._checks` are imported here: ``--help`` and
``--version`` answer at once, and each command imports torch, diffusers or its extra's packages when
it runs (a missing extra is one line and exit status 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from . import __version__, _checks

EXIT_USAGE = 2
"""Exit status of every user mistake (one ``error:`` line on stderr, nothing run)."""

EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
"""Exit status after Ctrl-C (128 + SIGINT), once what was recorded is written."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``chromaviz run: error: ...`` and exit status 2, no usage block."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _option(check: Callable[[str, Any], Any], convert: Callable[[str], Any] = int, **limits) -> Callable[[str], Any]:
    """An argparse ``type`` that converts the text and applies a :mod:`chromaviz._checks` rule."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            kind = "an integer" if convert is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        try:
            return check("the value", value, **limits)
        except (TypeError, ValueError) as err:
            raise argparse.ArgumentTypeError(str(err).replace("the value ", "")) from None

    return parse


POSITIVE = _option(_checks.integer, minimum=1)
SEED = _option(_checks.integer, minimum=0, maximum=2**64 - 1)
GUIDANCE = _option(_checks.real, float, minimum=0.0)


def _device(text: str) -> str:
    """An argparse ``type``: a torch device this machine has (checked before anything loads)."""
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text!r}: this torch build sees no CUDA device "
                                             "(torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= count:
            raise argparse.ArgumentTypeError(f"{text!r}: there are {count} CUDA devices (cuda:0 … cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: chromaviz runs on cpu, cuda or mps, not {device.type}")
    return text


def _output_folder(option: str, path: str) -> Path:
    """``path`` checked to be a folder that can be made and written (a ValueError saying why not); nothing is created."""
    folder = Path(path)
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        if existing == folder:
            raise ValueError(f"{option} {path}: that is an existing file, not a folder")
        raise ValueError(f"{option} {path}: {existing} is a file, so no folder can be made inside it")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot write in {existing} ({err.strerror or err})") from None
    return folder


def _silence_libraries() -> None:
    """No loading noise from transformers and diffusers (their own verbosity and progress-bar settings)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()


def _run(args: argparse.Namespace) -> int:
    from .runs import RunSpec
    from .views.figures import save_chromatogram, save_strip

    spec = RunSpec(model=args.model, prompt=args.prompt, scheduler=args.scheduler, schedule=args.schedule,
                   steps=args.steps, seed=args.seed, size=args.size or RunSpec.size, batch=args.batch,
                   guidance=args.guidance, method=args.method, device=args.device)
    out = _output_folder("--out", args.out)
    _silence_libraries()  # the bundled models' loading messages say nothing to a user
    if args.size is None:  # the model's own size (the shapes model was trained at 32×32)
        from .models.registry import load_model

        model = load_model(spec.model, schedule=spec.schedule, device=spec.device or None)
        spec = dataclasses.replace(spec, size=model.default_size[0])
    else:
        model = spec.load()
    plan = spec.check(model, option="--")  # the run as sample() checks it, planned once; nothing sampled yet
    interrupted = 0
    try:
        run = spec.run(model, plan=plan, progress=not args.quiet, keep_partial=True)
    except KeyboardInterrupt:  # before the first step: nothing recorded
        how, status = _interrupted()
        print(f"chromaviz run: {how} before sampling started; nothing written", file=sys.stderr)
        return status
    traj, elapsed = run.trajectory, run.seconds
    if isinstance(run.error, KeyboardInterrupt):  # Ctrl-C or SIGTERM: write what was recorded, then exit 130 / 143
        how, interrupted = _interrupted()
        print(f"chromaviz run: {how} after {len(traj)} steps; writing them, compared without the model's ideal "
              "process", file=sys.stderr)
    elif run.error is not None:
        print(f"chromaviz run: error: {run.error}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    path = traj.save(out / "trajectory.safetensors")
    if len(traj) == 0:
        print(f"wrote {path} (no steps)")
        return interrupted or 1
    comparison = run.comparison
    strip = save_strip(traj, model.to_rgb, out / "strip.png")
    chrom = save_chromatogram(comparison, out / "chromatogram.png", title=f"{model.name}, {traj.metadata['scheduler_class']}, {len(traj)} steps")
    print(
        f"\n{model.name} · prompt {args.prompt!r} · {traj.metadata['scheduler_class']} · {len(traj)} "
        f"step{'' if len(traj) == 1 else 's'} · "
        f"batch {args.batch} · {spec.size}×{spec.size} · {elapsed:.2f} s ({len(traj) / elapsed:.1f} steps/s)"
    )
    print(f"\nthe expected chromatography ({args.method} bands):\n")
    print(comparison.format_band_table(args.rows) + "\n")
    print(
        f"measured signal fraction G / the run as sampled p / the model's ideal process i / the latest each band "
        f"can form for this spectrum s per level m ({args.method} bands, "
        + ("fitted to this run: no data power known" if comparison.fitted else
           f"theory from the {comparison.power_source} spectrum") + "):\n"
    )
    print(comparison.format_table(args.rows))
    print("\ninheritance per level (fractions of the data power, measured G / predicted p): at start = already in x̂0 "
          "at the first step, taken from the initial noise; missing = never generated\n")
    print(comparison.inheritance.format_table())
    if comparison.fitted:
        print("\nno test: no data power is known for this model, so every curve is fitted to this run "
              "(give data, e.g. compare(..., data=folder), for a measurement)")
    else:
        replay = (f"replay max |G − p| over all steps and levels: {comparison.max_deviation:.2g} (a consistency check "
                  "of the model and the code)" if comparison.prediction_kind == "exact" else
                  f"max |G − p|: {comparison.max_deviation:.3f} (p: the Gaussian of the same data power as sampled, "
                  f"{comparison.prediction_kind}; not a check: far from G where the data is not Gaussian)")
        print(f"\n{replay}; max |G − s|: {comparison.max_deviation_continuous:.4f}"
              + (f"; max |G − i| (ideal process): {comparison.max_deviation_ideal:.3f}" if comparison.ideal is not None
                 else "")
              + (f", {comparison.ideal_coverage:.0%} of cells within i ± 2σ" if comparison.ideal_std is not None else ""))
    print(f"wrote {path}\n      {strip}\n      {chrom}\n      {chrom.with_suffix('.svg')}")
    if interrupted:
        return interrupted
    return 0 if traj.status == "complete" else 1


def _report(args: argparse.Namespace) -> int:
    from .notebook.report import (
        RESERVED, REPORT_NOTEBOOK, ReportCellError, ReportInterrupted, format_parameters, notebook_parameters, run_report,
    )

    notebook = Path(args.notebook) if args.notebook else REPORT_NOTEBOOK
    if args.list:
        parameters = notebook_parameters(notebook)
        print(f"parameters of {notebook} (set them with -p NAME VALUE):")
        print(format_parameters(parameters, RESERVED))
        return 0
    out = _output_folder("-o/--out", args.out)
    if args.quiet:
        _silence_libraries()
    start = time.perf_counter()
    try:
        files = run_report(args.parameter, out, notebook=notebook, progress=not args.quiet, cell_timeout=args.cell_timeout,
                           show_code=args.show_code)
    except ReportCellError as err:
        print(f"chromaviz report: error: {err}", file=sys.stderr)
        return 1
    except ReportInterrupted as err:
        how = "terminated" if err.signum == signal.SIGTERM else "interrupted"
        print(f"chromaviz report: {how} {err}", file=sys.stderr)
        return 128 + err.signum
    elapsed = time.perf_counter() - start
    figures = files.figures
    if "max_deviation" in figures:
        recorded = figures.get("steps_recorded", "?")
        print(f"{recorded} step{'' if recorded == 1 else 's'}, {figures.get('status', '?')}; "
              f"replay max |G − p| = {figures['max_deviation']:.2g} (a consistency check)"
              + (f", max |G − s| = {figures['max_deviation_continuous']:.4f} (continuous)"
                 if "max_deviation_continuous" in figures else "")
              + f" over levels {figures.get('levels', '?')}")
    if "band_verdict" in figures:
        print(f"the run is {figures['band_verdict']}")
    print(f"report written in {elapsed:.1f} s:\n  {files.notebook}\n  {files.html}")
    for path in files.extra:
        print(f"  {path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import grid_from_pairs, sweep
    from .sweep.results import GALLERY, TABLE

    grid = grid_from_pairs(args.parameter)
    _output_folder("-o/--out", args.out)
    try:
        rows = sweep(grid, args.out, workers=args.workers, scheduler=args.scheduler, x=args.x, y=args.y,
                     reports=args.reports, torch_threads=args.torch_threads, progress=not args.quiet,
                     connect_timeout=args.connect_timeout)
    except KeyboardInterrupt:
        how, status = _interrupted()
        print(f"chromaviz sweep: {how}; the finished cells are kept in {args.out} and listed in "
              f"{Path(args.out) / TABLE}; run the same command again to run the rest", file=sys.stderr)
        return status
    failed = [r for r in rows if r["status"] != "complete"]
    for row in failed:
        print(f"chromaviz sweep: cell {row['cell']} failed: {row['error']}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} cells complete:\n  {Path(args.out) / TABLE}\n  {Path(args.out) / GALLERY}")
    return 1 if failed else 0


class _Choices(Sequence):
    """An option's choices, computed the first time argparse asks for them (an option given, or the
    subcommand's ``--help``): naming the built-in models and schedulers imports the library, which
    ``chromaviz --help`` and ``--version`` do not wait for. Options with these choices need a
    ``metavar``: without one, ``add_argument`` lists the choices at once."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self._names, self._cache = names, None

    def _get(self) -> Sequence[str]:
        if self._cache is None:
            self._cache = tuple(self._names())
        return self._cache

    def __getitem__(self, index):
        return self._get()[index]

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, name: object) -> bool:
        return name in self._get()


def _builtin_models() -> list[str]:
    from .models import BUILTIN

    return sorted(BUILTIN)


def _scheduler_names() -> list[str]:
    from .noise.schedulers import SCHEDULERS

    return ["default", *SCHEDULERS]


def _schedule_presets() -> list[str]:
    from .noise.schedules import PRESETS

    return ["default", *sorted(PRESETS)]


def _explore(args: argparse.Namespace) -> int:
    """``chromaviz explore``: the explorer alone, as an app for a projector (Voilà on loopback: no code
    cells, the built-in default model), until Ctrl-C. A notebook holding only the explorer is written
    to a temporary folder, which is also where its Export button writes pages."""
    import importlib.util
    import json
    import socket
    import subprocess
    import webbrowser

    if importlib.util.find_spec("voila") is None:
        raise _checks.MissingExtra('chromaviz explore needs Voilà, which the explorer extra installs: '
                                   'pip install -c constraints.txt -e ".[explorer]"')
    port = args.port
    if port == 0:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
            "source": "from chromaviz.widgets import Explorer\n\nExplorer()"}
    notebook = {"cells": [cell], "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    with tempfile.TemporaryDirectory(prefix="chromaviz-explore-") as folder:
        path = Path(folder) / "chromaviz-explorer.ipynb"
        path.write_text(json.dumps(notebook), encoding="utf-8")
        command = [sys.executable, "-m", "voila", str(path), "--no-browser", "--Voila.ip=127.0.0.1", f"--port={port}",
                   "--strip_sources=True", "--show_tracebacks=False", "--theme=light", "--Voila.log_level=WARN",
                   f"--Voila.root_dir={folder}"]
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
        server = subprocess.Popen(command, cwd=folder, env=env)
        url = f"http://127.0.0.1:{port}/"
        print(f"chromaviz explore: {url} (the explorer as an app, on this machine only; Ctrl-C to stop)", flush=True)
        try:
            if not args.no_browser:
                webbrowser.open(url)
            return server.wait()
        finally:
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(15)
                except subprocess.TimeoutExpired:
                    server.kill()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="chromaviz", description="Resolution chromatography of diffusion models.")
    parser.add_argument("--version", action="version", version=f"chromaviz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sample a built-in model and compare its chromatography with theory")
    run.add_argument("--model", choices=_Choices(_builtin_models), default="gaussian", metavar="NAME",
                     help="built-in model: %(choices)s (default: %(default)s)")
    run.add_argument("--prompt", default=None, help="prompt in AUTOMATIC1111's prompt language (docs/prompts.md), e.g. '[cat:moon:m=4]'; exemplars, layout and shapes take prompts, gaussian none")
    run.add_argument("--steps", type=POSITIVE, default=50, help="inference steps (default: 50)")
    run.add_argument("--scheduler", default="default", choices=_Choices(_scheduler_names), metavar="NAME",
                     help="diffusers scheduler: %(choices)s (default: %(default)s)")
    run.add_argument("--schedule", default="default", choices=_Choices(_schedule_presets), metavar="NAME",
                     help="noise schedule preset of the exact models: %(choices)s (default: the model's own: "
                          "scaled_linear; layout: squaredcos_cap_v2 rescaled to zero terminal SNR)")
    run.add_argument("--guidance", type=GUIDANCE, default=1.0, help="classifier-free guidance scale (default: 1, none)")
    run.add_argument("--seed", type=SEED, default=0, help="seed of the initial noise (default: 0)")
    run.add_argument("--batch", type=POSITIVE, default=8,
                     help="samples per run; ≥ 2 lets the measurement subtract the batch mean (default: 8)")
    run.add_argument("--size", type=POSITIVE, default=None,
                     help="height and width in pixels (default: the model's own: 64, the shapes model 32)")
    run.add_argument("--method", choices=["rings", "pyramid"], default="rings",
                     help="band decomposition: octave rings of the FFT or the box pyramid (default: rings)")
    run.add_argument("--rows", type=POSITIVE, default=6, help="steps shown in the table (default: 6)")
    run.add_argument("--device", type=_device, default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("-o", "--out", default="chromaviz-output", help="output folder (default: ./chromaviz-output)")
    run.add_argument("--quiet", action="store_true", help="no progress bar and no library loading messages")
    run.set_defaults(func=_run, extra=None)

    report = sub.add_parser(
        "report", help="execute the report notebook (papermill); write it executed and as HTML",
        description="Execute chromaviz/notebook/report.ipynb with papermill into an output folder: report.ipynb (executed), "
                    "report.html (one self-contained page that works offline, with the step scrubber inside; code "
                    "hidden unless --show-code) and the files the report makes (figures as PNG and SVG, tables, "
                    "run.html: the scrubber alone).",
    )
    report.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a report parameter, e.g. -p model exemplars -p steps 30 (see --list)")
    report.add_argument("-o", "--out", default="chromaviz-report", help="output folder (default: ./chromaviz-report)")
    report.add_argument("--list", action="store_true", help="list the report's parameters with their types and defaults")
    report.add_argument("--notebook", default=None, help="another report notebook (default: chromaviz/notebook/report.ipynb)")
    report.add_argument("--cell-timeout", type=POSITIVE, default=600, help="seconds any one cell may run (default: 600)")
    report.add_argument("--show-code", action="store_true",
                        help="keep the code cells in report.html (report.ipynb always has them)")
    report.add_argument("--quiet", action="store_true", help="no progress bar and no library loading messages")
    report.set_defaults(func=_report, extra="report")

    sweep = sub.add_parser(
        "sweep", help="run the report's computation on a grid of parameters as Dask tasks; a table and a gallery",
        description="The Cartesian grid of the report's parameters (-p NAME V1 V2 ...), each cell sampled and compared "
                    "as one Dask task, on a local cluster of worker processes or on an existing one (--scheduler). "
                    "Writes sweep.csv (one row per cell), gallery.html and cells/<cell>/; cells finished in an earlier "
                    "run into the same folder are skipped.",
    )
    sweep.add_argument("-p", "--parameter", nargs="+", action="append", default=[], metavar=("NAME", "VALUE"),
                       help="a report parameter and its values, e.g. -p scheduler ddim euler -p steps 20 50 "
                            "(names and types as in chromaviz report --list)")
    sweep.add_argument("-o", "--out", default="chromaviz-sweep", help="output folder (default: ./chromaviz-sweep)")
    where = sweep.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, help="worker processes of the local cluster (default: the CPU cores)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="address of a running Dask scheduler, e.g. tcp://HOST:8786 (not a diffusers scheduler: "
                            "sweep those with -p scheduler ...)")
    sweep.add_argument("--x", default=None, metavar="NAME", help="parameter across the gallery (default: the first swept)")
    sweep.add_argument("--y", default=None, metavar="NAME", help="parameter down the gallery (default: the second swept)")
    sweep.add_argument("--reports", action="store_true", help="also write each cell's full report into cells/<cell>/")
    sweep.add_argument("--torch-threads", type=int, default=None,
                       help="torch threads per cell (default: 1 on the local cluster, torch's default on --scheduler)")
    sweep.add_argument("--connect-timeout", type=float, default=5.0, help="seconds to wait for --scheduler (default: 5)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(func=_sweep, extra="sweep")

    explore = sub.add_parser("explore", help="open the explorer as an app (Voilà on loopback): no code, sized for a projector",
                             description="Start the explorer with the built-in default model as a Voilà app on 127.0.0.1 "
                                         "(no code cells) and open it in the browser; Ctrl-C stops it.")
    explore.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    explore.add_argument("--no-browser", action="store_true", help="only print the address; open no browser")
    explore.set_defaults(func=_explore, extra="explorer")
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, SLURM, Kubernetes, ``docker stop``), handled as Ctrl-C is:
    the run stops where it is and keeps what it recorded."""


_terminated = threading.Event()


def _terminate(signum: int, frame: Any) -> None:
    _terminated.set()
    raise Terminated


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` in the main thread (elsewhere: unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted() -> tuple[str, int]:
    """What stopped the command, and its exit status: 128 + the signal's number, as shells report
    it (143 for SIGTERM, 130 for Ctrl-C)."""
    return ("terminated", EXIT_TERMINATED) if _terminated.is_set() else ("interrupted", EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 1 for a failed run, 2 for a user mistake,
    130 on Ctrl-C, 143 on SIGTERM)."""
    try:  # reading the arguments imports torch (the models' and schedulers' names): seconds a Ctrl-C may land in
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("chromaviz: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    warnings.formatwarning = _one_line_warning
    with _sigterm_as_interrupt():
        return _main(parser, args)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning on the command line: its category and message, without the source line that raised it."""
    return f"chromaviz: {category.__name__}: {message}\n"


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    try:
        if args.extra is not None:  # before anything imports it: one line naming the extra to install
            _checks.require_extra(args.extra, f"chromaviz {args.command}")
        return args.func(args)
    except _checks.MissingExtra as err:
        parser.exit(EXIT_USAGE, f"{err}\n")
    except ValueError as err:  # a user mistake found before any work; one line
        message = str(err).strip() or type(err).__name__  # one error line; any more lines are indented details
        parser.exit(EXIT_USAGE, f"chromaviz {args.command}: error: {message}\n")
    except KeyboardInterrupt:
        how, status = _interrupted()
        print(f"chromaviz {args.command}: {how}", file=sys.stderr)
        return status
    except BrokenPipeError:  # the reader of stdout left (``| head``): stop quietly, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
