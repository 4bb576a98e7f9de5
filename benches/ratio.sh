#!/usr/bin/env bash
# CPU per `SELECT 1` of thumper, pgbench and the floor (src/bin/floor.rs: the tightest client we
# can write) on one stack, at fixed rates well below saturation and flat out. CPU is user +
# system of the generator process (GNU time), divided by the queries it completed. The runs are
# alternated (thumper, pgbench, floor, thumper, …) so that whatever else the machine does falls
# on all three alike; the table gives the median and the spread (min–max) of REPEATS rounds,
# and every figure as a multiple of the floor's median. A benchmark, not a test: it asserts
# nothing about speed, but stops on a failed run. Not part of `cargo test`.
#
#   benches/ratio.sh                                  # 20 s per run, 5 rounds, 2,000/s, 10,000/s, flat out
#   SECONDS_PER_RUN=3 REPEATS=1 benches/ratio.sh      # smoke test (about 30 s after the build)
#   RATES="10000" CLIENTS=100 THUMPER=path FLOOR=path benches/ratio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECONDS_PER_RUN:-20}"
repeats="${REPEATS:-5}"
clients="${CLIENTS:-100}"
rates="${RATES:-2000 10000 0}" # 0 = flat out
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "${THUMPER:-}" ] || [ -z "${FLOOR:-}" ]; then
  cargo build --release --quiet --bin thumper --bin floor
fi
THUMPER="${THUMPER:-$PWD/target/release/thumper}"
FLOOR="${FLOOR:-$PWD/target/release/floor}"
thumper="$THUMPER"
floor="$FLOOR"
export THUMPER_STACK_STATE="$work/stack.json"

cat > "$work/stack.toml" <<EOF
name = "ratio-stack"
executor = "constant-vus"
vus = 1
duration = "1s"
[[queries]]
name = "health"
sql = "SELECT 1"
EOF
set -a
eval "$("$thumper" stack up --scenario "$work/stack.toml")"
set +a
trap '"$thumper" stack down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
printf 'SELECT 1;\n' > "$work/select1.sql"

# One run of `$@`: its CPU seconds (user + system) into $cpu, its output in $work/out.
measure() {
  /usr/bin/time -f '%U %S' -o "$work/time" "$@" >"$work/out" 2>&1 || {
    cat "$work/out" >&2
    echo "ratio: a run failed: $*" >&2
    exit 1
  }
  read -r user sys <"$work/time"
  cpu=$(echo "$user + $sys" | bc -l)
}

thumper_scenario() { # rate → $work/thumper-RATE.toml
  if [ "$1" = 0 ]; then
    load="executor = \"constant-vus\"
vus = $clients
think_time = \"0s\""
  else
    load="executor = \"constant-arrival-rate\"
rate = $1
pre_allocated_vus = $clients
max_vus = $clients
on_busy = \"queue\""
  fi
  cat > "$work/thumper-$1.toml" <<EOF
name = "ratio"
$load
duration = "${secs}s"
protocol = "simple"
[[queries]]
name = "select1"
sql = "SELECT 1"
EOF
}

run_one() { # generator rate → appends "rate generator cpu queries" to $work/results
  local q
  case "$1" in
    thumper)
      rm -rf "$work/r"
      measure "$thumper" run "$work/thumper-$2.toml" --quiet --report-dir "$work/r"
      q=$(python3 -c 'import json,sys,glob; print(json.load(open(glob.glob(sys.argv[1]+"/*/summary.json")[0]))["metrics"]["queries"]["count"])' "$work/r")
      ;;
    pgbench)
      local limit=()
      [ "$2" != 0 ] && limit=(-R "$2")
      measure pgbench -n -M simple -c "$clients" -j 2 -T "$secs" "${limit[@]}" -f "$work/select1.sql" "$DATABASE_URL"
      q=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/out")
      ;;
    floor)
      measure "$floor" "$DATABASE_URL" "$clients" "$2" "$secs"
      q=$(sed -n 's/^queries \([0-9]*\)$/\1/p' "$work/out")
      ;;
  esac
  echo "$2 $1 $cpu $q" >> "$work/results"
  printf '  %-8s %6s/s round %s: %8s queries, %6.1f µs/query\n' "$1" "$2" "$3" "$q" \
    "$(echo "$cpu * 1000000 / $q" | bc -l)" >&2
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rate in $rates; do
  thumper_scenario "$rate"
  for round in $(seq 1 "$repeats"); do
    for generator in thumper pgbench floor; do
      run_one "$generator" "$rate" "$round"
    done
  done
done
load="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/results" "$clients" "$secs" "$repeats" "$load" <<'EOF'
import statistics, sys
path, clients, secs, repeats, load = sys.argv[1:]
runs = {}  # (rate, generator) → [(µs per query, queries per second)]
for line in open(path):
    rate, gen, cpu, q = line.split()
    runs.setdefault((int(rate), gen), []).append((float(cpu) * 1e6 / int(q), int(q) / float(secs)))
def spread(xs, fmt="{:.1f}"):
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"
print(f"\n{clients} connections, `SELECT 1`, simple protocol, {secs} s per run, {repeats} alternated rounds; "
      f"µs of generator CPU per query, median (min–max); load average at the end {load}\n")
print("| rate | floor µs | pgbench µs | thumper µs | pgbench ÷ floor | thumper ÷ floor | thumper ÷ pgbench | queries/s (floor, pgbench, thumper) |")
print("|---|---|---|---|---|---|---|---|")
for rate in sorted({r for r, _ in runs}, key=lambda r: r or 1e12):
    us = {g: [u for u, _ in runs[(rate, g)]] for g in ("floor", "pgbench", "thumper")}
    qps = {g: statistics.median(q for _, q in runs[(rate, g)]) for g in us}
    f = statistics.median(us["floor"])
    per_round = [t / p for t, p in zip(us["thumper"], us["pgbench"])]
    name = "flat out" if rate == 0 else f"{rate:,}/s"
    print(f"| {name} | {spread(us['floor'])} | {spread(us['pgbench'])} | {spread(us['thumper'])} "
          f"| {statistics.median(us['pgbench']) / f:.2f}× | {statistics.median(us['thumper']) / f:.2f}× "
          f"| {spread(per_round, '{:.2f}')}× | {qps['floor']:,.0f}, {qps['pgbench']:,.0f}, {qps['thumper']:,.0f} |")
EOF
