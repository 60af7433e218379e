#!/usr/bin/env bash
# The TensorRT checks that need a real GPU, in one run of at most 5 minutes:
#   scripts/gpu_check.sh [DEPLOY_DIR]        (default runs/demo/deploy, from `make demo`)
#
# On a copy of the deployment folder (the original is never written) it
#   1. builds an FP16 and an INT8 engine (INT8 from step.int8-tensorrt, made here with
#      `edgelstm quantize --mode static --for tensorrt` when the folder lacks it), each
#      checked by build-engine's own parity limits;
#   2. steps each engine over whole windows at batch 1, 64 and 256 next to ONNX Runtime on the
#      graph it was built from: max |logits diff| and argmax agreement;
#   3. checks the refusals: a batch over the profile, a tampered engine (sha256, and TensorRT's
#      own deserializer), an engine recorded for another compute capability or GPU model;
#   4. loads, steps and closes the FP16 backend 10 times, watching cuda.mem_get_info for leaks;
# and prints one table. Exit codes: 0 all passed, 1 a check failed, 2 (one line, on stderr)
# when TensorRT, pycuda or a GPU is missing or the folder is not a deployment folder.
# EDGELSTM_GPU_CHECK_PYTHON picks the interpreter (default .venv/bin/python, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${EDGELSTM_GPU_CHECK_PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEPLOY="${1:-runs/demo/deploy}"

exec timeout --signal=TERM 300 env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$DEPLOY" <<'EOF'
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 64, 256)
RELOADS = 10
LEAK_BYTES = 4 << 20  # device memory a 10-reload cycle may lose before it counts as a leak


def refuse(reason: str) -> None:
    print(f"gpu_check: {reason}", file=sys.stderr)
    raise SystemExit(2)


try:
    import tensorrt
except ImportError as exc:
    refuse(f"TensorRT is not installed ({exc}); JetPack or `pip install tensorrt` provides it")
try:
    from runtime.backends.cuda_helpers import device_facts, import_cuda_driver
    from runtime.errors import EdgeRuntimeError

    facts = device_facts()
    cuda = import_cuda_driver()
except EdgeRuntimeError as exc:
    refuse(f"no usable GPU: {exc}")
except ImportError as exc:
    refuse(f"edgelstm is not importable here ({exc}); run it from a checkout with `make install`")
source = Path(sys.argv[1])
if not (source / "manifest.json").is_file():
    refuse(f"{source} is not a deployment folder (no manifest.json); run `make demo` first")

from converters.errors import ConverterError
from converters.parity import StepGraph, load_parity_sample, ort_session, step_graph_logits
from converters.parity import BackendSteps
from converters.targets import convert, target_for
from runtime.backends.tensorrt_backend import TensorRTStepBackend
from runtime.errors import BackendError
from runtime.manifest import Manifest

rows: list[tuple[str, bool | None, str]] = []  # check, passed (None: skipped), detail
work = Path(tempfile.mkdtemp(prefix="edgelstm-gpu-check-"))
started = time.perf_counter()


def row(check: str, passed: bool | None, detail: str) -> None:
    detail = detail.replace(f"{work}/", "")  # the temporary copy's path says nothing
    rows.append((check, passed, detail))
    mark = {True: "ok", False: "FAIL", None: "skip"}[passed]
    print(f"  [{time.perf_counter() - started:6.1f} s] {mark:4} {check}: {detail}", flush=True)


def expect_refusal(check: str, make, match: str) -> None:
    try:
        thing = make()
    except (EdgeRuntimeError, ConverterError) as exc:
        row(check, match in str(exc), str(exc)[:110])
        return
    close = getattr(thing, "close", None)
    if close:
        close()
    row(check, False, "was accepted")


deploy = Path(shutil.copytree(source, work / "deploy", symlinks=False))
print(f"gpu_check: {facts.gpu_name}, compute capability {facts.compute_capability}, "
      f"TensorRT {tensorrt.__version__}; working on a copy in {deploy}", flush=True)
try:
    manifest = Manifest.load(deploy)
    if "step.int8-tensorrt" not in manifest.artifacts:
        try:
            convert(target_for("quantize", "tensorrt"), deploy)
            row("quantize --for tensorrt", True, "step.int8-tensorrt.onnx written")
        except Exception as exc:  # no training data or torch-side packages here
            row("quantize --for tensorrt", None, f"{type(exc).__name__}: {exc}"[:110])
    engines: dict[str, Path] = {}
    for precision in ("fp16", "int8"):
        t0 = time.perf_counter()
        try:
            engines[precision] = convert(
                target_for("build-engine", precision), deploy, max_batch=256, opt_batch=64
            ).result
            parity = Manifest.load(deploy).artifacts[f"step.trt-{precision}"].info["parity_vs_onnx"]
            row(f"build {precision}", True,
                f"{time.perf_counter() - t0:.0f} s, parity {parity['max_abs_diff']:.2g} / "
                f"{parity['argmax_agreement']:.1%} on {parity['windows']} windows")
        except ConverterError as exc:
            row(f"build {precision}", False, str(exc)[:110])
    manifest = Manifest.load(deploy)

    sample = load_parity_sample(deploy, manifest)
    if sample is None:
        from converters.tensorrt_build import _parity_sample

        sample = _parity_sample(deploy, manifest, None)
    x = np.ascontiguousarray(np.resize(sample.x, (max(BATCHES), *sample.x.shape[1:])), np.float32)
    for precision, engine in engines.items():
        art = manifest.artifacts[f"step.trt-{precision}"]
        reference_graph = deploy / manifest.artifacts[art.info["source"]].file
        reference = step_graph_logits(StepGraph(ort_session(reference_graph), manifest), x)
        backend = TensorRTStepBackend(engine, manifest)
        try:
            for batch in BATCHES:
                t0 = time.perf_counter()
                logits = step_graph_logits(BackendSteps(backend, manifest), x, batch)
                per_step = (time.perf_counter() - t0) / (manifest.window * -(-len(x) // batch))
                diff = float(np.abs(logits - reference).max())
                agree = float((logits.argmax(1) == reference.argmax(1)).mean())
                limit = {"fp16": 5e-2, "int8": 0.25}[precision]
                row(f"{precision} b{batch} vs {reference_graph.name}", diff <= limit and agree >= 0.95,
                    f"max |diff| {diff:.3g}, argmax {agree:.1%}, {per_step * 1e3:.3f} ms/step")
            over = backend.max_batch + 1
            expect_refusal(
                f"{precision} batch {over} over the profile",
                lambda: backend.step(np.zeros((over, manifest.n_features), np.float32),
                                     manifest.zero_state(over)),
                "exceeds the engine's profile",
            )
        finally:
            backend.close()

    if "fp16" in engines:
        engine = engines["fp16"]
        art = manifest.artifacts["step.trt-fp16"]
        tampered = work / "tampered"
        shutil.copytree(deploy, tampered)
        blob = bytearray((tampered / art.file).read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        blob[:16] = bytes(16)
        (tampered / art.file).write_bytes(bytes(blob))
        from runtime.backends.base import open_backend

        expect_refusal("tampered engine (sha256)",
                       lambda: open_backend(tampered, Manifest.load(tampered), "tensorrt", "step.trt-fp16"),
                       "does not match its manifest sha256")
        expect_refusal("tampered engine (TensorRT deserializer)",
                       lambda: TensorRTStepBackend(tampered / art.file, Manifest.load(tampered)),
                       "cannot deserialize")
        other = Manifest.load(deploy)
        other.artifacts["step.trt-fp16"].info["compute_capability"] = "1.0"
        expect_refusal("other compute capability", lambda: TensorRTStepBackend(engine, other),
                       "built for compute capability 1.0")
        other = Manifest.load(deploy)
        other.artifacts["step.trt-fp16"].info["gpu"] = "Another GPU"
        expect_refusal("other GPU model", lambda: TensorRTStepBackend(engine, other),
                       "built for the GPU")

        context = cuda.Device(0).retain_primary_context()
        context.push()
        try:
            free: list[int] = []
            for i in range(RELOADS):
                backend = TensorRTStepBackend(engine, manifest)
                batch = min(64, backend.max_batch)
                backend.step(np.zeros((batch, manifest.n_features), np.float32),
                             manifest.zero_state(batch))
                backend.close()
                free.append(cuda.mem_get_info()[0])
            lost = free[0] - free[-1]
            row(f"{RELOADS} reloads", lost <= LEAK_BYTES,
                f"device memory free after the 1st {free[0] >> 20} MiB, after the last "
                f"{free[-1] >> 20} MiB (lost {lost / 2**20:.1f} MiB)")
        finally:
            cuda.Context.pop()
            context.detach()
except BaseException as exc:
    row("unexpected error", False, f"{type(exc).__name__}: {exc}"[:110])
finally:
    shutil.rmtree(work, ignore_errors=True)

width = max(len(r[0]) for r in rows) if rows else 10
print()
print(f"{'check':<{width}}  result  detail")
for check, passed, detail in rows:
    print(f"{check:<{width}}  {({True: 'ok', False: 'FAIL', None: 'skip'})[passed]:<6}  {detail}")
failed = [r for r in rows if r[1] is False]
print(f"\n{len(rows) - len(failed)} of {len(rows)} checks passed or skipped, in "
      f"{time.perf_counter() - started:.0f} s")
raise SystemExit(1 if failed else 0)
EOF
