#!/usr/bin/env bash
# thumper's own cost, side by side with pgbench on one stack, in one run: CPU time per query of
# each generator process (user + system, from getrusage via GNU time; not wall time), the
# ratio, the maximum resident memory of thumper at 1,000 and 10,000 VUs, and the gateway
# figures (benches/gateway-floor.sh: the gateway against its floor, its memory slope). A benchmark, not a test: it asserts nothing about speed, but stops on a failed run.
#
#   benches/selfbench.sh            # 20 s per workload
#   SECONDS_PER_RUN=5 CLIENTS=20 benches/selfbench.sh    # a quick look
#   THUMPER=target/debug/thumper SKIP_GATEWAY=1 ...       # another build, no gateway part
#   PARTS=memory SECONDS_PER_RUN=10 benches/selfbench.sh   # only some of: cpu memory gateway
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${SECONDS_PER_RUN:-20}"
clients="${CLIENTS:-100}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "${THUMPER:-}" ]; then
  cargo build --release --quiet --bin thumper --bin gateway
  THUMPER="$PWD/target/release/thumper"
fi
thumper="$THUMPER"

# One stack for every run; PgBouncer takes 10,000 clients for the memory run.
. benches/stack.sh
stack_up selfbench-stack "[stack.pgbouncer]
max_client_conn = 12000"

# Seed the dataset the tenant workload reads, then find one of its communities for pgbench.
cat > "$work/seed.toml" <<EOF
name = "selfbench-seed"
executor = "constant-vus"
vus = 1
duration = "1s"
[dataset]
communities = 1000
profiles_per_community = 100
[[queries]]
name = "health"
sql = "SELECT 1"
EOF
"$thumper" run "$work/seed.toml" --quiet --report-dir "$work/reports" >/dev/null
community="$(psql "$ADMIN_DATABASE_URL" -Atc 'SELECT id FROM communities ORDER BY id LIMIT 1')"

# CPU seconds (user + system) and max RSS (KB) of one command.
measure() {
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >"$work/out" 2>&1 || {
    cat "$work/out" >&2
    echo "selfbench: a run failed: $*" >&2
    exit 1
  }
  read -r user sys rss <"$work/time"
  cpu=$(echo "$user + $sys" | bc -l)
}

scenario() { # name protocol sql tenant_scoped vus think
  cat > "$work/$1.toml" <<EOF
name = "$1"
executor = "constant-vus"
vus = $5
duration = "${secs}s"
think_time = "$6"
protocol = "$2"
[dataset]
communities = 1000
profiles_per_community = 100
[[queries]]
name = "q"
sql = "$3"
tenant_scoped = $4
EOF
}

queries_of() { # report folder parent → queries in its summary.json
  python3 -c 'import json,sys,glob; s=json.load(open(glob.glob(sys.argv[1]+"/*/summary.json")[0])); print(s["metrics"]["queries"]["count"])' "$1"
}

tenant_sql="SELECT community_id, wallet_address, discord_user_id FROM profiles ORDER BY wallet_address LIMIT 10"
printf 'SELECT 1;\n' > "$work/select1.sql"
cat > "$work/tenant.sql" <<EOF
BEGIN;
SELECT set_tenant_context('$community'::uuid, false);
$tenant_sql;
COMMIT;
EOF

parts="${PARTS:-cpu memory gateway}"
[ -n "${SKIP_GATEWAY:-}" ] && parts="${parts/gateway/}"
if [[ " $parts " == *" cpu "* ]]; then
printf '\n%-34s %12s %12s %12s %8s\n' "workload ($clients connections, ${secs} s)" "pgbench" "thumper" "µs/query" "ratio"
for workload in select1 tenant; do
  for protocol in simple extended; do
    measure pgbench -n -M "$protocol" -c "$clients" -j 2 -T "$secs" -f "$work/$workload.sql" "$DATABASE_URL"
    pg_tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$work/out")
    pg_us=$(echo "$cpu * 1000000 / $pg_tx" | bc -l)
    if [ "$workload" = select1 ]; then
      scenario "$workload-$protocol" "$protocol" "SELECT 1" false "$clients" 0s
    else
      scenario "$workload-$protocol" "$protocol" "$tenant_sql" true "$clients" 0s
    fi
    measure "$thumper" run "$work/$workload-$protocol.toml" --quiet --report-dir "$work/r-$workload-$protocol"
    th_q=$(queries_of "$work/r-$workload-$protocol")
    th_us=$(echo "$cpu * 1000000 / $th_q" | bc -l)
    printf '%-34s %12s %12s %5.1f/%5.1f %7.2fx\n' "$workload, $protocol" "$pg_tx tx" "$th_q q" \
      "$pg_us" "$th_us" "$(echo "$th_us / $pg_us" | bc -l)"
  done
done
echo "(µs/query: pgbench/thumper CPU time of the generator process; a tenant transaction is four statements and counts as one)"
fi

if [[ " $parts " == *" memory "* ]]; then
printf '\n%-34s %12s %12s\n' "memory (1 s think time, ${secs} s)" "queries" "max RSS"
rss_of=()
for vus in 1000 5000 10000; do
  scenario "vus$vus" extended "SELECT 1" false "$vus" 1s
  measure "$thumper" run "$work/vus$vus.toml" --quiet --report-dir "$work/r-vus$vus"
  printf '%-34s %12s %9.1f MB\n' "$vus VUs" "$(queries_of "$work/r-vus$vus")" "$(echo "$rss / 1024" | bc -l)"
  rss_of+=("$rss")
done
# The fixed cost and the cost of one more VU, from the 1,000- and 10,000-VU runs.
per_vu=$(echo "(${rss_of[2]} - ${rss_of[0]}) / 9000" | bc -l)
printf '%-34s %9.1f MB fixed + %.1f KiB per VU\n' "slope (1,000 → 10,000 VUs)" \
  "$(echo "(${rss_of[0]} - 1000 * $per_vu) / 1024" | bc -l)" "$per_vu"
fi

[[ " $parts " == *" gateway "* ]] || exit 0
echo
echo "gateway against its floor, and its memory (benches/gateway-floor.sh):"
benches/gateway-floor.sh
