#!/usr/bin/env bash
# Sets up a RabbitMQ node for a sharded edgelstm gateway, idempotently:
#   sudo deploy/rabbitmq/setup.sh --shards 3 --password-file /root/edgelstm-broker.pw
# plugins (MQTT, consistent-hash exchange), a user `edgelstm` for devices and workers, and the
# topology of runtime/amqp_topology.py for N shards (imported as definitions). Adding shards
# later: run it again with the larger N (about 1/N of the devices move; their windows restart).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT="$(dirname "$(dirname "$HERE")")"
SHARDS=""
PASSWORD_FILE=""
PYTHON="${PYTHON:-/opt/edgelstm/venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

while [ $# -gt 0 ]; do
    case "$1" in
        --shards) SHARDS="${2:?--shards needs a number}"; shift 2 ;;
        --password-file) PASSWORD_FILE="${2:?--password-file needs a file}"; shift 2 ;;
        -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "setup.sh: error: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ "$SHARDS" =~ ^[1-9][0-9]*$ ]] || { echo "setup.sh: error: --shards N (N >= 1)" >&2; exit 2; }

install -m 0644 "$HERE/enabled_plugins" /etc/rabbitmq/enabled_plugins
[ -f /etc/rabbitmq/rabbitmq.conf ] || install -m 0644 "$HERE/rabbitmq.conf" /etc/rabbitmq/rabbitmq.conf
systemctl restart rabbitmq-server
rabbitmqctl await_startup

if [ -n "$PASSWORD_FILE" ]; then
    password="$(cat "$PASSWORD_FILE")"
    if rabbitmqctl list_users --silent | cut -f1 | grep -qx edgelstm; then
        rabbitmqctl change_password edgelstm "$password" >/dev/null
    else
        rabbitmqctl add_user edgelstm "$password" >/dev/null
    fi
    # devices publish to amq.topic; workers read their queues and declare nothing of theirs;
    # every MQTT client (workers too, for their heartbeat) gets an mqtt-subscription-* queue
    rabbitmqctl set_permissions -p / edgelstm '^mqtt-subscription-.*$' \
        '^(amq\.topic|mqtt-subscription-.*)$' '^(amq\.topic|edgelstm\..*|mqtt-subscription-.*)$'
fi

definitions="$(mktemp)"
trap 'rm -f "$definitions"' EXIT
PYTHONPATH="$PROJECT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m runtime.amqp_topology \
    --shards "$SHARDS" --print >"$definitions"
rabbitmqctl import_definitions "$definitions"
rabbitmqctl list_queues name consumers messages | grep '^edgelstm\.' || true
echo "==> RabbitMQ ready for $SHARDS workers: systemctl enable --now edgelstm@{0..$((SHARDS - 1))}"
