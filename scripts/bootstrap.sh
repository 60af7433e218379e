#!/usr/bin/env bash
# Creates .venv and installs everything edgelstm needs on this machine, idempotently.
#
# torch goes in first, pinned (EDGELSTM_TORCH, default torch==2.13.0), so the train extra finds
# it installed. Which build that is depends on pip's indexes: a local CPU wheel where pip is
# configured with one; otherwise PyPI's, which on Linux x86_64 is the CUDA build (several GB).
# EDGELSTM_TORCH_INDEX=https://download.pytorch.org/whl/cpu takes torch, and only torch, from
# that index (pip --index-url) for the CPU-only build. Not set by default.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_PIN="${EDGELSTM_TORCH:-torch==2.13.0}"
TORCH_INDEX="${EDGELSTM_TORCH_INDEX:-}"
VENV=.venv
STAMP="$VENV/.edgelstm-installed"

if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "==> installing the mosquitto broker (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null
        # the package starts a system broker on :1883; the tests and the demo start their own
        (systemctl disable --now mosquitto >/dev/null 2>&1 || service mosquitto stop >/dev/null 2>&1) || true
    else
        echo "warning: mosquitto is not installed and apt-get is unavailable;" \
             "broker tests will be skipped and the demo uses the embedded broker" >&2
    fi
fi

# RabbitMQ (MQTT + consistent-hash plugins) for the scale-out tests: tests/runtime/rabbitmq.py
# starts throwaway nodes of its own, so the package's system node is stopped and disabled
if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = "0" ]; then
    echo "==> installing the rabbitmq-server broker (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null \
        || echo "warning: rabbitmq-server did not install; the scale-out tests will be skipped" >&2
    (systemctl disable --now rabbitmq-server >/dev/null 2>&1 \
        || service rabbitmq-server stop >/dev/null 2>&1) || true
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "==> installing python packages into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    torch_args=()
    if [ -n "$TORCH_INDEX" ]; then
        echo "==> installing $TORCH_PIN from $TORCH_INDEX"
        torch_args=(--index-url "$TORCH_INDEX")
    fi
    "$VENV/bin/python" -m pip install -q ${torch_args[@]+"${torch_args[@]}"} "$TORCH_PIN"
    "$VENV/bin/python" -m pip install -q -e ".[train,runtime,dev]"
    touch "$STAMP"
fi

# No system broker (no apt, not root): the demo falls back to an embedded pure-Python broker.
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    "$VENV/bin/python" -c "import amqtt" 2>/dev/null || {
        echo "==> installing the embedded amqtt broker (no mosquitto on this machine)"
        "$VENV/bin/python" -m pip install -q "amqtt==0.12.1"
    }
fi
echo "==> environment ready: $VENV/bin/edgelstm"
