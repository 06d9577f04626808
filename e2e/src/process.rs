//! Facet runtime processes, started from the built `facet-bff` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::{free_port, repo_root};

/// The `facet-bff` binary that `cargo test --workspace` built next to the tests.
pub fn facet_bff_binary() -> PathBuf {
    workspace_binary("facet-bff")
}

/// A binary of the workspace, built into the same target directory as the tests.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("locating the test binary");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let binary = dir.join(name);
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --workspace --bins` (or `make test`) first",
        binary.display()
    );
    binary
}

pub struct Runtime {
    child: Option<Child>,
    pub http: u16,
    pub metrics: u16,
    agent: ureq::Agent,
}

impl Runtime {
    /// `facet-bff run` for `spec` with its store in `data_dir`, logging to `log`.
    pub fn start(spec: &Path, data_dir: &Path, bootstrap: &str, pod: &str, log: &Path) -> Runtime {
        Runtime::start_with_secret(spec, data_dir, bootstrap, None, pod, log)
    }

    /// As [`Runtime::start`], with extra librdkafka properties from `secret_dir`
    /// (one file per property, as a mounted Secret gives them).
    pub fn start_with_secret(
        spec: &Path,
        data_dir: &Path,
        bootstrap: &str,
        secret_dir: Option<&Path>,
        pod: &str,
        log: &Path,
    ) -> Runtime {
        let http = free_port();
        let metrics = free_port();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(facet_bff_binary())
            .current_dir(repo_root())
            .args(["run", "--spec"])
            .arg(spec)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--kafka", bootstrap, "--pod-name", pod])
            .args(secret_dir.map(|dir| format!("--kafka-secret-dir={}", dir.display())))
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--metrics", &format!("127.0.0.1:{metrics}")])
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("starting facet-bff");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Runtime {
            child: Some(child),
            http,
            metrics,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// GET a JSON document; `None` when the runtime does not answer (yet).
    pub fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        let mut response = self.agent.get(&self.url(path)).call().ok()?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .unwrap_or_default();
        Some((status, body))
    }

    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("facet-bff exited early with {status}");
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "facet-bff was not ready after {timeout:?}: {:?}",
            self.get("/readyz")
        );
    }

    /// A metric's value from the Prometheus endpoint (summing every label set).
    pub fn metric(&self, name: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics);
        let text = self
            .agent
            .get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.starts_with(name)
                    && (l[name.len()..].starts_with(' ') || l[name.len()..].starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Every row of a projection, in key order, following the pagination cursor.
    pub fn all_rows(&self, projection: &str) -> Vec<serde_json::Value> {
        let mut rows = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/{projection}?limit=1000&after={a}"),
                None => format!("/v1/{projection}?limit=1000"),
            };
            let (status, body) = self.get(&path).expect("the runtime answers");
            assert_eq!(status, 200, "{body}");
            for item in body["items"].as_array().unwrap() {
                rows.push(serde_json::json!({"key": item["key"], "row": item["row"]}));
            }
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return rows,
            }
        }
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    /// The process's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("a running runtime").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill9();
    }
}
