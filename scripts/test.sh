#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test and doctest.
#   - a virtualenv (.venv) with the official `openai` Python SDK, for tests/openai_sdk.rs;
#   - redis-server (Debian's package), which tests/fleet.rs starts, one per test, on free
#     loopback ports (those tests fail under CI without it, and skip elsewhere);
#   - cargo-nextest when present (it is on our machines), plain `cargo test` otherwise.
# Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import openai" >/dev/null 2>&1; then
  echo "== installing the openai Python SDK into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi
export MODELGATE_PYTHON="$PWD/.venv/bin/python"

if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (for tests/fleet.rs)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server; } >/dev/null \
    || echo "warning: could not install redis-server: tests/fleet.rs will skip (and fail under CI)"
fi
if command -v redis-server >/dev/null 2>&1; then
  export MODELGATE_REDIS_SERVER="$(command -v redis-server)"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast "$@"
else
  cargo test --all-features --no-fail-fast --lib --bins --tests --examples "$@"
fi
cargo test --all-features --doc
