"""`make bench` / `python -m bench.run`: every benchmark against runs/demo, one results file.

Runs each `bench/<name>.py` module's `run(runs_dir, quick)` in turn (one failing does not stop
the others; it is recorded and the exit code says so), then writes bench/results.json and
bench/tradeoff.png (macro-F1 vs latency vs size of every model variant in the comparison
table). `python -m bench.<name>` runs one (`main_for`) and writes bench/<name>.json.

The one command line of the benchmarks: `python -m bench.run [--runs DIR] [--quick]
[--only NAME]...` (`edgelstm bench` runs it in the checkout); `argument_parser` gives a single
benchmark's module the same `--runs`/`--quick`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import bench
from bench.plots import tradeoff_plot
from edge_lstm.errors import EdgeLstmError

log = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run", "plots", "common", "bare_subscriber"}  # helpers, not benchmarks
SCHEMA = "edgelstm.bench/1"
DEFAULT_RUNS_DIR = Path("runs/demo")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def say(message: str) -> None:
    print(message, flush=True)


def argument_parser(description: str, quick: bool = True) -> argparse.ArgumentParser:
    """`--runs DIR` (and `--quick`), as every benchmark's command line spells them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--runs",
        dest="runs_dir",
        metavar="DIR",
        type=Path,
        default=DEFAULT_RUNS_DIR,
        help="Runs folder written by `make demo` (default: %(default)s).",
    )
    if quick:
        parser.add_argument(
            "--quick", action="store_true", help="Fewer repeats (a smoke test, not a figure)."
        )
    return parser


def benchmark_names() -> list[str]:
    """Every bench/<name>.py that is a benchmark, in a fixed order."""
    names = [m.name for m in pkgutil.iter_modules(bench.__path__) if not m.ispkg]
    return sorted(n for n in names if n not in NOT_BENCHMARKS)


def check_runs_dir(runs_dir: Path) -> None:
    """The benchmarks measure the demo's models: refuse early, in one line, without them."""
    needed = [runs_dir / "deploy" / "manifest.json", runs_dir / "student" / "comparison.json"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise EdgeLstmError(
            f"{', '.join(missing)} missing: run `make demo` first (the benchmarks measure "
            f"its models), or pass --runs DIR"
        )


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for module in ("numpy", "onnxruntime", "torch", "paho.mqtt", "tensorrt"):
        try:
            out[module] = getattr(importlib.import_module(module), "__version__", "?")
        except ImportError:
            out[module] = None
    return out


def machine() -> dict[str, Any]:
    """Enough about the machine to tell whether two results files are comparable."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run_one(name: str, runs_dir: Path, quick: bool) -> dict[str, Any]:
    """{"seconds", "result"} or {"seconds", "error", "traceback"} for one benchmark."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench.{name}")
        result = module.run(runs_dir, quick=quick)
    except Exception as exc:  # one broken benchmark must not hide the others' figures
        log.error("benchmark %s failed: %s", name, exc)
        return {
            "seconds": round(time.monotonic() - started, 2),
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
    return {"seconds": round(time.monotonic() - started, 2), "result": result}


def run_all(runs_dir: Path, quick: bool = False, only: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmarks, writes bench/results.json + bench/tradeoff.png, returns the dict."""
    runs_dir = Path(runs_dir)
    check_runs_dir(runs_dir)
    names = benchmark_names()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise EdgeLstmError(f"no benchmark {unknown}; there are: {', '.join(names)}")
        names = [n for n in names if n in only]
    started = time.monotonic()
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "runs_dir": str(runs_dir.resolve()),
        "quick": quick,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "benchmarks": {},
    }
    for name in names:
        say(f"==> bench {name}")
        results["benchmarks"][name] = outcome = run_one(name, runs_dir, quick)
        state = "failed: " + outcome["error"] if "error" in outcome else "ok"
        say(f"    {name}: {state} ({outcome['seconds']:.1f} s)")
    comparison = json.loads((runs_dir / "student" / "comparison.json").read_text())
    results["variants"] = comparison["rows"]
    plot = tradeoff_plot(
        comparison["rows"],
        BENCH_DIR / "tradeoff.png",
        "Model variants: accuracy vs latency (bubble area = size on disk)",
    )
    results["tradeoff_plot"] = str(plot.relative_to(BENCH_DIR.parent))
    results["seconds"] = round(time.monotonic() - started, 1)
    out = BENCH_DIR / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"wrote {out} and {plot} in {results['seconds']:.0f} s")
    return results


def _refused(exc: EdgeLstmError) -> int:
    print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2


def main_for(name: str, argv: list[str] | None = None) -> None:
    """`python -m bench.<name> [--runs DIR] [--quick]`: one benchmark -> bench/<name>.json."""
    doc = importlib.import_module(f"bench.{name}").__doc__ or name
    args = argument_parser(doc.splitlines()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        check_runs_dir(args.runs_dir)
    except EdgeLstmError as exc:
        sys.exit(_refused(exc))
    outcome = run_one(name, args.runs_dir, args.quick)
    out = BENCH_DIR / f"{name}.json"
    out.write_text(json.dumps(outcome, indent=2, default=str) + "\n")
    say(json.dumps(outcome.get("result", outcome), indent=2, default=str))
    say(f"wrote {out}")
    sys.exit(1 if "error" in outcome else 0)


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark against RUNS (default runs/demo) and write bench/results.json;
    the exit code: 0, 1 when a benchmark failed, 2 when refused."""
    parser = argument_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="Run only this benchmark (repeatable)."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        results = run_all(args.runs_dir, args.quick, args.only)
    except EdgeLstmError as exc:
        return _refused(exc)
    failed = [n for n, r in results["benchmarks"].items() if "error" in r]
    if failed:
        print(f"error: benchmark(s) failed: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
