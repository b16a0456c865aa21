#!/usr/bin/env bash
# Commits a migration written in a work-in-progress file, against the embedded cluster.
#   scripts/migration-commit.sh migrations/wip-billing.sql "wallets and reservations"
# Several people may share a checkout: current.sql stays empty between commits, each person keeps
# DDL in a file of their own, and this script (under a lock) moves it into current.sql, commits it
# with graphile-migrate, and empties the file.
set -euo pipefail
cd "$(dirname "$0")/.."
wip=${1:?usage: scripts/migration-commit.sh <wip file> <message>}
msg=${2:?usage: scripts/migration-commit.sh <wip file> <message>}
exec 9>/tmp/elygate-migrate.lock
flock 9
node scripts/pg.mjs start >/dev/null
url=$(node scripts/pg.mjs url)
base=${url%/*}
if grep -qv '^\s*\(--.*\)\?$' migrations/current.sql; then
  echo "migrations/current.sql is not empty; someone is mid-commit or left DDL there." >&2
  exit 1
fi
cp "$wip" migrations/current.sql
DATABASE_URL=$url SHADOW_DATABASE_URL=$base/elygate_shadow ROOT_DATABASE_URL=$base/postgres \
  node_modules/.bin/graphile-migrate commit --message "$msg"
: > "$wip"
ls migrations/committed | tail -1
