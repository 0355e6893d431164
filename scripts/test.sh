#!/usr/bin/env bash
# The project's test run (`make test`; .ci/run calls exactly that). Starts a throwaway PostgreSQL
# server on loopback for the multi-worker storage tests when it can; without one those tests are
# skipped with a reason, everything else still runs. Likewise Debian's chromium for the UI
# screenshot tests (scripts/browser.sh).
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
# shellcheck source=scripts/browser.sh
source scripts/browser.sh
install_test_browser ||
  echo "scripts/test.sh: no chromium could be installed; the UI screenshot tests will be skipped" >&2
.venv/bin/python -m pytest "$@"
