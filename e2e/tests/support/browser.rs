//! A headless Chromium driven over WebDriver (Debian's chromium and
//! chromium-driver), for the tests that need a real browser.

use std::process::{Command, Stdio};
use std::time::Duration;

use facet_e2e::{free_port, wait_for, KillOnDrop};
use fantoccini::ClientBuilder;

/// Whether something listens at `url`'s host and port.
pub fn http_ok(url: &str) -> bool {
    std::net::TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap())
        .is_ok()
}

/// A headless Chromium driven over WebDriver, and what must live as long as it.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: KillOnDrop,
    _profile: tempfile::TempDir,
}

pub async fn chromium(logs: &std::path::Path) -> Browser {
    let driver_port = free_port();
    let driver_log = std::fs::File::create(logs.join("chromedriver.log")).unwrap();
    let driver = KillOnDrop(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(driver_log)
            .spawn()
            .expect("starting chromedriver (Debian package chromium-driver)"),
    );
    wait_for("chromedriver", Duration::from_secs(30), || {
        http_ok(&format!("http://127.0.0.1:{driver_port}"))
    });

    // The workspace enables more than one rustls backend; choose one for the WebDriver client.
    facet_e2e::ensure_crypto_provider();
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1400,900", format!("--user-data-dir={}", profile.path().display())]
        }),
    );
    let client = ClientBuilder::rustls()
        .unwrap()
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("connecting to chromedriver");
    Browser {
        client,
        _driver: driver,
        _profile: profile,
    }
}
