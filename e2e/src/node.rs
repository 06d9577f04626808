//! Stock JavaScript clients (e2e/js), run with the machine's Node.js: what a
//! frontend team would use against Facet, rather than our own reimplementation.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use crate::repo_root;

fn clients_dir() -> PathBuf {
    repo_root().join("e2e/js")
}

/// `node e2e/js/<script>`, with the packages from e2e/js/package-lock.json
/// installed first (`npm ci`, once per test process).
pub fn script(script: &str) -> Command {
    install();
    let mut command = Command::new("node");
    command.arg(clients_dir().join(script));
    command
}

/// The TypeScript compiler of e2e/js/package-lock.json, as a frontend project
/// would run it on the types `facet-bff schema --typescript` writes.
pub fn tsc() -> Command {
    install();
    let mut command = Command::new("node");
    command.arg(clients_dir().join("node_modules/typescript/bin/tsc"));
    command
}

fn install() {
    static INSTALL: Once = Once::new();
    let dir = clients_dir();
    INSTALL.call_once(|| {
        // Installed, and since the lock file last changed: nothing to do.
        let modified = |path: &str| std::fs::metadata(dir.join(path)).and_then(|m| m.modified());
        if let (Ok(installed), Ok(locked)) = (
            modified("node_modules/.package-lock.json"),
            modified("package-lock.json"),
        ) {
            if installed >= locked {
                return;
            }
        }
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("running npm (Node.js must be installed)");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    });
}

/// The types `facet-bff schema --typescript` writes for the storefront sample,
/// as `facet.ts` in `dir`.
pub fn write_storefront_types(dir: &std::path::Path) {
    let output = Command::new(crate::process::facet_bff_binary())
        .arg("schema")
        .arg(repo_root().join("config/samples/storefront.yaml"))
        .arg("--typescript")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(dir.join("facet.ts"), &output.stdout).unwrap();
}

/// Runs `tsc --noEmit --strict` on `program` as `app.ts` in `dir`: whether it
/// type-checks, and what the compiler said.
pub fn type_check(dir: &std::path::Path, program: &str) -> (bool, String) {
    std::fs::write(dir.join("app.ts"), program).unwrap();
    let output = tsc()
        .args(["--noEmit", "--strict", "--module", "nodenext"])
        .args(["--target", "es2022", "--lib", "es2022,dom"])
        .arg(dir.join("app.ts"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string();
    (output.status.success(), said)
}
