#!/usr/bin/env bash
# Lint, format and type checks, as configured in pyproject.toml ([tool.ruff], [tool.mypy]).
# Runs before any test (scripts/test.sh, scripts/check.sh); all three run, and any failure fails it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/ruff ]; then
  echo "no .venv with the dev tools yet: run \`make bootstrap\` (or \`make test\`) once first" >&2
  exit 1
fi
failed=()
run() {
  printf '\n\033[1;36m==> %s\033[0m\n' "${*#.venv/bin/}"
  "$@" || failed+=("${*#.venv/bin/}")
}
run .venv/bin/ruff check .
run .venv/bin/ruff format --check .
run .venv/bin/mypy
if [ "${#failed[@]}" -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  echo "ruff fixes what it can with: .venv/bin/ruff format . && .venv/bin/ruff check --fix ." >&2
  exit 1
fi
