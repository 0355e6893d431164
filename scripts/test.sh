#!/usr/bin/env bash
# The project's test run (`make test`; .ci/run calls exactly that). Starts a throwaway PostgreSQL
# server on loopback for the multi-worker storage tests when it can; without one those tests are
# skipped with a reason, everything else still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh
if [ -z "${MVLAB_TEST_POSTGRES_URL:-}" ]; then
  if start_test_postgres; then
    trap stop_test_postgres EXIT
  else
    echo "scripts/test.sh: no PostgreSQL server could be started; its tests will be skipped" >&2
  fi
fi
export MVLAB_TEST_POSTGRES_URL="${MVLAB_TEST_POSTGRES_URL:-}"
.venv/bin/python -m pytest "$@"
