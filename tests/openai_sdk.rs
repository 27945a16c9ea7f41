//! The official `openai` Python SDK against the proxy (in front of the fake provider).
//!
//! Needs `MODELGATE_PYTHON`: a Python with the `openai` package (`scripts/test.sh` makes a
//! virtualenv and sets it). Without it the test fails when `CI` is set and is skipped otherwise.

mod support;

use support::*;

fn python() -> Option<String> {
    installed("MODELGATE_PYTHON", "the openai SDK")
}

async fn run_script(python: &str, script: &str, base_url: String) {
    run_sdk_script(python, script, &[base_url]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk() {
    let Some(python) = python() else { return };
    let fake = FakeProvider::start(standard).await;
    // One attempt per request (the SDK's error classes are the point here); cool-downs stay
    // on, so a second request to the rate-limited model meets the gateway's own 429.
    let gw = Gateway::in_front_of(&fake, "[fallback]\nretries_per_target = 0\n").await;
    run_script(&python, "openai_compat.py", gw.url("/v1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_stream_helper_accumulates_translated_tool_calls() {
    let Some(python) = python() else { return };
    let anthropic =
        FakeProvider::start(|_| Script::sse(events_of(&fixture("anthropic/anthropic_tool.sse"))))
            .await;
    let gemini =
        FakeProvider::start(|_| Script::sse(events_of(&fixture("gemini/gemini_tool.sse")))).await;
    let gw = Gateway::start(&format!(
        r#"
[[providers]]
name = "anth"
kind = "anthropic"
base_url = "http://{}"
api_key = "k"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "http://{}"
api_key = "k"
"#,
        anthropic.addr, gemini.addr
    ))
    .await;
    run_script(&python, "translated_streams.py", gw.url("/v1")).await;
}
