"""The TensorRT checks that need a real GPU (`scripts/gpu_check.sh` runs this module): FP16 and
INT8 engines built and stepped against ONNX Runtime, the refusals, and a reload leak check.

Run as `python -m converters.gpu_check DEPLOY_DIR`. It works on a copy of the folder (the
original is never written) and prints one table. Exit 0: all passed; 1: a check failed; 2 (one
line on stderr): TensorRT, pycuda or a GPU is missing, or the folder is not a deployment folder.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConverterError
from converters.parity import (
    BackendSteps,
    StepGraph,
    load_parity_sample,
    ort_session,
    step_graph_logits,
)
from converters.targets import convert, target_for
from runtime.errors import EdgeRuntimeError
from runtime.manifest import Manifest

BATCHES = (1, 64, 256)
RELOADS = 10
LEAK_BYTES = 4 << 20  # device memory a 10-reload cycle may lose before it counts as a leak
LIMITS = {"fp16": 5e-2, "int8": 0.25}  # max |logits diff| against the graph an engine came from
MARKS = {True: "ok", False: "FAIL", None: "skip"}


class Unavailable(Exception):
    """TensorRT, pycuda or a GPU is missing: nothing can be checked here (exit 2)."""


class Checks:
    """The table being filled: (check, passed or None for skipped, detail)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.rows: list[tuple[str, bool | None, str]] = []
        self.started = time.perf_counter()

    def row(self, check: str, passed: bool | None, detail: str) -> None:
        detail = detail.replace(f"{self.work}/", "")  # the temporary copy's path says nothing
        self.rows.append((check, passed, detail))
        elapsed = time.perf_counter() - self.started
        print(f"  [{elapsed:6.1f} s] {MARKS[passed]:4} {check}: {detail}", flush=True)

    def expect_refusal(self, check: str, make: Callable[[], Any], match: str) -> None:
        try:
            thing = make()
        except (EdgeRuntimeError, ConverterError) as exc:
            self.row(check, match in str(exc), str(exc)[:110])
            return
        close = getattr(thing, "close", None)
        if close:
            close()
        self.row(check, False, "was accepted")

    def print_table(self) -> bool:
        """Prints the table; True when no check failed."""
        width = max((len(r[0]) for r in self.rows), default=10)
        print(f"\n{'check':<{width}}  result  detail")
        for check, passed, detail in self.rows:
            print(f"{check:<{width}}  {MARKS[passed]:<6}  {detail}")
        failed = [r for r in self.rows if r[1] is False]
        print(
            f"\n{len(self.rows) - len(failed)} of {len(self.rows)} checks passed or skipped, in "
            f"{time.perf_counter() - self.started:.0f} s"
        )
        return not failed


def _device() -> tuple[Any, Any, Any]:
    """(tensorrt module, device facts, pycuda.driver), or Unavailable with the reason."""
    try:
        import tensorrt
    except ImportError as exc:
        raise Unavailable(
            f"TensorRT is not installed ({exc}); JetPack or `pip install tensorrt` provides it"
        ) from None
    from runtime.backends.cuda_helpers import device_facts, import_cuda_driver

    try:
        return tensorrt, device_facts(), import_cuda_driver()
    except EdgeRuntimeError as exc:
        raise Unavailable(f"no usable GPU: {exc}") from None


def _build(checks: Checks, deploy: Path) -> dict[str, Path]:
    """The INT8 source graph when missing, then an FP16 and an INT8 engine (own parity limits)."""
    if "step.int8-tensorrt" not in Manifest.load(deploy).artifacts:
        try:
            convert(target_for("quantize", "tensorrt"), deploy)
            checks.row("quantize --for tensorrt", True, "step.int8-tensorrt.onnx written")
        except Exception as exc:  # no training data or torch-side packages here
            checks.row("quantize --for tensorrt", None, f"{type(exc).__name__}: {exc}"[:110])
    engines: dict[str, Path] = {}
    for precision in ("fp16", "int8"):
        t0 = time.perf_counter()
        try:
            target = target_for("build-engine", precision)
            engines[precision] = convert(target, deploy, max_batch=256, opt_batch=64).result
        except ConverterError as exc:
            checks.row(f"build {precision}", False, str(exc)[:110])
            continue
        parity = Manifest.load(deploy).artifacts[f"step.trt-{precision}"].info["parity_vs_onnx"]
        checks.row(
            f"build {precision}",
            True,
            f"{time.perf_counter() - t0:.0f} s, parity {parity['max_abs_diff']:.2g} / "
            f"{parity['argmax_agreement']:.1%} on {parity['windows']} windows",
        )
    return engines


def _windows(deploy: Path, manifest: Manifest) -> np.ndarray:
    """Real parity windows, repeated to fill the largest batch."""
    sample = load_parity_sample(deploy, manifest)
    if sample is None:
        from converters.tensorrt_build import parity_sample

        sample = parity_sample(deploy, manifest, None)
    shape = (max(BATCHES), *sample.x.shape[1:])
    return np.ascontiguousarray(np.resize(sample.x, shape), np.float32)


def _step_engine(checks: Checks, deploy: Path, precision: str, engine: Path) -> None:
    """Whole windows at each batch against ONNX Runtime, then a batch over the profile."""
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    manifest = Manifest.load(deploy)
    x = _windows(deploy, manifest)
    art = manifest.artifacts[f"step.trt-{precision}"]
    source = deploy / manifest.artifacts[art.info["source"]].file
    reference = step_graph_logits(StepGraph(ort_session(source), manifest), x)
    backend = TensorRTStepBackend(engine, manifest)
    try:
        for batch in BATCHES:
            t0 = time.perf_counter()
            logits = step_graph_logits(BackendSteps(backend, manifest), x, batch)
            per_step = (time.perf_counter() - t0) / (manifest.window * -(-len(x) // batch))
            diff = float(np.abs(logits - reference).max())
            agree = float((logits.argmax(1) == reference.argmax(1)).mean())
            checks.row(
                f"{precision} b{batch} vs {source.name}",
                diff <= LIMITS[precision] and agree >= 0.95,
                f"max |diff| {diff:.3g}, argmax {agree:.1%}, {per_step * 1e3:.3f} ms/step",
            )
        over = backend.max_batch + 1
        x_over = np.zeros((over, manifest.n_features), np.float32)
        checks.expect_refusal(
            f"{precision} batch {over} over the profile",
            lambda: backend.step(x_over, manifest.zero_state(over)),
            "exceeds the engine's profile",
        )
    finally:
        backend.close()


def _refusals(checks: Checks, deploy: Path, engine: Path) -> None:
    """A tampered engine (sha256 and TensorRT's deserializer), another compute capability or
    another GPU model must each be refused."""
    from runtime.backends.base import open_backend
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    art = Manifest.load(deploy).artifacts["step.trt-fp16"]
    tampered = checks.work / "tampered"
    shutil.copytree(deploy, tampered)
    blob = bytearray((tampered / art.file).read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    blob[:16] = bytes(16)
    (tampered / art.file).write_bytes(bytes(blob))
    checks.expect_refusal(
        "tampered engine (sha256)",
        lambda: open_backend(tampered, Manifest.load(tampered), "tensorrt", "step.trt-fp16"),
        "does not match its manifest sha256",
    )
    checks.expect_refusal(
        "tampered engine (TensorRT deserializer)",
        lambda: TensorRTStepBackend(tampered / art.file, Manifest.load(tampered)),
        "cannot deserialize",
    )
    for check, key, value, match in (
        ("other compute capability", "compute_capability", "1.0", "compute capability 1.0"),
        ("other GPU model", "gpu", "Another GPU", "built for the GPU"),
    ):
        other = Manifest.load(deploy)
        other.artifacts["step.trt-fp16"].info[key] = value
        checks.expect_refusal(check, lambda other=other: TensorRTStepBackend(engine, other), match)


def _reloads(checks: Checks, deploy: Path, engine: Path, cuda: Any) -> None:
    """Loads, steps and closes the backend RELOADS times, watching free device memory."""
    from runtime.backends.tensorrt_backend import TensorRTStepBackend

    manifest = Manifest.load(deploy)
    context = cuda.Device(0).retain_primary_context()
    context.push()
    try:
        free: list[int] = []
        for _ in range(RELOADS):
            backend = TensorRTStepBackend(engine, manifest)
            batch = min(64, backend.max_batch)
            x = np.zeros((batch, manifest.n_features), np.float32)
            backend.step(x, manifest.zero_state(batch))
            backend.close()
            free.append(cuda.mem_get_info()[0])
    finally:
        cuda.Context.pop()
        context.detach()
    lost = free[0] - free[-1]
    checks.row(
        f"{RELOADS} reloads",
        lost <= LEAK_BYTES,
        f"device memory free after the 1st {free[0] >> 20} MiB, after the last "
        f"{free[-1] >> 20} MiB (lost {lost / 2**20:.1f} MiB)",
    )


def run(source: Path) -> int:
    """Every check on a copy of `source`; the exit code."""
    tensorrt, facts, cuda = _device()
    if not (source / "manifest.json").is_file():
        raise Unavailable(
            f"{source} is not a deployment folder (no manifest.json); run `make demo` first"
        )
    work = Path(tempfile.mkdtemp(prefix="edgelstm-gpu-check-"))
    checks = Checks(work)
    deploy = Path(shutil.copytree(source, work / "deploy", symlinks=False))
    print(
        f"gpu_check: {facts.gpu_name}, compute capability {facts.compute_capability}, "
        f"TensorRT {tensorrt.__version__}; working on a copy in {deploy}",
        flush=True,
    )
    try:
        engines = _build(checks, deploy)
        for precision, engine in engines.items():
            _step_engine(checks, deploy, precision, engine)
        if "fp16" in engines:
            _refusals(checks, deploy, engines["fp16"])
            _reloads(checks, deploy, engines["fp16"], cuda)
    except Exception as exc:
        checks.row("unexpected error", False, f"{type(exc).__name__}: {exc}"[:110])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if checks.print_table() else 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    source = Path(args[0] if args else "runs/demo/deploy")
    try:
        return run(source)
    except Unavailable as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
