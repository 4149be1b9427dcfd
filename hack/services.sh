#!/usr/bin/env bash
# Makes the brokers used by the provider tests available on this (Debian) machine.
#
# Idempotent: installs only what is missing and starts only what is not answering yet.
#   Redis       127.0.0.1:6379
#   RabbitMQ    127.0.0.1:5672 (guest/guest), management API on 127.0.0.1:15672
#   beanstalkd  127.0.0.1:11300
#   moto_server 127.0.0.1:5001 (SQS-compatible; log in /tmp/moto_server-5001.log)
# Run as root: bash hack/services.sh
set -euo pipefail
cd "$(dirname "$0")/.."

readonly WAIT_SECONDS="${WAIT_SECONDS:-60}"
readonly RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf

log() { printf 'services: %s\n' "$*"; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_for NAME PORT: bounded wait until the port accepts connections.
wait_for() {
    local name=$1 port=$2 waited=0
    until port_open "$port"; do
        if ((waited >= WAIT_SECONDS)); then
            die "$name did not answer on 127.0.0.1:$port within ${WAIT_SECONDS}s"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    log "$name answers on 127.0.0.1:$port"
}

# wait_until NAME COMMAND...: bounded wait until COMMAND succeeds.
wait_until() {
    local name=$1 waited=0
    shift
    until "$@" >/dev/null 2>&1; do
        if ((waited >= WAIT_SECONDS)); then
            die "$name is not ready after ${WAIT_SECONDS}s (check: $*)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

[[ $(id -u) -eq 0 ]] || die "run as root (installs packages and starts brokers)"

# --- packages -----------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
[[ -x /usr/sbin/rabbitmq-server ]] || missing+=(rabbitmq-server)
command -v beanstalkd >/dev/null || missing+=(beanstalkd)
command -v curl >/dev/null || missing+=(curl)
# The job frameworks' real workers: Sidekiq from Debian, Node for BullMQ.
command -v sidekiq >/dev/null || missing+=(ruby-sidekiq)
# redis-namespace: the Sidekiq tests run one install under a namespace, as Sidekiq 6 allows.
ruby -e 'require "redis-namespace"' 2>/dev/null || missing+=(ruby-redis-namespace)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if ((${#missing[@]} > 0)); then
    log "installing with apt-get: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
else
    log "apt packages already installed"
fi

if ! command -v moto_server >/dev/null || ! python3 -c 'import celery, redis' 2>/dev/null; then
    log "installing with pip: moto[server] celery[redis]"
    # Debian's system Python refuses pip installs without this (PEP 668); older pips
    # ignore the variable.
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q 'moto[server]' 'celery[redis]'
    hash -r
    command -v moto_server >/dev/null || die "moto_server is not on PATH after pip install"
else
    log "pip packages already installed"
fi

if ! python3 -c 'import rq, dramatiq' 2>/dev/null; then
    log "installing with pip: rq dramatiq[redis]"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q 'rq>=2' 'dramatiq[redis]>=1.17'
else
    log "rq and dramatiq already installed"
fi

# BullMQ for the tests, at the versions of tests/bullmq/package-lock.json.
if [[ -f tests/bullmq/node_modules/bullmq/package.json ]]; then
    log "bullmq already installed"
else
    log "installing bullmq with npm into tests/bullmq"
    (cd tests/bullmq && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- Redis --------------------------------------------------------------------------
if port_open 6379; then
    log "Redis already running"
else
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
fi
wait_for Redis 6379
wait_until Redis redis-cli -h 127.0.0.1 -p 6379 ping

# --- RabbitMQ -----------------------------------------------------------------------
# Persistent settings for the next start: loopback only, management on loopback, and
# statistics every second (the default is 5 s, which makes the management API lag).
conf_line() {
    local key=$1 value=$2
    mkdir -p "$(dirname "$RABBITMQ_CONF")"
    touch "$RABBITMQ_CONF"
    if ! grep -Eq "^[[:space:]]*${key//./\\.}[[:space:]]*=" "$RABBITMQ_CONF"; then
        printf '%s = %s\n' "$key" "$value" >>"$RABBITMQ_CONF"
        log "added '$key = $value' to $RABBITMQ_CONF"
    fi
}
conf_line listeners.tcp.local 127.0.0.1:5672
conf_line management.tcp.ip 127.0.0.1
conf_line management.tcp.port 15672
conf_line collect_statistics_interval 1000

if port_open 5672; then
    log "RabbitMQ already running"
else
    log "starting RabbitMQ"
    rabbitmq-plugins enable --offline rabbitmq_management >/dev/null
    rabbitmq-server -detached
fi
wait_for RabbitMQ 5672
wait_until "RabbitMQ node" rabbitmqctl -q status

# Enabling is idempotent and works on a running node.
if rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
    log "rabbitmq_management already enabled"
else
    log "enabling rabbitmq_management"
    rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
# A node started before this script ran kept its boot-time settings: apply them live.
# New queues pick up the statistics interval; existing ones keep their timer.
rabbitmqctl -q eval 'application:set_env(rabbit, collect_statistics_interval, 1000).' >/dev/null
if ss -Hltn 'sport = :15672' 2>/dev/null | grep -qv '127.0.0.1:15672'; then
    log "moving the management listener to 127.0.0.1:15672"
    rabbitmqctl -q eval 'application:set_env(rabbitmq_management, tcp_config, [{ip, "127.0.0.1"}, {port, 15672}]), application:stop(rabbitmq_management), application:start(rabbitmq_management).' >/dev/null
fi
wait_for "RabbitMQ management" 15672
wait_until "RabbitMQ management API" curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview

# --- beanstalkd ---------------------------------------------------------------------
if port_open 11300; then
    log "beanstalkd already running"
else
    log "starting beanstalkd"
    setsid beanstalkd -l 127.0.0.1 -p 11300 >/tmp/beanstalkd-11300.log 2>&1 </dev/null &
fi
wait_for beanstalkd 11300

# --- moto (SQS) ---------------------------------------------------------------------
if port_open 5001; then
    log "moto_server already running"
else
    log "starting moto_server (log: /tmp/moto_server-5001.log)"
    setsid moto_server -H 127.0.0.1 -p 5001 >/tmp/moto_server-5001.log 2>&1 </dev/null &
fi
wait_for moto_server 5001
wait_until "moto_server API" curl -fsS http://127.0.0.1:5001/moto-api/

log "all brokers are up"
