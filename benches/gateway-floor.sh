#!/usr/bin/env bash
# The gateway measured against its own floor, in the same run: the fake's member events through
# the gateway (fake → WebSocket → Twilight shard → NATS → recorder) and the same events, paced
# the same way, published straight to NATS by the floor publisher (`gateway-floor`, fake →
# NATS → recorder), alternated at each rate (one shard), several rounds each. Prints latency
# p50/p99 and CPU per event of the publishing process (/proc utime + stime over the steady
# part ÷ events delivered) for both as median [min–max], the gateway's added latency and its
# CPU per event as a multiple of the floor's; then the gateway's memory at 1,000 and 5,000
# guilds as a fixed cost plus a slope per 1,000 guilds. A benchmark, not a test: speeds are
# printed, never asserted; a lost or duplicated event stops it. Not part of `cargo test`.
#
#   benches/gateway-floor.sh                       # 5,000, 20,000, 100,000/s; 3 rounds; 8 s each
#   QUICK=1 benches/gateway-floor.sh               # smoke run: 2,000/s, 1 round, 2 s, 1 memory round
#   RATES=20000 ROUNDS=5 SECONDS_PER_RUN=10 benches/gateway-floor.sh
#   MEMORY_CACHES=guilds,none,members MEMORY_ROUNDS=3 benches/gateway-floor.sh
#   SKIP_MEMORY=1 benches/gateway-floor.sh         # the floor comparison only
#   SKIP_FLOOR=1 MEMORY_GUILDS=5000,10000 MEMORY_ROUNDS=2 benches/gateway-floor.sh   # memory only
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${QUICK:-}" ]; then
  : "${RATES:=2000}" "${ROUNDS:=1}" "${SECONDS_PER_RUN:=2}" "${MEMORY_ROUNDS:=1}"
  : "${MEMORY_GUILDS:=100,500}"
fi
export THUMPER_FLOOR_RATES="${RATES:-5000,20000,100000}"
export THUMPER_FLOOR_ROUNDS="${ROUNDS:-3}"
export THUMPER_FLOOR_SECONDS="${SECONDS_PER_RUN:-8}"
export THUMPER_MEMORY_CACHES="${MEMORY_CACHES:-guilds}"
export THUMPER_MEMORY_ROUNDS="${MEMORY_ROUNDS:-3}"
export THUMPER_MEMORY_GUILDS="${MEMORY_GUILDS:-1000,5000}"
tests=""
[ -z "${SKIP_FLOOR:-}" ] && tests="gateway_against_floor"
[ -z "${SKIP_MEMORY:-}" ] && tests="$tests memory_slope"
echo "$(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for t in $tests; do
  # --exact: one test by its name; cargo's own lines are dropped, every run's line is kept.
  cargo test --release --quiet --test gateway_measure -- --ignored --nocapture --exact "$t" \
    --test-threads 1 2>&1 | grep -Ev '^(running .*|test result.*|test .* ok|\.|)$' || {
    echo "gateway-floor: $t failed" >&2
    exit 1
  }
done
