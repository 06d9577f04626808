//! The dev mode's web console in a real headless Chromium, driven over WebDriver:
//! the page loads, shows the sample's rows, and updates live when an event is sent
//! from its own form. A screenshot is kept in `target/e2e-logs/console_browser/`.

use std::process::{Command, Stdio};
use std::time::Duration;

use facet_e2e::process::facet_bff_binary;
use facet_e2e::{free_port, log_dir, repo_root, wait_for, KillOnDrop};
use fantoccini::{ClientBuilder, Locator};

async fn text(client: &fantoccini::Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn http_ok(url: &str) -> bool {
    std::net::TcpStream::connect(url.trim_start_matches("http://").split('/').next().unwrap())
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_rows_and_live_updates_in_chromium() {
    let logs = log_dir("console_browser");
    let data = tempfile::tempdir().unwrap();
    let http = free_port();
    let log = std::fs::File::create(logs.join("facet-bff-dev.log")).unwrap();
    let _dev = KillOnDrop(
        Command::new(facet_bff_binary())
            .current_dir(repo_root())
            .args(["dev", "config/samples/storefront.yaml"])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting facet-bff dev"),
    );
    let console = format!("http://127.0.0.1:{http}/");
    wait_for("the dev console", Duration::from_secs(60), || {
        http_ok(&console)
    });

    let driver_port = free_port();
    let driver_log = std::fs::File::create(logs.join("chromedriver.log")).unwrap();
    let _driver = KillOnDrop(
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

    client.goto(&console).await.unwrap();
    let rows = Locator::Css("#table-order tbody tr");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = client.find_all(rows).await.unwrap().len();
        if found == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected the sample's 3 orders, saw {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let table = text(&client, "#table-order").await;
    assert!(
        table.contains("o-1001") && table.contains("shipped"),
        "{table}"
    );

    // Send an event from the console's own form and watch the rule fire.
    let event = serde_json::json!({"type": "OrderPlaced", "orderId": "o-2000", "customerId": "dora",
        "items": [], "total": 99.5, "at": "2026-11-23T10:00:00Z"});
    client
        .find(Locator::Css("#send-source option[value='orders']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let key = client.find(Locator::Css("#send-key")).await.unwrap();
    key.clear().await.unwrap();
    key.send_keys("o-2000").await.unwrap();
    client
        .execute(
            "document.getElementById('send-value').value = arguments[0]; return true;",
            vec![serde_json::Value::String(event.to_string())],
        )
        .await
        .unwrap();
    client
        .find(Locator::Css("#send-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let table = text(&client, "#table-order").await;
        if table.contains("o-2000") {
            assert!(table.contains("99.5"), "{table}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sent order never appeared:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = text(&client, "#table-customerSummary").await;
    let dora = summary
        .lines()
        .find(|l| l.starts_with("dora"))
        .unwrap_or_default();
    assert!(
        dora.contains("o-2000") && dora.contains("99.5"),
        "the summary projection updated too: {summary}"
    );
    assert!(
        !summary.lines().any(|l| l.starts_with("o-2000")),
        "no order row in the summary table: {summary}"
    );
    let log = text(&client, "#log").await;
    assert!(
        log.contains("o-2000"),
        "the change log shows the change: {log}"
    );

    // Send a command from the console as dora: her order may be cancelled; no
    // service acts on it in dev mode, so it is accepted and not yet visible. As
    // someone else it is refused.
    for (user, expected) in [("dora", "accepted: "), ("mallory", "403 forbidden")] {
        client
            .execute(
                "document.getElementById('viewas').value = arguments[0];
                 document.getElementById('command-input').value = arguments[1];
                 document.querySelector('#command-form button').click(); return true;",
                vec![
                    user.into(),
                    serde_json::json!({"orderId": "o-2000"}).to_string().into(),
                ],
            )
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let result = text(&client, "#command-result").await;
            if result.starts_with(expected) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{user}: {result}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The header links to the generated API documents, and they are served.
    for (link, path) in [
        ("#openapi-link", "/openapi.json"),
        ("#graphiql-link", "/graphql"),
    ] {
        let element = client.find(Locator::Css(link)).await.unwrap();
        assert!(element.is_displayed().await.unwrap(), "{link} is shown");
        assert_eq!(element.attr("href").await.unwrap().as_deref(), Some(path));
        let status: serde_json::Value = client
            .execute_async(
                "const done = arguments[arguments.length - 1]; fetch(arguments[0]).then(r => done(r.status));",
                vec![serde_json::Value::String(path.into())],
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{path} is served");
    }

    let png = client.screenshot().await.unwrap();
    std::fs::write(logs.join("console.png"), png).unwrap();
    client.close().await.unwrap();
}
