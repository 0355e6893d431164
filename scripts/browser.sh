#!/usr/bin/env bash
# install_test_browser: makes sure a headless chromium is there for tests/test_ui.py (the MLflow
# UI and optuna-dashboard screenshot checks), installing Debian's package when root and absent.
# Returns 1 when none can be had; those checks are then skipped with a reason.
# Measured on the 2-core development box: apt-get update + install took 1 min 44 s, once.

install_test_browser() {
  command -v chromium >/dev/null 2>&1 && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
  echo "scripts/test.sh: installing Debian's chromium for the UI screenshot tests" >&2
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; }) || return 1
  command -v chromium >/dev/null 2>&1
}
