#!/usr/bin/env bash
# grantkeeper's benchmarks, as BENCHMARKS.md reports them: builds the release binaries, makes
# sure wrk is installed (Debian's package) and that 1,024 connections fit under the open-file
# limit, then runs every scenario and prints the table. Arguments go to the bench binary, e.g.
#   bench/run.sh                                  # the published run (about 10 minutes)
#   bench/run.sh --duration 3 --connections 64 --sizes 2000,20000 --memory-users 20000 \
#       --cached 5000 --sweep-users 1000 --verify-iterations 20000  # a quick look
# PostgreSQL is expected at $GRANTKEEPER_TEST_POSTGRES (default
# postgres://postgres@127.0.0.1:5432/postgres, trust authentication); --no-postgres skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  else
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
  fi
fi

# wrk, the server and the bench each hold a socket per connection.
want=65536
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
  want=$hard
fi
ulimit -n "$want" 2>/dev/null || true

cargo build --release -p grantkeeper -p grantkeeper-bench
exec target/release/grantkeeper-bench all "$@"
