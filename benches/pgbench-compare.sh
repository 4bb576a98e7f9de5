#!/usr/bin/env bash
# thumper pgbench against pgbench itself, on one stack, the same database and the same options,
# runs alternated (pgbench, thumper, pgbench, ...): tps of each, the rows each run added to
# pgbench_history against the transactions it reported, and how closely each follows -R. A
# benchmark, not a test: it prints a table and asserts only that the runs succeed.
#
#   benches/pgbench-compare.sh                         # -s 10, -c 10 -j 2 -T 30, 3 pairs, -R 500
#   SECONDS_PER_RUN=5 PAIRS=1 benches/pgbench-compare.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECONDS_PER_RUN:-30}"
pairs="${PAIRS:-3}"
scale="${SCALE:-10}"
rate="${RATE:-500}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -z "${THUMPER:-}" ]; then
  cargo build --release --quiet --bin thumper
  THUMPER="$PWD/target/release/thumper"
fi
pgbench="$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)"
export THUMPER_STACK_STATE="$work/stack.json"
set -a
eval "$("$THUMPER" stack up)"
set +a
trap '"$THUMPER" stack down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

"$THUMPER" pgbench -i -s "$scale" >/dev/null 2>&1
history() {
  "$pgbench_psql" -At -c "SELECT count(*) FROM pgbench_history" "$ADMIN_DATABASE_URL"
}
pgbench_psql="$(dirname "$pgbench")/psql"

# One run: prints "tps transactions history-rows".
run() {
  local who="$1"; shift
  local out
  if [ "$who" = pgbench ]; then
    out="$("$pgbench" "$@" "$DATABASE_URL" 2>/dev/null)"
  else
    out="$("$THUMPER" pgbench "$@" --report-dir "$work/reports" 2>/dev/null || true)"
  fi
  local tps tx
  tps="$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out")"
  tx="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")"
  echo "$tps $tx $(history)"
}

printf '| run | generator | tps | transactions | rows added to pgbench_history |\n|---|---|---|---|---|\n'
declare -a p_tps t_tps
for i in $(seq 1 "$pairs"); do
  for who in pgbench thumper; do
    read -r tps tx rows < <(run "$who" -c 10 -j 2 -T "$secs" -b tpcb-like)
    printf '| %d | %s | %s | %s | %s |\n' "$i" "$who" "$tps" "$tx" "$rows"
    if [ "$who" = pgbench ]; then p_tps+=("$tps"); else t_tps+=("$tps"); fi
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
pm="$(median "${p_tps[@]}")"; tm="$(median "${t_tps[@]}")"
echo
echo "median tps: pgbench $pm, thumper $tm, thumper/pgbench $(awk -v a="$tm" -v b="$pm" 'BEGIN {printf "%.3f", a/b}')"
echo
printf '| -R %s | tps | off the rate |\n|---|---|---|\n' "$rate"
for who in pgbench thumper; do
  read -r tps tx rows < <(run "$who" -c 10 -j 2 -T "$secs" -R "$rate" -b tpcb-like)
  printf '| %s | %s | %s %% |\n' "$who" "$tps" "$(awk -v a="$tps" -v r="$rate" 'BEGIN {printf "%+.2f", 100*(a-r)/r}')"
done
