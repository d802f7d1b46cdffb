#!/usr/bin/env bash
# Lint, format and type checks, as configured in pyproject.toml ([tool.ruff], [tool.mypy]).
# Runs before any test (scripts/test.sh, scripts/check.sh): the first failure stops the run.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }
step "ruff check"
.venv/bin/ruff check .
step "ruff format --check"
.venv/bin/ruff format --check .
step "mypy"
.venv/bin/mypy
