#!/usr/bin/env bash
# The whole edgelstm pipeline on built-in demo data (`make demo`): simulate → teacher → student →
# ONNX → int8 → (TensorRT) → live gateway over MQTT → report.
#
# EDGELSTM_DEMO_SCENARIO picks the data: `process` (the default: the hard reactor fleet of
# `edgelstm simulate --scenario process`, one reading a minute, configs/process.yaml, into
# runs/process/) or `pump` (the quick demo on loud 10 Hz pump faults, configs/demo.yaml, into
# runs/demo/). EDGELSTM_DEMO_RESUME=1 skips the stages whose outputs already exist;
# EDGELSTM_DEMO_CONFIG and EDGELSTM_DEMO_RUNS run it elsewhere (the config's data.path must be
# <runs>/data/sensors.parquet, which is checked before anything runs); EDGELSTM_DEMO_SPEEDUP sets
# how many times faster than recorded the live stage replays the test runs, and
# EDGELSTM_DEMO_DRIFT_FEATURE the sensor that drifts on its one extra device (`none`: no such
# device). EDGELSTM_DEMO_DRY_RUN=1 prints the settings and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

EL=.venv/bin/edgelstm
PY=.venv/bin/python
SCENARIO="${EDGELSTM_DEMO_SCENARIO:-process}"
# Per scenario: simulate's arguments, the config, the runs folder (the config's data.path is
# <runs>/data/sensors.parquet), the live replay's speedup and the drifting sensor. Both speedups
# replay 50 readings/s per device (10 Hz x 5, 1/min x 3000: a 12 h process run in ~15 s), the
# pace the live stage's drift monitor settings (edge_lstm/reporting/demo_live.py) are sized for.
# The process drift sensor is thermocouple B: a transmitter no control loop reads, so its
# drifting moves nothing else in the plant (the pump's is a bearing temperature).
case "$SCENARIO" in
process)
    SIMULATE_ARGS=(--scenario process)
    DEFAULT_CONFIG=configs/process.yaml DEFAULT_RUNS=runs/process
    DEFAULT_SPEEDUP=3000 DEFAULT_DRIFT_FEATURE=reactor_temp_b
    ;;
pump)
    SIMULATE_ARGS=(--scenario pump --runs-per-class 30)
    DEFAULT_CONFIG=configs/demo.yaml DEFAULT_RUNS=runs/demo
    DEFAULT_SPEEDUP=5 DEFAULT_DRIFT_FEATURE=temp_bearing_nde
    ;;
*)
    echo "error: EDGELSTM_DEMO_SCENARIO=$SCENARIO: choose process (the default) or pump" >&2
    exit 2
    ;;
esac
CONFIG="${EDGELSTM_DEMO_CONFIG:-$DEFAULT_CONFIG}"
RUNS="${EDGELSTM_DEMO_RUNS:-$DEFAULT_RUNS}"
RESUME="${EDGELSTM_DEMO_RESUME:-0}"
SPEEDUP="${EDGELSTM_DEMO_SPEEDUP:-$DEFAULT_SPEEDUP}"
DRIFT_FEATURE="${EDGELSTM_DEMO_DRIFT_FEATURE:-$DEFAULT_DRIFT_FEATURE}"
STAGES=12

[ -x "$EL" ] || { echo "error: $EL is missing: run make install" >&2; exit 2; }
# The stages train on the config's data.path and the report reads <runs>/data/sensors.parquet:
# they must be one file, or the report would score the models on other data than they saw.
"$PY" - "$CONFIG" "$RUNS/data/sensors.parquet" <<'EOF'
import os, sys
from edge_lstm.config import load_config
from edge_lstm.errors import EdgeLstmError
try:
    data_path = load_config(sys.argv[1]).data.path
except EdgeLstmError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
if os.path.abspath(data_path) != os.path.abspath(sys.argv[2]):
    print(
        f"error: {sys.argv[1]} reads data.path {data_path}, but this demo writes its data to "
        f"{sys.argv[2]}: point data.path there or set EDGELSTM_DEMO_RUNS to its runs folder",
        file=sys.stderr,
    )
    sys.exit(2)
EOF
# EDGELSTM_DEMO_DRY_RUN=1: what would run, then stop (the tests read it)
if [ "${EDGELSTM_DEMO_DRY_RUN:-0}" = 1 ]; then
    echo "scenario: $SCENARIO"
    echo "simulate: $EL simulate ${SIMULATE_ARGS[*]} --out $RUNS/data/sensors.parquet"
    echo "config: $CONFIG"
    echo "runs: $RUNS"
    echo "speedup: $SPEEDUP"
    echo "drift feature: $DRIFT_FEATURE"
    echo "report: $RUNS/report.md"
    exit 0
fi
mkdir -p "$RUNS"
TIMINGS="$RUNS/timings.tsv"
[ "$RESUME" = 1 ] || : >"$TIMINGS"
DEMO_START=$SECONDS
N=0

clock() { printf '%02d:%02d' $(((SECONDS - DEMO_START) / 60)) $(((SECONDS - DEMO_START) % 60)); }

echo "==> $SCENARIO demo: config $CONFIG, everything under $RUNS/, report at $RUNS/report.md"

# stage NAME OUTPUT CMD...: one header line, then the command; skipped when resuming and OUTPUT
# exists. Records the stage's seconds and result in timings.tsv for the report.
stage() {
    local name="$1" output="$2" start=$SECONDS
    shift 2
    N=$((N + 1))
    if [ "$RESUME" = 1 ] && [ -e "$output" ]; then
        echo "==> [$(clock)] $N/$STAGES $name: skipped ($output exists)"
        return
    fi
    echo "==> [$(clock)] $N/$STAGES $name"
    "$@"
    local took=$((SECONDS - start))
    printf '%s\t%d\t%s\n' "$name" "$took" "done" >>"$TIMINGS"
    echo "    $name took ${took}s"
}

note() {
    N=$((N + 1))
    echo "==> [$(clock)] $N/$STAGES $1"
    printf '%s\t0\t%s\n' "${1%%:*}" "${1#*: }" >>"$TIMINGS"
}

# quantize --mode static may be refused by the accuracy guard (exit 2, file kept in rejected/);
# the demo goes on with the dynamic int8 model, which is the one it serves.
quantize_static() {
    local rc=0
    "$EL" quantize "$RUNS/deploy" --mode static || rc=$?
    if [ "$rc" = 2 ]; then
        echo "    static int8 refused by the accuracy guard (see $RUNS/deploy/rejected/); continuing"
    elif [ "$rc" != 0 ]; then
        return "$rc"
    fi
}

# The artifact the gateway serves: the batch-invariant static int8 step graph when the accuracy
# guard accepted it (live results then equal offline ones), else the dynamic one.
served_artifact() {
    "$PY" - "$RUNS/deploy/manifest.json" <<'EOF'
import json, sys
artifacts = json.load(open(sys.argv[1]))["artifacts"]
print("step.int8-static" if "step.int8-static" in artifacts else "step.int8-dynamic")
EOF
}

# Why no TensorRT engine can be built here, or nothing when one can.
tensorrt_missing() {
    "$PY" - <<'EOF'
try:
    import tensorrt  # noqa: F401
except ImportError as exc:
    print(f"no module named {exc.name!r} (JetPack or `pip install tensorrt` provides it)")
    raise SystemExit
try:
    import pycuda.driver as cuda
    cuda.init()
    if cuda.Device.count() == 0:
        print("no CUDA device")
except Exception as exc:  # pycuda missing, or no driver
    print(f"no usable CUDA device ({exc})")
EOF
}

stage "simulate" "$RUNS/data/sensors.parquet" \
    "$EL" simulate "${SIMULATE_ARGS[@]}" --out "$RUNS/data/sensors.parquet"
stage "train-teacher" "$RUNS/teacher/model.pt" \
    "$EL" train-teacher --config "$CONFIG" --out "$RUNS/teacher"
stage "evaluate teacher" "$RUNS/teacher/eval-test/metrics.json" \
    "$EL" evaluate "$RUNS/teacher" --split test
stage "distill" "$RUNS/student/comparison.json" \
    "$EL" distill --teacher "$RUNS/teacher" --config "$CONFIG" --out "$RUNS/student"
stage "export" "$RUNS/deploy/step.onnx" \
    "$EL" export "$RUNS/student" --out "$RUNS/deploy"
stage "quantize dynamic" "$RUNS/deploy/step.int8-dynamic.onnx" \
    "$EL" quantize "$RUNS/deploy" --mode dynamic
stage "quantize static" "$RUNS/deploy/step.int8-static.onnx" quantize_static

SERVED="$(served_artifact)"
# each with the baseline on the same windows: the report's paired model − baseline intervals
stage "evaluate student (fp32 step graph)" "$RUNS/deploy/eval-test-step/metrics.json" \
    "$EL" evaluate "$RUNS/deploy/step.onnx" --split test
stage "evaluate served $SERVED" "$RUNS/deploy/eval-test-$SERVED/metrics.json" \
    "$EL" evaluate "$RUNS/deploy/$SERVED.onnx" --split test

WHY="$(tensorrt_missing)"
if [ -z "$WHY" ]; then
    stage "build-engine" "$RUNS/deploy/tensorrt.timing.cache" \
        "$EL" build-engine "$RUNS/deploy" --precision fp16
else
    note "build-engine: skipped, $WHY"
fi

# broker + serve + replay + stop: one driver, so every process it starts is stopped with it
stage "live: broker, serve $SERVED, replay test runs, stop" "$RUNS/live/summary.json" \
    "$PY" -m edge_lstm.reporting.demo_live --runs "$RUNS" --config "$CONFIG" --speedup "$SPEEDUP" \
    --artifact "$SERVED" --drift-feature "$DRIFT_FEATURE"
stage "report" "$RUNS/report.md" "$EL" report "$RUNS"

echo "==> [$(clock)] demo finished in $(((SECONDS - DEMO_START) / 60)) min $(((SECONDS - DEMO_START) % 60)) s"
echo "    report: $RUNS/report.md"
[ "$SCENARIO" = pump ] || echo "    the quick pump demo: EDGELSTM_DEMO_SCENARIO=pump make demo (into runs/demo/)"
