#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test and doctest.
#   - a virtualenv (.venv) with the official `openai` Python SDK, for tests/openai_sdk.rs;
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

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast "$@"
else
  cargo test --all-features --no-fail-fast --lib --bins --tests --examples "$@"
fi
cargo test --all-features --doc
