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
#   BASELINE=path-to-another-thumper benches/ratio.sh # alternates a second build too: before/after
#   LADDER=1 RATES=10000 benches/ratio.sh             # adds the floor's rungs: what each layer costs
#   PERF=1 benches/ratio.sh                           # also system calls and context switches per
#                                                     # query (perf stat; its counting adds a little CPU)
#
# The ladder (LADDER=1) runs the floor again with one more of thumper's layers each time:
#   floor-precise    each query started at its own due time on a timerfd (the floor uses tokio's
#                    1 ms timer, which starts a millisecond's queries with one wake-up)
#   floor-precise-mt the same on tokio's multi-threaded runtime (two workers, as thumper)
#   floor-precise-mt-driver  the same through tokio-postgres's client instead of the raw socket
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
baseline="${BASELINE:-}"
generators="thumper pgbench floor${baseline:+ baseline}"
[ -n "${LADDER:-}" ] && generators="$generators floor-precise floor-precise-mt floor-precise-mt-driver"
. benches/stack.sh
stack_up ratio-stack
printf 'SELECT 1;\n' > "$work/select1.sql"

# One run of `$@`: its CPU seconds (user + system) into $cpu, its output in $work/out.
measure() {
  local counted=()
  [ -n "${PERF:-}" ] && counted=(perf stat -x, -o "$work/perf" -e raw_syscalls:sys_enter,context-switches --)
  /usr/bin/time -f '%U %S' -o "$work/time" "${counted[@]}" "$@" >"$work/out" 2>&1 || {
    cat "$work/out" >&2
    echo "ratio: a run failed: $*" >&2
    exit 1
  }
  read -r user sys <"$work/time"
  cpu=$(echo "$user + $sys" | bc -l)
  syscalls=- switches=-
  if [ -n "${PERF:-}" ]; then
    syscalls=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$work/perf")
    switches=$(awk -F, '$3 == "context-switches" { print $1 }' "$work/perf")
  fi
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
  local q lag=""
  case "$1" in
    thumper | baseline)
      local build="$thumper"
      [ "$1" = baseline ] && build="$baseline"
      rm -rf "$work/r"
      measure "$build" run "$work/thumper-$2.toml" --quiet --report-dir "$work/r"
      q=$(python3 -c 'import json,sys,glob; print(json.load(open(glob.glob(sys.argv[1]+"/*/summary.json")[0]))["metrics"]["queries"]["count"])' "$work/r")
      lag=$(python3 -c 'import json,sys,glob; m=json.load(open(glob.glob(sys.argv[1]+"/*/summary.json")[0]))["metrics"].get("scheduling_lag"); print("" if not m else "scheduling lag p50 %d p99 %d µs" % (m["p50_us"], m["p99_us"]))' "$work/r" 2>/dev/null || true)
      ;;
    pgbench)
      local limit=()
      [ "$2" != 0 ] && limit=(-R "$2")
      measure pgbench -n -M simple -c "$clients" -j 2 -T "$secs" "${limit[@]}" -f "$work/select1.sql" "$DATABASE_URL"
      q=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/out")
      ;;
    floor*)
      local env=()
      case "$1" in *precise*) env+=(FLOOR_TIMER=precise) ;; esac
      case "$1" in *-mt*) env+=(FLOOR_RUNTIME=multi) ;; esac
      case "$1" in *driver) env+=(FLOOR_DRIVER=tokio-postgres) ;; esac
      measure env "${env[@]}" "$floor" "$DATABASE_URL" "$clients" "$2" "$secs"
      q=$(sed -n 's/^queries \([0-9]*\)$/\1/p' "$work/out")
      ;;
  esac
  echo "$2 $1 $cpu $q $syscalls $switches" >> "$work/results"
  printf '  %-8s %6s/s round %s: %8s queries, %6.1f µs/query %s\n' "$1" "$2" "$3" "$q" \
    "$(echo "$cpu * 1000000 / $q" | bc -l)" "$lag" >&2
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for rate in $rates; do
  thumper_scenario "$rate"
  for round in $(seq 1 "$repeats"); do
    for generator in $generators; do
      run_one "$generator" "$rate" "$round"
    done
  done
done
load="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$work/results" "$clients" "$secs" "$repeats" "$load" <<'EOF'
import statistics, sys
path, clients, secs, repeats, load = sys.argv[1:]
runs = {}  # (rate, generator) → [(µs per query, queries per second)]
counts = {}  # (rate, generator) → [(system calls per query, context switches per query)]
for line in open(path):
    rate, gen, cpu, q, calls, switches = line.split()
    runs.setdefault((int(rate), gen), []).append((float(cpu) * 1e6 / int(q), int(q) / float(secs)))
    if calls != "-":
        counts.setdefault((int(rate), gen), []).append((int(calls) / int(q), int(switches) / int(q)))
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
rungs = ["floor", "floor-precise", "floor-precise-mt", "floor-precise-mt-driver", "thumper", "pgbench"]
if any(g == "floor-precise" for _, g in runs):
    print("\nThe ladder: the floor with one more of thumper's layers per rung (see the script's header)\n")
    print("| rate | " + " | ".join(rungs) + " |")
    print("|---|" + "---|" * len(rungs))
    for rate in sorted({r for r, _ in runs}, key=lambda r: r or 1e12):
        f = statistics.median(u for u, _ in runs[(rate, "floor")])
        cells = []
        for g in rungs:
            us = [u for u, _ in runs[(rate, g)]]
            cells.append(f"{spread(us)} µs, {statistics.median(us) / f:.2f}×")
        name = "flat out" if rate == 0 else f"{rate:,}/s"
        print(f"| {name} | " + " | ".join(cells) + " |")
if counts:
    gens = [g for g in rungs + ["baseline"] if any(k[1] == g for k in counts)]
    print("\nSystem calls and context switches per query (perf stat), median\n")
    print("| rate | " + " | ".join(gens) + " |")
    print("|---|" + "---|" * len(gens))
    for rate in sorted({r for r, _ in counts}, key=lambda r: r or 1e12):
        cells = [f"{statistics.median(c for c, _ in counts[(rate, g)]):.2f} calls, "
                 f"{statistics.median(w for _, w in counts[(rate, g)]):.2f} switches" for g in gens]
        name = "flat out" if rate == 0 else f"{rate:,}/s"
        print(f"| {name} | " + " | ".join(cells) + " |")
if any(g == "baseline" for _, g in runs):
    print("\n| rate | baseline µs | thumper µs | thumper ÷ baseline, per round |")
    print("|---|---|---|---|")
    for rate in sorted({r for r, _ in runs}, key=lambda r: r or 1e12):
        t = [u for u, _ in runs[(rate, "thumper")]]
        b = [u for u, _ in runs[(rate, "baseline")]]
        name = "flat out" if rate == 0 else f"{rate:,}/s"
        print(f"| {name} | {spread(b)} | {spread(t)} | {spread([x / y for x, y in zip(t, b)], '{:.2f}')}× |")
EOF
