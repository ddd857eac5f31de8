"""Command line: ``chromaviz run`` samples a built-in model and shows its chromatography;
``chromaviz report`` executes the parameterised report notebook."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._version import __version__


def _run(args: argparse.Namespace) -> int:
    from .analysis import compare
    from .models import TRAINED, load_builtin
    from .views.figures import save_chromatogram, save_strip
    from .sampling import SamplingError, sample
    from .noise.schedules import Schedule

    kwargs = {"size": args.size} if args.model in TRAINED else {"size": args.size, "schedule": Schedule.coerce(args.schedule)}
    model = load_builtin(args.model, **kwargs)
    out = Path(args.out)
    start = time.perf_counter()
    try:
        traj = sample(
            model, args.prompt, num_steps=args.steps, scheduler=args.scheduler, guidance=args.guidance,
            seed=args.seed, batch_size=args.batch, device=args.device, progress=not args.quiet,
        )
    except SamplingError as err:
        traj = err.trajectory
        print(f"error: {err}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    path = traj.save(out / "trajectory.safetensors")
    if len(traj) == 0:
        return 1
    comparison = compare(traj, model, method=args.method)
    strip = save_strip(traj, model.to_rgb, out / "strip.png")
    chrom = save_chromatogram(comparison, out / "chromatogram.png", title=f"{model.name}, {traj.metadata['scheduler_class']}, {len(traj)} steps")
    print(
        f"\n{model.name} · prompt {args.prompt!r} · {traj.metadata['scheduler_class']} · {len(traj)} steps · "
        f"batch {args.batch} · {args.size}×{args.size} · {elapsed:.2f} s ({len(traj) / elapsed:.1f} steps/s)"
    )
    print(
        f"measured signal fraction G / spectrum-aware theory s per level m ({args.method} bands, "
        f"theory from the {comparison.power_source} spectrum):\n"
    )
    print(comparison.format_table(args.rows))
    print(f"\nmax |G − s| over all steps and levels: {comparison.max_deviation:.4f}")
    print(f"wrote {path}\n      {strip}\n      {chrom}")
    return 0 if traj.status == "complete" else 1


def _report(args: argparse.Namespace) -> int:
    from .notebook.report import RESERVED, REPORT_NOTEBOOK, ReportCellError, format_parameters, notebook_parameters, run_report

    notebook = Path(args.notebook) if args.notebook else REPORT_NOTEBOOK
    if args.list:
        print(f"parameters of {notebook} (set them with -p NAME VALUE):")
        print(format_parameters(notebook_parameters(notebook), RESERVED))
        return 0
    start = time.perf_counter()
    try:
        files = run_report(args.parameter, args.out, notebook=notebook, progress=not args.quiet, cell_timeout=args.cell_timeout)
    except ReportCellError as err:
        print(f"chromaviz report: error: {err}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    figures = files.figures
    if "max_deviation" in figures:
        print(f"{figures.get('steps_recorded', '?')} steps, {figures.get('status', '?')}; "
              f"max |G − s| = {figures['max_deviation']:.4f} over levels {figures.get('levels', '?')}")
    print(f"report written in {elapsed:.1f} s:\n  {files.notebook}\n  {files.html}")
    for path in files.extra:
        print(f"  {path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import grid_from_pairs, sweep
    from .sweep.results import GALLERY, TABLE

    grid = grid_from_pairs(args.parameter)
    try:
        rows = sweep(grid, args.out, workers=args.workers, scheduler=args.scheduler, x=args.x, y=args.y,
                     reports=args.reports, torch_threads=args.torch_threads, progress=not args.quiet,
                     connect_timeout=args.connect_timeout)
    except KeyboardInterrupt:
        print(f"chromaviz sweep: interrupted; the finished cells are kept in {args.out} and listed in "
              f"{Path(args.out) / TABLE}; run the same command again to run the rest", file=sys.stderr)
        return 130
    failed = [r for r in rows if r["status"] != "complete"]
    for row in failed:
        print(f"chromaviz sweep: cell {row['cell']} failed: {row['error']}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} cells complete:\n  {Path(args.out) / TABLE}\n  {Path(args.out) / GALLERY}")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from .models import BUILTIN
    from .noise.schedulers import SCHEDULERS
    from .noise.schedules import PRESETS

    parser = argparse.ArgumentParser(prog="chromaviz", description="Resolution chromatography of diffusion models.")
    parser.add_argument("--version", action="version", version=f"chromaviz {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="sample a built-in model and compare its chromatography with theory")
    run.add_argument("--model", choices=sorted(BUILTIN), default="gaussian", help="built-in model (default: gaussian)")
    run.add_argument("--prompt", default=None, help="prompt, A1111 switches allowed, e.g. '[cat:moon:m=4]' (exemplars only)")
    run.add_argument("--steps", type=int, default=50, help="inference steps (default: 50)")
    run.add_argument("--scheduler", default="default", choices=["default", *SCHEDULERS], help="diffusers scheduler")
    run.add_argument("--schedule", default="scaled_linear", choices=sorted(PRESETS), help="noise schedule preset")
    run.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale (default: 1, none)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--batch", type=int, default=8, help="samples per run; ≥ 2 lets the measurement subtract the batch mean")
    run.add_argument("--size", type=int, default=64, help="height and width in pixels (default: 64)")
    run.add_argument("--method", choices=["rings", "pyramid"], default="rings", help="band decomposition")
    run.add_argument("--rows", type=int, default=6, help="steps shown in the table")
    run.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    run.add_argument("--out", default="chromaviz-output", help="output folder (default: ./chromaviz-output)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)

    report = sub.add_parser(
        "report", help="execute the report notebook (papermill); write it executed and as HTML",
        description="Execute chromaviz/notebook/report.ipynb with papermill into an output folder: report.ipynb (executed), "
                    "report.html (its rendering) and the files the report makes (images, tables, run.html with a "
                    "step scrubber that works without a kernel).",
    )
    report.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a report parameter, e.g. -p model exemplars -p steps 30 (see --list)")
    report.add_argument("-o", "--out", default="chromaviz-report", help="output folder (default: ./chromaviz-report)")
    report.add_argument("--list", action="store_true", help="list the report's parameters with their types and defaults")
    report.add_argument("--notebook", default=None, help="another report notebook (default: chromaviz/notebook/report.ipynb)")
    report.add_argument("--cell-timeout", type=float, default=600, help="seconds any one cell may run (default: 600)")
    report.add_argument("--quiet", action="store_true", help="no progress bar")
    report.set_defaults(func=_report)
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
    sweep.set_defaults(func=_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        parser.exit(2, f"chromaviz {args.command}: error: {err}\n")


if __name__ == "__main__":
    raise SystemExit(main())
