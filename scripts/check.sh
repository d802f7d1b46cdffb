#!/usr/bin/env bash
# The fast tier: lint, types and the tests that need no running service. It starts
# nothing and takes about a minute; `make test` still runs everything.
# Tests that ask for the `stack` fixture are marked `service` (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh
scripts/pytest.sh -m "not service and not browser and not slow" "$@"
