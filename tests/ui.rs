//! The page at `/ui` in a real browser: Chromium from Debian's packages, driven by
//! playwright-core (`tests/sdk/ui_browser.mjs` says what it checks). `scripts/test.sh`
//! installs both and sets `MODELGATE_CHROMIUM` and `MODELGATE_PLAYWRIGHT`; without them the
//! test fails when `CI` is set and is skipped otherwise. With `MODELGATE_UI_SCREENSHOT` set,
//! the overview's screenshot is written there (the README's).

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;

const CLIENT: &str = "sk-client-secret-do-not-forward";
const ADMIN: &str = "sk-mg-admin-9876543210fedcba";

async fn chat_as(gw: &Gateway, key: &str, model: &str) {
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(chat(model, false, false))))
        .unwrap();
    send(&client(), req).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_chromium() {
    let (Some(chromium), Some(playwright)) = (
        installed("MODELGATE_CHROMIUM", "Chromium"),
        installed("MODELGATE_PLAYWRIGHT", "playwright-core"),
    ) else {
        return;
    };
    let fake = FakeProvider::start(standard).await;
    let toml = standard_config(
        &fake,
        &format!(
            "admin_key_env = \"TEST_ADMIN_KEY\"\n\n[[keys]]\nname = \"app\"\nkey = \"{CLIENT}\"\n"
        ),
    );
    let gw = Gateway::start_with_env(&toml, &[("TEST_ADMIN_KEY", ADMIN)]).await;
    // Some traffic: the client key's two, and others by a key the admin makes.
    chat_as(&gw, CLIENT, "vendor/fake-model").await;
    chat_as(&gw, CLIENT, "fake/fail-500").await;
    let req = Request::post(gw.url("/v1/keys"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Full::new(Bytes::from(r#"{"name":"batch"}"#)))
        .unwrap();
    let made = send(&client(), req).await;
    assert_eq!(made.status, StatusCode::CREATED);
    let batch = made.json()["key"].as_str().unwrap().to_owned();
    for model in ["vendor/fake-model", "vendor/fake-model", "fake/fail-500"] {
        chat_as(&gw, &batch, model).await;
    }
    gw.flush().await;
    let screenshot = std::env::var("MODELGATE_UI_SCREENSHOT").unwrap_or_default();
    let script = format!("{}/tests/sdk/ui_browser.mjs", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new("node")
        .arg(&script)
        .args([
            &playwright,
            &chromium,
            &gw.url(""),
            ADMIN,
            CLIENT,
            &screenshot,
        ])
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
}
