//! The dev mode's web console in a real headless Chromium, driven over WebDriver:
//! the page loads, shows the sample's rows, and updates live when an event is sent
//! from its own form. A screenshot is kept in `target/e2e-logs/console_browser/`.
//! And a page of another origin sends a command with the headers the API documents.

use std::process::Command;
use std::time::Duration;

use facet_e2e::process::facet_bff_binary;
use facet_e2e::{free_port, log_dir, repo_root, wait_for, KillOnDrop};
use fantoccini::Locator;

#[path = "support/browser.rs"]
mod browser;
use browser::{chromium, http_ok};

async fn text(client: &fantoccini::Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `facet-bff dev` on `spec`, serving HTTP on `http`.
fn dev_mode(
    spec: &std::path::Path,
    http: u16,
    logs: &std::path::Path,
    data: &std::path::Path,
) -> KillOnDrop {
    let log = std::fs::File::create(logs.join("facet-bff-dev.log")).unwrap();
    let dev = KillOnDrop(
        Command::new(facet_bff_binary())
            .current_dir(repo_root())
            .arg("dev")
            .arg(spec)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(data)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting facet-bff dev"),
    );
    wait_for("the dev console", Duration::from_secs(60), || {
        http_ok(&format!("http://127.0.0.1:{http}/"))
    });
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_rows_and_live_updates_in_chromium() {
    let logs = log_dir("console_browser");
    let data = tempfile::tempdir().unwrap();
    let http = free_port();
    let spec = repo_root().join("config/samples/storefront.yaml");
    let _dev = dev_mode(&spec, http, &logs, data.path());
    let console = format!("http://127.0.0.1:{http}/");
    let browser = chromium(&logs).await;
    let client = &browser.client;

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
    let table = text(client, "#table-order").await;
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
        let table = text(client, "#table-order").await;
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
    let summary = text(client, "#table-customerSummary").await;
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
    let log = text(client, "#log").await;
    assert!(
        log.contains("o-2000"),
        "the change log shows the change: {log}"
    );

    // Send a command from the console as dora: her order may be cancelled; no
    // service acts on it in dev mode, so it is accepted and not yet visible. As
    // someone else it is refused.
    for (user, expected) in [("dora", "accepted: "), ("mallory", "forbidden: ")] {
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
            let result = text(client, "#command-result").await;
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
    browser.client.close().await.unwrap();
}

/// Regression (issue 24): the preflight left out `Idempotency-Key`, `Prefer` and
/// `traceparent`, so a browser page could not send a command the way the docs say.
/// A page served from another origin (allowed by `api.cors`) sends one twice with
/// one key, waiting, and reads both answers and the exposed request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_sends_a_command_with_the_documented_headers() {
    let logs = log_dir("console_browser_cors");
    let data = tempfile::tempdir().unwrap();
    let (http, page_port) = (free_port(), free_port());
    let page_origin = format!("http://127.0.0.1:{page_port}");
    let sample =
        std::fs::read_to_string(repo_root().join("config/samples/storefront.yaml")).unwrap();
    let mut manifest: serde_yaml::Value = serde_yaml::from_str(&sample).unwrap();
    manifest["spec"]["api"]["cors"] =
        serde_yaml::from_str(&format!("{{allowedOrigins: [\"{page_origin}\"]}}")).unwrap();
    let spec = data.path().join("storefront-cors.yaml");
    std::fs::write(&spec, serde_yaml::to_string(&manifest).unwrap()).unwrap();
    std::fs::copy(
        repo_root().join("config/samples/storefront.events.jsonl"),
        data.path().join("storefront-cors.events.jsonl"),
    )
    .unwrap();
    let _dev = dev_mode(&spec, http, &logs, &data.path().join("store"));

    // The page: two sends with one key, then what the browser let the script read.
    let page = format!(
        r#"<!doctype html><title>shop</title><pre id="out">waiting</pre><script>
const send = () => fetch("http://127.0.0.1:{http}/v1/commands/cancelOrder?as=alice", {{
  method: "POST",
  headers: {{"Content-Type": "application/json", "Idempotency-Key": "k-browser-1",
            "Prefer": "wait=1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
  body: JSON.stringify({{orderId: "o-1003"}})
}});
(async () => {{
  const first = await send(); const a = await first.json();
  const second = await send(); const b = await second.json();
  document.getElementById("out").textContent = JSON.stringify(
    {{first: first.status, second: second.status, a, b, requestId: first.headers.get("x-request-id")}});
}})().catch(e => document.getElementById("out").textContent = "failed: " + e);
</script>"#
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", page_port)).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut request);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
        }
    });

    let browser = chromium(&logs).await;
    let client = &browser.client;
    client.goto(&format!("{page_origin}/")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = text(client, "#out").await;
        if out != "waiting" {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("the browser refused: {out}"));
    // Nothing acts on commands in dev mode: accepted, and the retry is the same command.
    assert_eq!(
        (out["first"].as_u64(), out["second"].as_u64()),
        (Some(202), Some(202)),
        "{out}"
    );
    assert_eq!(out["a"]["status"], "accepted", "{out}");
    assert!(out["a"]["commandId"].is_string(), "{out}");
    assert_eq!(
        out["a"]["commandId"], out["b"]["commandId"],
        "one key, one command: {out}"
    );
    assert!(
        out["requestId"].is_string(),
        "X-Request-Id is exposed: {out}"
    );
    browser.client.close().await.unwrap();
}

/// Regression (issue 24): dev mode without `--data-dir` left its store in the
/// temporary directory. It is removed when dev mode stops.
#[test]
fn dev_mode_removes_its_scratch_store_when_it_stops() {
    let logs = log_dir("console_browser_scratch");
    let tmp = tempfile::tempdir().unwrap();
    let http = free_port();
    let log = std::fs::File::create(logs.join("facet-bff-dev.log")).unwrap();
    let mut dev = Command::new(facet_bff_binary())
        .current_dir(repo_root())
        .args(["dev", "config/samples/storefront.yaml"])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .env("TMPDIR", tmp.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting facet-bff dev");
    wait_for("dev mode to serve", Duration::from_secs(60), || {
        http_ok(&format!("http://127.0.0.1:{http}/"))
    });
    let scratch = tmp.path().join(format!("facet-dev-{}", dev.id()));
    assert!(scratch.is_dir(), "the store is in {}", scratch.display());
    unsafe {
        libc::kill(dev.id() as i32, libc::SIGTERM);
    }
    assert!(dev.wait().unwrap().success());
    assert!(!scratch.exists(), "{} is left behind", scratch.display());
}
