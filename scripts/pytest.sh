#!/usr/bin/env bash
# pytest with the project's rule on exit codes: "collected no tests" (5) is a failure, not a pass,
# so a selection that matches nothing (a renamed marker, a mistyped path) can never turn green.
set -euo pipefail
cd "$(dirname "$0")/.."
printf '\n\033[1;36m==> pytest %s\033[0m\n' "$*"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
