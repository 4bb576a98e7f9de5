# Sourced by the bench scripts: `stack_up NAME [TOML]` starts one embedded stack for the whole
# script (its state in $work, TOML appended to its scenario, e.g. a [stack.pgbouncer] table),
# exports its URLs (DATABASE_URL, ADMIN_DATABASE_URL, …) and stops it when the script exits.
# Needs $thumper and $work.
stack_up() {
  export THUMPER_STACK_STATE="$work/stack.json"
  cat > "$work/stack.toml" <<STACK
name = "$1"
executor = "constant-vus"
vus = 1
duration = "1s"
[[queries]]
name = "health"
sql = "SELECT 1"
${2:-}
STACK
  set -a
  eval "$("$thumper" stack up --scenario "$work/stack.toml")"
  set +a
  trap '"$thumper" stack down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
}
