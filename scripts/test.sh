#!/usr/bin/env bash
# The test command (README): installs what the tests need, then runs every test and doctest.
#   - a virtualenv (.venv) with the official `openai`, `anthropic` and `openrouter` Python
#     SDKs, for tests/openai_sdk.rs, tests/anthropic_clients.rs and tests/openrouter_clients.rs;
#   - OpenRouter's TypeScript SDK (`@openrouter/sdk`), from npm into .tools/, for
#     tests/openrouter_clients.rs;
#   - Claude Code (`@anthropic-ai/claude-code`), the Codex CLI (`@openai/codex`) and the Vercel
#     AI SDK (`ai`, `@ai-sdk/openai`), from npm into .tools/, which tests/anthropic_clients.rs
#     and tests/openai_clients.rs run against the proxy;
#   - redis-server (Debian's package), which tests/fleet.rs starts, one per test, on free
#     loopback ports (those tests fail under CI without it, and skip elsewhere);
#   - Chromium (Debian's package) and playwright-core (npm, into .tools/playwright), which
#     tests/ui.rs drives through the page at /ui (Playwright's own browser download is not
#     used);
#   - cargo-nextest when present (it is on our machines), plain `cargo test` otherwise.
# Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! .venv/bin/python -c "import openai, anthropic, openrouter" >/dev/null 2>&1; then
  echo "== installing the openai, anthropic and openrouter Python SDKs into .venv"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
fi
export MODELGATE_PYTHON="$PWD/.venv/bin/python"

CLAUDE_CODE_VERSION="2.1.332"
claude=".tools/claude-code/node_modules/.bin/claude"
if ! "$claude" --version 2>/dev/null | grep -q "$CLAUDE_CODE_VERSION"; then
  echo "== installing Claude Code $CLAUDE_CODE_VERSION into .tools/claude-code"
  npm install --silent --no-audit --no-fund --prefix .tools/claude-code \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null \
    || echo "warning: could not install Claude Code: tests/anthropic_clients.rs will skip it (and fail under CI)"
fi
if [ -x "$claude" ]; then
  export MODELGATE_CLAUDE="$PWD/$claude"
fi

CODEX_VERSION="0.171.0"
codex=".tools/codex/node_modules/.bin/codex"
if ! "$codex" --version 2>/dev/null | grep -q "$CODEX_VERSION"; then
  echo "== installing the Codex CLI $CODEX_VERSION into .tools/codex"
  npm install --silent --no-audit --no-fund --prefix .tools/codex \
    "@openai/codex@$CODEX_VERSION" >/dev/null \
    || echo "warning: could not install the Codex CLI: tests/openai_clients.rs will skip it (and fail under CI)"
fi
if [ -x "$codex" ]; then
  export MODELGATE_CODEX="$PWD/$codex"
fi

AI_SDK_PACKAGES=("ai@7.0.185" "@ai-sdk/openai@4.0.126")
if ! node -e 'require.resolve("ai", {paths: [".tools/ai-sdk"]}); require.resolve("@ai-sdk/openai", {paths: [".tools/ai-sdk"]})' >/dev/null 2>&1; then
  echo "== installing the Vercel AI SDK into .tools/ai-sdk"
  npm install --silent --no-audit --no-fund --prefix .tools/ai-sdk "${AI_SDK_PACKAGES[@]}" >/dev/null \
    || echo "warning: could not install the AI SDK: tests/openai_clients.rs will skip it (and fail under CI)"
fi
if [ -d .tools/ai-sdk/node_modules/ai ]; then
  export MODELGATE_AI_SDK="$PWD/.tools/ai-sdk"
fi

OPENROUTER_TS_VERSION="1.3.19"
if ! node -e 'const p = require(require.resolve("@openrouter/sdk/package.json", {paths: [".tools/openrouter-sdk"]})); process.exit(p.version === process.argv[1] ? 0 : 1)' "$OPENROUTER_TS_VERSION" >/dev/null 2>&1; then
  echo "== installing OpenRouter's TypeScript SDK $OPENROUTER_TS_VERSION into .tools/openrouter-sdk"
  npm install --silent --no-audit --no-fund --prefix .tools/openrouter-sdk "@openrouter/sdk@$OPENROUTER_TS_VERSION" >/dev/null \
    || echo "warning: could not install @openrouter/sdk: tests/openrouter_clients.rs will skip it (and fail under CI)"
fi
if [ -d .tools/openrouter-sdk/node_modules/@openrouter/sdk ]; then
  export MODELGATE_OPENROUTER_TS="$PWD/.tools/openrouter-sdk"
fi

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

if ! command -v chromium >/dev/null 2>&1; then
  echo "== installing Chromium (for tests/ui.rs)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } >/dev/null \
    || echo "warning: could not install Chromium: tests/ui.rs will skip (and fail under CI)"
fi
if command -v chromium >/dev/null 2>&1; then
  export MODELGATE_CHROMIUM="$(command -v chromium)"
fi
PLAYWRIGHT_VERSION="1.65.2"
if ! grep -qs "\"version\": \"$PLAYWRIGHT_VERSION\"" .tools/playwright/node_modules/playwright-core/package.json; then
  echo "== installing playwright-core $PLAYWRIGHT_VERSION into .tools/playwright"
  npm install --silent --no-audit --no-fund --prefix .tools/playwright \
    "playwright-core@$PLAYWRIGHT_VERSION" >/dev/null \
    || echo "warning: could not install playwright-core: tests/ui.rs will skip (and fail under CI)"
fi
if [ -d .tools/playwright/node_modules/playwright-core ]; then
  export MODELGATE_PLAYWRIGHT="$PWD/.tools/playwright"
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-features --no-fail-fast "$@"
else
  cargo test --all-features --no-fail-fast --lib --bins --tests --examples "$@"
fi
cargo test --all-features --doc
