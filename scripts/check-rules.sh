#!/usr/bin/env bash
# `npm run check` step: the shipped Prometheus alert rules pass `promtool check rules`. promtool
# comes with Debian's prometheus package; without it the step is skipped with a note, unless
# DWCP_REQUIRE_PROMTOOL=1 (CI, which installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v promtool >/dev/null 2>&1; then
  if [ "${DWCP_REQUIRE_PROMTOOL:-0}" = "1" ]; then
    echo "check-rules: promtool not found (apt-get install prometheus)" >&2
    exit 1
  fi
  echo "check-rules: promtool not found; ops/prometheus/dwcp.rules.yml not checked (apt-get install prometheus)"
  exit 0
fi
promtool check rules ops/prometheus/dwcp.rules.yml
