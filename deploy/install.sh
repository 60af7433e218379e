#!/usr/bin/env bash
# Installs (or removes) the edgelstm gateway daemon on one machine, idempotently.
#
#   sudo deploy/install.sh --model runs/demo/deploy --config my-gateway.yaml
#   sudo deploy/install.sh --model NEW_DEPLOY_DIR          # model update: installs, then reloads
#   sudo deploy/install.sh --uninstall [--purge]
#
# What goes where (every path below is prefixed with --root, default /):
#   /opt/edgelstm/venv                      virtualenv with edgelstm[runtime] (+ pycuda on a Jetson)
#   /etc/edgelstm/gateway.yaml              the gateway config (an existing one is never overwritten;
#                                           a different new one is left beside it as gateway.yaml.new)
#   /var/lib/edgelstm/models/<name>/        deployment folders (<model>-<version>-<manifest hash>),
#                                           sha256-checked before install
#   /var/lib/edgelstm/models/current        symlink to the folder the daemon serves
#   /var/lib/edgelstm/                      the daemon's state (alert outbox)
#   /etc/systemd/system/edgelstm.service    the unit (+ edgelstm.service.d/jetson.conf on a Jetson)
#   /etc/systemd/system/edgelstm@.service   the template of a sharded gateway's workers
#                                           (deploy/rabbitmq/README.md; installed, never enabled)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(dirname "$HERE")"

ROOT=/
MODEL=""
CONFIG=""
WHEEL=""
PYTHON="${PYTHON:-python3}"
PIP=1
SYSTEMCTL=1
UNINSTALL=0
PURGE=0

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --model DIR        deployment folder to install (written by `edgelstm export`/`quantize`)
  --config FILE      gateway config to install as /etc/edgelstm/gateway.yaml
                     (default: configs/gateway.yaml pointed at the installed model)
  --root DIR         prefix every system path with DIR (image builds, tests)
  --python PY        interpreter for the virtualenv (default: python3)
  --wheel FILE       install edgelstm from this wheel, offline (dependencies from its folder)
  --no-pip           create the virtualenv but install no packages into it
  --no-systemctl     do not call systemctl (implied when --root is not /)
  --uninstall        remove the program, unit and models; keep config and state
  --purge            with --uninstall: also remove /etc/edgelstm and /var/lib/edgelstm
  -h, --help         this text
EOF
}

die() {
    echo "install.sh: error: $*" >&2
    exit 2
}

say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL="${2:?--model needs a folder}"; shift 2 ;;
        --config) CONFIG="${2:?--config needs a file}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
        --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
        --wheel) WHEEL="${2:?--wheel needs a file}"; shift 2 ;;
        --no-pip) PIP=0; shift ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done

[ "$PURGE" = 1 ] && [ "$UNINSTALL" = 0 ] && die "--purge only goes with --uninstall"
ROOT="$(realpath -m "$ROOT")"
if [ "$ROOT" = / ] && [ "$(id -u)" != 0 ]; then
    die "installing into the system needs root: sudo $0 ... (or --root DIR for an image)"
fi
if [ "$ROOT" != / ]; then
    SYSTEMCTL=0
    mkdir -p "$ROOT"
fi
# $R is prepended to absolute system paths; empty for the real root
R="${ROOT%/}"

PREFIX="$R/opt/edgelstm"
VENV="$PREFIX/venv"
ETC="$R/etc/edgelstm"
STATE="$R/var/lib/edgelstm"
MODELS="$STATE/models"
UNIT_DIR="$R/etc/systemd/system"
UNIT="$UNIT_DIR/edgelstm.service"
TEMPLATE_UNIT="$UNIT_DIR/edgelstm@.service"
DROPIN_DIR="$UNIT_DIR/edgelstm.service.d"
SERVICE_USER=edgelstm
# the daemon's view of the model; the unit keeps this path read-only
SERVED_MODEL=/var/lib/edgelstm/models/current

is_jetson() { [ -f "$R/etc/nv_tegra_release" ]; }

have_systemd() { [ "$SYSTEMCTL" = 1 ] && [ -d /run/systemd/system ]; }

run_systemctl() {
    if have_systemd; then
        systemctl "$@"
    fi
}

# --- uninstall ------------------------------------------------------------------------------

uninstall() {
    if have_systemd && systemctl list-unit-files edgelstm.service >/dev/null 2>&1; then
        systemctl disable --now edgelstm.service 2>/dev/null || true
    fi
    if have_systemd; then
        local worker
        for worker in $(systemctl list-units --all --plain --no-legend 'edgelstm@*' |
            awk '{print $1}'); do
            systemctl disable --now "$worker" 2>/dev/null || true
        done
    fi
    rm -f "$UNIT" "$TEMPLATE_UNIT"
    rm -rf "$DROPIN_DIR" "$PREFIX" "$MODELS"
    run_systemctl daemon-reload
    say "removed the units, $PREFIX and $MODELS"
    if [ "$PURGE" = 1 ]; then
        rm -rf "$ETC" "$STATE"
        if [ -z "$R" ] && id "$SERVICE_USER" >/dev/null 2>&1; then
            userdel "$SERVICE_USER" || true
        fi
        say "purged $ETC and $STATE (config and undelivered alerts)"
    else
        say "kept $ETC (config) and $STATE (alert outbox); --purge removes them"
    fi
}

if [ "$UNINSTALL" = 1 ]; then
    uninstall
    exit 0
fi

# --- checks before anything is written ------------------------------------------------------

[ -z "$MODEL" ] || [ -f "$MODEL/manifest.json" ] ||
    die "$MODEL has no manifest.json: pass a folder written by \`edgelstm export\`"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "$CONFIG: config file not found"
EXAMPLE_CONFIG="$PROJECT/configs/gateway.yaml"
[ -n "$CONFIG" ] || [ -f "$ETC/gateway.yaml" ] || [ -f "$EXAMPLE_CONFIG" ] ||
    die "no --config given and the example $EXAMPLE_CONFIG is missing"
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "$WHEEL: wheel not found"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found: pass --python"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "$PYTHON is older than Python 3.10"

# --- service user ---------------------------------------------------------------------------

ensure_user() {
    if [ -n "$R" ]; then
        say "--root given: not creating the '$SERVICE_USER' user (create it in the image)"
    elif ! id "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/edgelstm --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
        say "created system user $SERVICE_USER"
    fi
}

# --- virtualenv -----------------------------------------------------------------------------

ensure_venv() {
    local venv_args=()
    # JetPack installs TensorRT's Python bindings (python3-libnvinfer) into the system
    # site-packages; pip cannot install them on a Jetson, so the venv must see them.
    is_jetson && venv_args+=(--system-site-packages)
    [ "$PIP" = 0 ] && venv_args+=(--without-pip)
    if [ ! -x "$VENV/bin/python" ]; then
        mkdir -p "$PREFIX"
        "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
        say "created $VENV${venv_args[*]:+ (${venv_args[*]})}"
    fi
    if [ "$PIP" = 0 ]; then
        say "--no-pip: not installing packages into $VENV"
        return
    fi
    local spec pip_args=(-q)
    if [ -n "$WHEEL" ]; then
        spec="$(realpath "$WHEEL")[runtime]"
        pip_args+=(--no-index --find-links "$(dirname "$(realpath "$WHEEL")")")
    elif [ -f "$PROJECT/pyproject.toml" ]; then
        spec="$PROJECT[runtime]"
    else
        spec="edgelstm[runtime]"
    fi
    local extra=()
    is_jetson && extra+=(pycuda)
    say "pip install $spec ${extra[*]}"
    "$VENV/bin/python" -m pip install "${pip_args[@]}" "$spec" "${extra[@]}"
    if is_jetson && ! "$VENV/bin/python" -c 'import tensorrt' 2>/dev/null; then
        echo "warning: TensorRT's Python bindings are missing: sudo apt install" \
            "python3-libnvinfer (JetPack); until then use backend: onnxruntime" >&2
    fi
}

# --- model ----------------------------------------------------------------------------------

# Prints the install name of a deployment folder after checking every artifact's sha256.
check_model() {
    "$PYTHON" - "$1" <<'EOF'
import hashlib, json, re, sys
from pathlib import Path

folder = Path(sys.argv[1])
manifest = json.loads((folder / "manifest.json").read_text())
for name, art in manifest.get("artifacts", {}).items():
    path = folder / art["file"]
    if not path.is_file():
        sys.exit(f"{path} is listed in the manifest (artifact {name!r}) but missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != art["sha256"]:
        sys.exit(f"{path} does not match its manifest sha256: copy the folder again")
# the manifest's own hash tells apart two folders of one version (e.g. after build-engine)
short = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()[:8]
label = f"{manifest['model_name']}-{manifest['model_version']}-{short}"
print(re.sub(r"[^A-Za-z0-9._-]+", "_", label))
EOF
}

install_model() {
    local name target tmp
    name="$(check_model "$MODEL")" || die "$MODEL: refusing to install a damaged deployment folder"
    target="$MODELS/$name"
    mkdir -p "$MODELS"
    if [ -d "$target" ]; then
        say "model $name already installed"
    else
        tmp="$(mktemp -d "$MODELS/.incoming.XXXXXX")"
        cp -R "$MODEL/." "$tmp/"
        chmod -R u=rwX,go=rX "$tmp"
        mv -T "$tmp" "$target"
        say "installed model $name into $MODELS"
    fi
    if [ "$(readlink "$MODELS/current" 2>/dev/null)" != "$name" ]; then
        ln -sfn "$name" "$MODELS/.current.tmp"
        mv -T "$MODELS/.current.tmp" "$MODELS/current"
        MODEL_CHANGED=1
        say "current -> $name"
    fi
}

# --- config ---------------------------------------------------------------------------------

# The config a first install writes when no --config is given: the example pointed at the
# installed model and the state directory.
render_default_config() {
    sed -e "s#^model_dir:.*#model_dir: $SERVED_MODEL#" \
        -e "s#^state_dir:.*#state_dir: /var/lib/edgelstm/state#" "$EXAMPLE_CONFIG"
    grep -q '^model_dir:' "$EXAMPLE_CONFIG" || echo "model_dir: $SERVED_MODEL"
    grep -q '^state_dir:' "$EXAMPLE_CONFIG" || echo "state_dir: /var/lib/edgelstm/state"
}

install_config() {
    local new
    mkdir -p "$ETC"
    if [ -n "$CONFIG" ] || [ ! -f "$ETC/gateway.yaml" ]; then
        new="$(mktemp "$ETC/.gateway.XXXXXX")"
        if [ -n "$CONFIG" ]; then
            cat "$CONFIG" >"$new"
        else
            render_default_config >"$new"
        fi
        if [ ! -f "$ETC/gateway.yaml" ]; then
            mv "$new" "$ETC/gateway.yaml"
            say "wrote $ETC/gateway.yaml"
        elif cmp -s "$new" "$ETC/gateway.yaml"; then
            rm -f "$new"
        else
            mv "$new" "$ETC/gateway.yaml.new"
            say "kept your $ETC/gateway.yaml; the new one is $ETC/gateway.yaml.new (diff and merge)"
        fi
    fi
    chmod 0640 "$ETC"/gateway.yaml*
    if [ -z "$R" ] && getent group "$SERVICE_USER" >/dev/null; then
        chgrp "$SERVICE_USER" "$ETC"/gateway.yaml*
    fi
    grep -q "^model_dir: *$SERVED_MODEL *$" "$ETC/gateway.yaml" ||
        echo "warning: $ETC/gateway.yaml does not serve $SERVED_MODEL; the unit keeps only" \
            "that folder readable (set model_dir: $SERVED_MODEL)" >&2
}

# --- unit -----------------------------------------------------------------------------------

install_unit() {
    mkdir -p "$UNIT_DIR" "$PREFIX/deploy"
    install -m 0644 "$HERE/edgelstm.service" "$UNIT"
    # the workers of a sharded gateway (edgelstm@0, @1, ...): installed beside the unit, enabled
    # only by the operator, once deploy/rabbitmq/setup.sh declared the topology
    install -m 0644 "$HERE/edgelstm@.service" "$TEMPLATE_UNIT"
    install -m 0644 "$HERE/README.md" "$HERE/JETSON.md" "$PREFIX/deploy/"
    # the template's Documentation= and the worker setup it names
    mkdir -p "$PREFIX/deploy/rabbitmq"
    install -m 0644 "$HERE/rabbitmq/README.md" "$HERE/rabbitmq/worker.example.yaml" \
        "$PREFIX/deploy/rabbitmq/"
    if is_jetson; then
        mkdir -p "$DROPIN_DIR"
        cat >"$DROPIN_DIR/jetson.conf" <<'EOF'
# Written by deploy/install.sh on a Jetson: the TensorRT backend needs the GPU device nodes
# (/dev/nvhost-*, /dev/nvmap, group video), and the CUDA driver JIT-compiles kernels, which
# W^X may refuse (not verified on a device: this errs on the side of a working GPU). The GPU
# shares the system memory. Delete this file if the gateway serves with backend: onnxruntime.
[Service]
PrivateDevices=no
MemoryDenyWriteExecute=no
SupplementaryGroups=video
MemoryMax=4G
EOF
        say "Jetson ($(head -n1 "$R/etc/nv_tegra_release" | tr -d '#' | xargs)): wrote $DROPIN_DIR/jetson.conf"
    fi
    say "installed $UNIT and $TEMPLATE_UNIT (workers: systemctl enable --now edgelstm@0 ...)"
}

MODEL_CHANGED=0
ensure_user
ensure_venv
[ -n "$MODEL" ] && install_model
install_config
install_unit
mkdir -p "$MODELS"

if have_systemd; then
    systemctl daemon-reload
    if [ ! -e "$MODELS/current" ]; then
        say "no model installed yet: run again with --model DIR, then systemctl enable --now edgelstm"
    elif systemctl is-active --quiet edgelstm.service; then
        if [ "$MODEL_CHANGED" = 1 ]; then
            systemctl reload edgelstm.service
            say "reloaded edgelstm (SIGHUP: verifies, warms up and swaps the new model)"
        fi
    else
        systemctl enable --now edgelstm.service
        say "started edgelstm; follow it with journalctl -u edgelstm -f"
    fi
else
    say "systemctl not used; start with: systemctl daemon-reload && systemctl enable --now edgelstm"
fi
say "done"
