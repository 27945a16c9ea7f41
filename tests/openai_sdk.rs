//! The official `openai` Python SDK against the proxy (in front of the fake provider).
//!
//! Needs `MODELGATE_PYTHON`: a Python with the `openai` package (`scripts/test.sh` makes a
//! virtualenv and sets it). Without it the test fails when `CI` is set and is skipped otherwise.

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk() {
    let python = match std::env::var("MODELGATE_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "MODELGATE_PYTHON is not set: run the tests with scripts/test.sh, which installs the openai SDK"
            );
            eprintln!("skipped: MODELGATE_PYTHON not set (scripts/test.sh sets it)");
            return;
        }
    };
    let fake = FakeProvider::start(standard).await;
    let gw = Gateway::in_front_of(&fake, "").await;
    let script = format!("{}/tests/sdk/openai_compat.py", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(gw.url("/v1"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}
