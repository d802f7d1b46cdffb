#!/usr/bin/env bash
# Installs everything the project needs, idempotently, saying what it does.
# Caches: uv's wheel cache (~/.cache/uv), Cargo's registry (~/.cargo), Maven's repository (~/.m2) and the
# stack's jars (~/.cache/heatmap/jars), so a second run downloads nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

step "checking tools: python3.11, java 17, mvn, node/npm"
for tool in python3 java mvn npm; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install it (Debian: apt-get install -y ${tool/python3/python3.11})" >&2; exit 1; }
done

step "uv (Python installer, from PyPI)"
if ! command -v uv >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
uv --version

step "Python environment in .venv (locked versions from requirements.lock)"
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
uv pip install --python .venv/bin/python -r requirements.lock
uv pip install --quiet --python .venv/bin/python --no-deps -e .

step "landing's native lake-line codec (Rust, native/; crates from crates.io, built by maturin)"
command -v cargo >/dev/null || { echo "missing cargo: install Rust (https://rustup.rs, or Debian: apt-get install -y cargo)" >&2; exit 1; }
# Built again only when its sources change (uv would rebuild a local directory on every install).
native_sources=$(cat native/Cargo.toml native/Cargo.lock native/pyproject.toml native/*.pyi native/src/*.rs | sha256sum | cut -c1-16)
if [ "$(cat .venv/.heatmap-native 2>/dev/null)" = "$native_sources" ] && .venv/bin/python -c "import heatmap_native" 2>/dev/null; then
  echo "heatmap-native up to date ($native_sources)"
else
  uv pip install --python .venv/bin/python ./native
  echo "$native_sources" > .venv/.heatmap-native
fi

step "stack components: Kafka, S3Proxy, hadoop-aws jars (Maven Central); redis-server, chromium (apt); heatmap.js (npm)"
.venv/bin/python -m infra.stack fetch

step "bootstrap done"
