#!/usr/bin/env bash
# The project's test command: install what is missing, run the lint and type checks,
# then the whole suite against the real stack (pytest's session fixtures start and stop it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/lint.sh
scripts/pytest.sh "$@"
