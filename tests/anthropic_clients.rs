//! Real Anthropic clients against the proxy's Messages API, in front of fake providers of both
//! kinds: the official `anthropic` Python SDK, and Claude Code itself.
//!
//! Needs `MODELGATE_PYTHON` (a Python with the `anthropic` package) and `MODELGATE_CLAUDE`
//! (the `claude` command of `@anthropic-ai/claude-code`); `scripts/test.sh` installs both and
//! sets them. Without them these tests fail when `CI` is set and are skipped otherwise.

mod support;

use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";

/// The gateway in front of fakes of every kind (Anthropic, OpenAI, Gemini), each behaviour of
/// theirs a public model.
async fn gateway(anth: &FakeProvider, oai: &FakeProvider, gem: &FakeProvider) -> Gateway {
    let mut toml = format!(
        r#"
[[keys]]
name = "app"
key = "{KEY}"

[fallback]
retries_per_target = 0

[[providers]]
name = "anth"
kind = "anthropic"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "oai"
kind = "openai"
base_url = "{}"
api_key = "{PROVIDER_KEY}"

[[providers]]
name = "gem"
kind = "gemini"
base_url = "{}"
api_key = "{PROVIDER_KEY}"
"#,
        anth.base_url(),
        oai.base_url(),
        gem.base_url()
    );
    for (id, provider, upstream) in [
        ("anthropic/claude", "anth", "claude-text"),
        ("anthropic/thinking", "anth", "claude-thinking"),
        ("anthropic/tool", "anth", "claude-tool"),
        ("anthropic/cut", "anth", "claude-cut"),
        ("anthropic/busy", "anth", "claude-529"),
        ("openai/gpt", "oai", "text"),
        ("openai/tool", "oai", "tool"),
        ("gemini/flash", "gem", "gemini-2.5-flash"),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\n[[models.endpoints]]\nprovider = \"{provider}\"\nmodel = \"{upstream}\"\nprompt_price = 3.0\ncompletion_price = 15.0\n"
        ));
    }
    Gateway::start(&toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_anthropic_python_sdk() {
    let Some(python) = installed("MODELGATE_PYTHON", "the anthropic SDK") else {
        return;
    };
    let anth = FakeProvider::start(standard_anthropic).await;
    let oai = FakeProvider::start(standard).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&anth, &oai, &gem).await;
    run_sdk_script(
        &python,
        "anthropic_messages.py",
        &[gw.url(""), KEY.to_owned()],
    )
    .await;
}

/// `claude -p "say hi" --model <model>` against the gateway, offline, in a throwaway home.
async fn claude_says(claude: &str, gw: &Gateway, model: &str) -> String {
    let home = tempfile::tempdir().unwrap();
    let base_url = gw.url("");
    run_cli(
        claude,
        &["-p", "say hi", "--model", model],
        home.path(),
        home.path(),
        &[
            ("ANTHROPIC_BASE_URL", base_url.as_str()),
            ("ANTHROPIC_API_KEY", KEY),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_an_anthropic_endpoint() {
    let Some(claude) = installed("MODELGATE_CLAUDE", "Claude Code") else {
        return;
    };
    let anth = FakeProvider::start(standard_anthropic).await;
    let oai = FakeProvider::start(standard).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&anth, &oai, &gem).await;
    let said = claude_says(&claude, &gw, "anthropic/claude").await;
    assert!(
        said.contains("Tides come mostly from the Moon's pull on the oceans."),
        "{said}"
    );
    // Claude Code's request went upstream as it sent it (its betas too), model rewritten.
    let up = anth.last();
    assert_eq!(up.body["model"], "claude-text");
    assert!(up.headers.contains_key("anthropic-beta"));
    assert!(up.body["system"]
        .to_string()
        .contains("x-anthropic-billing-header"));
    assert_eq!(oai.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_through_an_openai_endpoint() {
    let Some(claude) = installed("MODELGATE_CLAUDE", "Claude Code") else {
        return;
    };
    let anth = FakeProvider::start(standard_anthropic).await;
    let oai = FakeProvider::start(standard).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&anth, &oai, &gem).await;
    let said = claude_says(&claude, &gw, "openai/gpt").await;
    assert!(
        said.contains("Tides come mostly from the Moon's pull on the oceans."),
        "{said}"
    );
    // Translated: Claude Code's tools as functions, its billing header dropped.
    let up = oai.last().body;
    assert_eq!(up["model"], "text");
    assert!(
        up["tools"].as_array().is_some_and(|t| !t.is_empty()),
        "{up}"
    );
    assert!(!up.to_string().contains("x-anthropic-billing-header"));
    assert_eq!(anth.count(), 0);
}
