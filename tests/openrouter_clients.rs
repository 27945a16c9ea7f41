//! OpenRouter's own SDKs against the proxy: code written for OpenRouter works unchanged, and
//! every answer passes the SDKs' validation of OpenRouter's shapes.
//!
//! Needs `MODELGATE_PYTHON` (a Python with the `openrouter` package) and
//! `MODELGATE_OPENROUTER_TS` (a folder with `@openrouter/sdk`); `scripts/test.sh` installs
//! them and sets them. Without them these tests fail when `CI` is set and are skipped
//! otherwise.

mod support;

use support::*;

const KEY: &str = "sk-client-secret-do-not-forward";
const ADMIN_KEY: &str = "sk-mg-admin-9876543210fedcba";

/// The gateway in front of an OpenAI-kind, an Anthropic-kind and a Gemini-kind fake, with the
/// admin key on.
async fn gateway(oai: &FakeProvider, anth: &FakeProvider, gem: &FakeProvider) -> Gateway {
    let mut toml = format!(
        r#"
admin_key_env = "TEST_ADMIN_KEY"
credits = 100.0

[[keys]]
name = "app"
key = "{KEY}"
requests_per_minute = 600

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
    for (id, provider, upstream, extra) in [
        (
            "openai/gpt",
            "oai",
            "text",
            "description = \"A fake GPT.\"\ntokenizer = \"GPT\"\ncreated = 1767225600\ninput_modalities = [\"text\", \"image\"]\n",
        ),
        ("openai/tool", "oai", "tool", ""),
        ("openai/cut", "oai", "cut", ""),
        ("anthropic/claude", "anth", "claude-text", "tokenizer = \"Claude\"\n"),
        ("anthropic/thinking", "anth", "claude-thinking", ""),
        ("google/gemini-flash", "gem", "gemini-2.5-flash", ""),
        ("openai/embed", "oai", "text-embedding-3-small", ""),
    ] {
        toml.push_str(&format!(
            "\n[[models]]\nid = \"{id}\"\ncontext_length = 128000\n{extra}[[models.endpoints]]\nprovider = \"{provider}\"\nmodel = \"{upstream}\"\nprompt_price = 3.0\ncompletion_price = 15.0\n"
        ));
    }
    Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN_KEY)]).await
}

/// The standard OpenAI-kind fake, which serves embeddings too.
fn chat_and_embeddings(r: &Received) -> Script {
    if r.path.ends_with("/embeddings") {
        openai_embeddings(r)
    } else {
        standard(r)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouter_python_sdk() {
    let Some(python) = installed("MODELGATE_PYTHON", "the openrouter SDK") else {
        return;
    };
    let oai = FakeProvider::start(chat_and_embeddings).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&oai, &anth, &gem).await;
    run_sdk_script(
        &python,
        "openrouter_sdk.py",
        &[gw.url("/api/v1"), KEY.to_owned(), ADMIN_KEY.to_owned()],
    )
    .await;
    // No OpenRouter-only field reached a provider.
    for fake in [&oai, &anth, &gem] {
        for r in fake.received() {
            for field in [
                "usage",
                "transforms",
                "session_id",
                "debug",
                "reasoning",
                "provider",
                "models",
                "plugins",
            ] {
                assert!(
                    r.body.get(field).is_none(),
                    "`{field}` went upstream: {}",
                    r.body
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openrouter_typescript_sdk() {
    let Some(dir) = installed("MODELGATE_OPENROUTER_TS", "@openrouter/sdk") else {
        return;
    };
    let oai = FakeProvider::start(chat_and_embeddings).await;
    let anth = FakeProvider::start(standard_anthropic).await;
    let gem = FakeProvider::start(standard_gemini).await;
    let gw = gateway(&oai, &anth, &gem).await;
    let script = format!(
        "{}/tests/sdk/openrouter_sdk.mjs",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([gw.url("/api/v1"), KEY.to_owned(), ADMIN_KEY.to_owned()])
        .env("OPENROUTER_SDK_DIR", &dir)
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the OpenRouter TypeScript SDK checks failed:\n{stdout}\n{stderr}"
    );
}
