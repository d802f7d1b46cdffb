#!/usr/bin/env bash
# The project's test command: install what is missing, then run the whole suite
# against the real stack (pytest's session fixtures start and stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
printf '\n\033[1;36m==> pytest\033[0m\n'
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$status"
