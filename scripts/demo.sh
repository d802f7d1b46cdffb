#!/usr/bin/env bash
# The README's demo command: install what is missing, then run the whole pipeline until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
printf '\n\033[1;36m==> demo\033[0m\n'
exec .venv/bin/python -m infra.demo "$@"
