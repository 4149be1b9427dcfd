#!/usr/bin/env bash
# Runs the benchmarks (benches/wpa_bench.rs) against real brokers; see BENCHMARKS.md.
#
#   bash hack/bench.sh                                   # all but scale-in (about 45 minutes)
#   bash hack/bench.sh --scenario latency --trials 20    # a subset; arguments go to the bench
#   bash hack/bench.sh --scenario scale --wpas 100,1000 --window 60
#   bash hack/bench.sh --scenario startup --startup-wpas 5000 --startup-providers beanstalkd \
#       --startup-limit 1500                             # start-up, then a steady window
#   bash hack/bench.sh --scenario scale-in               # real Celery workers (python3 -m celery)
#   bash hack/bench.sh --scenario drain --drain-repeats 2
#                      # drain before removal on and off, both ack modes (about 45 minutes)
#
# As root it first makes the shared brokers available (hack/services.sh: Redis on 6379,
# RabbitMQ on 5672 with the management API on 15672); the bench starts its own
# moto_server and redis-server processes on free ports. The report is printed and kept in
# target/bench/. The tables are figures, not pass/fail: nothing here asserts on timing.
set -euo pipefail

cd "$(dirname "$0")/.."

log() { printf 'bench: %s\n' "$*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
    bash hack/services.sh >&2
else
    log "not root: assuming Redis, RabbitMQ (with management) and moto_server are installed"
fi
for tool in redis-server moto_server; do
    command -v "$tool" >/dev/null || {
        log "ERROR: $tool is not installed (run as root once: bash hack/services.sh)"
        exit 1
    }
done

# 5000 WPAs mean 5000 Redis connections in the controller and in redis-server.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
log "open files limit: $(ulimit -n)"

mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
report="target/bench/report-$stamp.md"
header="target/bench/machine-$stamp.txt"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
    echo "cpu: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1), $(nproc) cores"
    echo "memory: $(free -m | awk '/^Mem:/ {print $2 " MiB"}')"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$header" >&2

# `cargo bench` builds the controller binary with the release-based bench profile
# (target/release/workerpodautoscaler); the bench runs that binary.
cargo bench --locked --bench wpa_bench -- --report "$report" "$@"
log "report: $report (machine: $header)"
