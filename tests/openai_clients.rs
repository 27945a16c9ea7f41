//! Real OpenAI Responses clients against the proxy, in front of fake providers of every kind:
//! the official `openai` Python SDK's `responses` API, the Vercel AI SDK's default
//! `openai(model)`, and the Codex CLI itself.
//!
//! Needs `MODELGATE_PYTHON` (a Python with the `openai` package), `MODELGATE_AI_SDK` (a folder
//! with the `ai` and `@ai-sdk/openai` packages) and `MODELGATE_CODEX` (the `codex` command of
//! `@openai/codex`); `scripts/test.sh` installs them and sets them. Without them these tests
//! fail when `CI` is set and are skipped otherwise.

mod support;

use serde_json::{json, Value};
use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";
const TIDES: &str = "Tides come mostly from the Moon's pull on the oceans.";

/// The gateway in front of fakes of every kind, each behaviour of theirs a public model.
async fn gateway(oai: &FakeProvider, anth: &FakeProvider, gem: &FakeProvider) -> Gateway {
    gateway_with(oai, anth, gem, None).await
}

/// [`gateway`], with an OpenAI-kind endpoint serving the Responses API natively when given.
async fn gateway_with(
    oai: &FakeProvider,
    anth: &FakeProvider,
    gem: &FakeProvider,
    native: Option<&FakeProvider>,
) -> Gateway {
    let mut toml = format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[fallback]
retries_per_target = 0

[[providers]]
name = "oai"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
"#,
        oai.base_url(),
        anth.base_url(),
        gem.base_url()
    );
    for (id, provider, upstream) in [
        ("openai/gpt", "oai", "text"),
        ("openai/tool", "oai", "tool"),
        ("openai/cut", "oai", "cut"),
        ("openai/busy", "oai", "fail-400"),
        ("anthropic/claude", "anth", "claude-text"),
        ("anthropic/thinking", "anth", "claude-thinking"),
        ("gemini/flash", "gem", "gemini-2.5-flash"),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\n[[models.endpoints]]\nprovider = \"{provider}\"\nmodel = \"{upstream}\"\nprompt_price = 3.0\ncompletion_price = 15.0\n"
        ));
    }
    if let Some(native) = native {
        toml.push_str(&format!(
            "\n[[providers]]\nname = \"oair\"\nkind = \"openai\"\nbase_url = \"{}\"\napi_key = \"{PROVIDER_KEY}\"\nresponses = true\n\n[[models]]\nid = \"openai/native\"\n[[models.endpoints]]\nprovider = \"oair\"\nmodel = \"gpt-5\"\nprompt_price = 1.25\ncompletion_price = 10.0\n",
            native.base_url()
        ));
    }
    Gateway::start(&toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_responses() {
    let Some(python) = installed("MODELGATE_PYTHON", "the openai SDK") else {
        return;
    };
    let oai = FakeProvider::start(standard).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let native = FakeProvider::start(standard_openai_responses).await;
    let gw = gateway_with(&oai, &anth, &gem, Some(&native)).await;
    run_sdk_script(
        &python,
        "openai_responses.py",
        &[gw.url("/v1"), KEY.to_owned()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_ai_sdk_default_openai_provider() {
    let Some(dir) = installed("MODELGATE_AI_SDK", "the AI SDK") else {
        return;
    };
    let oai = FakeProvider::start(standard).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&oai, &anth, &gem).await;
    let script = format!("{}/tests/sdk/ai_sdk.mjs", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .arg(gw.url("/v1"))
        .arg(KEY)
        .env("AI_SDK_DIR", &dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the AI SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(oai.count() > 0 && anth.count() > 0 && gem.count() > 0);
}

/// `codex exec` against the gateway, offline, with a throwaway `CODEX_HOME` whose
/// `config.toml` points a provider at the proxy with `wire_api = "responses"`.
async fn codex_says(codex: &str, gw: &Gateway, model: &str, prompt: &str) -> String {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            r#"model = "{model}"
model_provider = "modelgate"

[model_providers.modelgate]
name = "modelgate"
base_url = "{}"
env_key = "MODELGATE_KEY"
wire_api = "responses"
"#,
            gw.url("/v1")
        ),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let codex_home = home.path().to_str().unwrap();
    run_cli(
        codex,
        &[
            "exec",
            "--skip-git-repo-check",
            "--dangerously-bypass-approvals-and-sandbox",
            prompt,
        ],
        work.path(),
        home.path(),
        &[("CODEX_HOME", codex_home), ("MODELGATE_KEY", KEY)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_through_endpoints_of_every_kind() {
    let Some(codex) = installed("MODELGATE_CODEX", "the Codex CLI") else {
        return;
    };
    let oai = FakeProvider::start(standard).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let native = FakeProvider::start(standard_openai_responses).await;
    let gw = gateway_with(&oai, &anth, &gem, Some(&native)).await;
    let said = codex_says(&codex, &gw, "openai/native", "say hi").await;
    assert!(said.contains("Hi there"), "native: {said}");
    assert_eq!(
        native.last().body["model"],
        "gpt-5",
        "Codex's own body, model rewritten"
    );
    for model in ["openai/gpt", "anthropic/claude", "gemini/flash"] {
        let said = codex_says(&codex, &gw, model, "say hi").await;
        assert!(said.contains(TIDES), "{model}: {said}");
    }
    // Codex's own tools reached each provider, translated.
    assert!(oai.last().body["tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    assert!(anth.last().body["tools"]
        .as_array()
        .is_some_and(|t| !t.is_empty()));
    assert!(gem.last().body["tools"].is_array());
}

/// An OpenAI-kind fake that asks for a shell command, then answers with what it printed.
fn shell_round_trip(received: &Received) -> Script {
    let messages = received.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let output = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .map(|m| m["content"].to_string());
    let chunk = |delta: Value, finish: Option<&str>| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "text",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let usage = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":5,\"total_tokens\":15}}\n\n";
    let body = match output {
        None => {
            let args = json!({"cmd": "echo modelgate-tool-ok"}).to_string();
            vec![
                chunk(
                    json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_sh1", "type": "function",
                    "function": {"name": "exec_command", "arguments": ""}}]}),
                    None,
                ),
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                    None,
                ),
                chunk(json!({}), Some("tool_calls")),
            ]
        }
        Some(out) => {
            let seen = if out.contains("modelgate-tool-ok") {
                "the command printed modelgate-tool-ok"
            } else {
                "the command printed nothing I know"
            };
            vec![
                chunk(json!({"role": "assistant", "content": seen}), None),
                chunk(json!({}), Some("stop")),
            ]
        }
    };
    let mut pieces: Vec<Piece> = body.into_iter().map(|e| Piece::Data(e.into())).collect();
    pieces.push(Piece::Data(usage.into()));
    pieces.push(Piece::Data("data: [DONE]\n\n".into()));
    Script::sse(pieces)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_runs_a_tool_the_provider_asked_for() {
    let Some(codex) = installed("MODELGATE_CODEX", "the Codex CLI") else {
        return;
    };
    let oai = FakeProvider::start(shell_round_trip).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&oai, &anth, &gem).await;
    let said = codex_says(&codex, &gw, "openai/gpt", "run the echo").await;
    assert!(
        said.contains("the command printed modelgate-tool-ok"),
        "{said}"
    );
    assert_eq!(oai.count(), 2, "the call, then its output");
    let second = oai.last().body;
    let messages = second["messages"].as_array().unwrap();
    let call = messages
        .iter()
        .find(|m| m["tool_calls"].is_array())
        .expect("the assistant's call went back");
    assert_eq!(call["tool_calls"][0]["id"], "call_sh1");
    assert!(messages
        .iter()
        .any(|m| m["role"] == "tool" && m["tool_call_id"] == "call_sh1"));
}
