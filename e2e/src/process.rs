//! Facet runtime processes, started from the built `facet-bff` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::repo_root;

/// The `facet-bff` binary that `cargo test --workspace` built next to the tests,
/// or `FACET_BFF_BIN` (a benchmark comparing two builds).
pub fn facet_bff_binary() -> PathBuf {
    match std::env::var_os("FACET_BFF_BIN") {
        Some(binary) => PathBuf::from(binary),
        None => workspace_binary("facet-bff"),
    }
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
    log: PathBuf,
    log_start: u64,
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
        let extra: Vec<String> = secret_dir
            .map(|dir| format!("--kafka-secret-dir={}", dir.display()))
            .into_iter()
            .collect();
        Runtime::start_with_args(spec, data_dir, bootstrap, pod, log, &extra)
    }

    /// As [`Runtime::start`], with more `facet-bff run` arguments.
    pub fn start_with_args(
        spec: &Path,
        data_dir: &Path,
        bootstrap: &str,
        pod: &str,
        log: &Path,
        extra: &[String],
    ) -> Runtime {
        Runtime::start_with_env(spec, data_dir, bootstrap, pod, log, extra, &[])
    }

    /// As [`Runtime::start_with_args`], with more environment variables.
    pub fn start_with_env(
        spec: &Path,
        data_dir: &Path,
        bootstrap: &str,
        pod: &str,
        log: &Path,
        extra: &[String],
        env: &[(&str, &str)],
    ) -> Runtime {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        // Where this run's lines begin: the log is shared by the restarts of one pod.
        let log_start = log_file.metadata().unwrap().len();
        // Port 0: the runtime binds what is free and logs it, so no other process can
        // take a port between our choosing it and the runtime binding it.
        let child = Command::new(facet_bff_binary())
            .current_dir(repo_root())
            .args(["run", "--spec"])
            .arg(spec)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--kafka", bootstrap, "--pod-name", pod])
            .args(extra)
            .args(["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("starting facet-bff");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut runtime = Runtime {
            child: Some(child),
            http: 0,
            metrics: 0,
            agent,
            log: log.to_path_buf(),
            log_start,
        };
        (runtime.http, runtime.metrics) = runtime.wait_serving();
        runtime
    }

    /// The ports from this run's `serving` line; (0, 0) when it exits before
    /// serving (a refused spec), for the test to look at its exit.
    fn wait_serving(&mut self) -> (u16, u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let text = self.this_run_log();
            if let Some(line) = text.lines().find(|l| l.contains(" serving ")) {
                let port = |field: &str| {
                    let value = line.split(field).nth(1)?.split_whitespace().next()?;
                    value.rsplit(':').next()?.parse().ok()
                };
                match (port("http_addr="), port("metrics_addr=")) {
                    (Some(http), Some(metrics)) => return (http, metrics),
                    _ => panic!("cannot read the ports from {line:?}"),
                }
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return (0, 0);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "facet-bff did not start serving in 60 s:\n{}",
            self.log_tail()
        );
    }

    /// What this run wrote to its log so far.
    pub fn this_run_log(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(self.log_start as usize..).unwrap_or_default())
            .into_owned()
    }

    /// The last lines of this run's log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = self.this_run_log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// GET a JSON document; `None` when the runtime does not answer (yet).
    pub fn get(&self, path: &str) -> Option<(u16, serde_json::Value)> {
        self.get_url(&self.url(path))
    }

    /// The readiness report in full, from the internal (metrics) port: the public
    /// `/readyz` says only whether.
    pub fn readiness(&self) -> Option<(u16, serde_json::Value)> {
        self.get_url(&format!("http://127.0.0.1:{}/readyz", self.metrics))
    }

    fn get_url(&self, url: &str) -> Option<(u16, serde_json::Value)> {
        let mut response = self.agent.get(url).call().ok()?;
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
                panic!("facet-bff exited early with {status}:\n{}", self.log_tail());
            }
            if matches!(self.get("/readyz"), Some((200, _))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "facet-bff was not ready after {timeout:?}: {:?}",
            self.readiness()
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

    /// The process id, to kill it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running runtime").id()
    }

    /// SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process's resident memory (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// The most resident memory the process has had (VmHWM), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        peak_rss_bytes(self.pid())
    }

    /// CPU time the process has used, user and system, across all its threads.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// SIGTERM and wait: a clean stop.
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

/// The resident memory of process `pid` now (VmRSS), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// The most resident memory process `pid` has had (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// CPU time process `pid` has used, user and system, across all its threads.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at state (3).
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}
