#!/usr/bin/env bash
# Runs once, on an empty data directory (the postgres image's /docker-entrypoint-initdb.d):
# creates the roles and database exactly as the embedded stack does (src/stack/postgres.rs,
# `bootstrap`), then applies /migrations/*.sql in file-name order as the owner role, each file in
# one transaction, as thumper's runner does. tests/compose.rs checks the names against
# thumper::stack.
#
# The migrations are not recorded in thumper_schema_migrations here; every statement in them is
# guarded, so `thumper run --admin-url ...` re-applies them harmlessly and records them.
set -euo pipefail

: "${ARRAKIS_OWNER_PASSWORD:?set in docker-compose.yml}"
: "${ARRAKIS_APP_PASSWORD:?set in docker-compose.yml}"

# One statement per line: psql sends each on its own, and CREATE DATABASE refuses to run inside
# a transaction block. md5-stored passwords, so PgBouncer's md5 auth file can log in with them.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$ARRAKIS_OWNER_PASSWORD" -v app_password="$ARRAKIS_APP_PASSWORD" <<'SQL'
SET password_encryption = md5;
CREATE ROLE arrakis_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE arrakis_app LOGIN PASSWORD :'app_password';
CREATE ROLE arrakis_admin NOLOGIN;
GRANT arrakis_admin TO arrakis_owner;
CREATE DATABASE arrakis OWNER arrakis_owner;
REVOKE ALL ON DATABASE arrakis FROM PUBLIC;
GRANT CONNECT ON DATABASE arrakis TO arrakis_app;
SQL

shopt -s nullglob
LC_COLLATE=C # byte order of file names, as thumper's runner sorts them
migrations=(/migrations/*.sql)
if [ ${#migrations[@]} -eq 0 ]; then
  echo "init-arrakis: no *.sql in /migrations (is ./migrations mounted?)" >&2
  exit 1
fi
for file in "${migrations[@]}"; do
  echo "init-arrakis: applying $(basename "$file")"
  PGPASSWORD="$ARRAKIS_OWNER_PASSWORD" psql -v ON_ERROR_STOP=1 --no-psqlrc --single-transaction \
    --username arrakis_owner --dbname arrakis --file "$file"
done
