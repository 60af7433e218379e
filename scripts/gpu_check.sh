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

exec timeout --signal=TERM 300 env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m converters.gpu_check "$DEPLOY"
