//! A real browser for the tests of Settle's pages: Debian's chromium driven by playwright-core
//! through a driver script of tests/browser/ (one JSON command per line in, one JSON answer per
//! line out; driver.mjs). tests/browser/setup.sh installs chromium and playwright-core when they
//! are missing (it is quick when they are there), so `cargo test` needs nothing installed by hand.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// tests/browser/: the driver scripts, their node_modules and the screenshots.
pub fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Runs tests/browser/setup.sh once per test binary.
fn install_browser() {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut installed = INSTALLED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return;
    }
    let output = std::process::Command::new("bash").arg(browser_dir().join("setup.sh")).output().expect("bash runs setup.sh");
    assert!(
        output.status.success(),
        "tests/browser/setup.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    *installed = true;
}

/// The browser driver: one JSON command per line in, one JSON answer per line out.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    answers: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    /// Starts `script` of tests/browser/ (a driver built on driver.mjs) under node.
    pub async fn start(script: &str) -> Browser {
        install_browser();
        let mut child = Command::new("node")
            .arg(browser_dir().join(script))
            .current_dir(browser_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let answers = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, stdin, answers }
    }

    /// Sends a command and returns its answer; a command the page could not carry out fails the test.
    pub async fn run(&mut self, command: Value) -> Value {
        self.stdin.write_all(format!("{command}\n").as_bytes()).await.expect("the driver reads");
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(90), self.answers.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {command} within 90 s"))
            .expect("the driver's stdout")
            .unwrap_or_else(|| panic!("the driver ended before answering {command}"));
        let answer: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON from the driver: {line}"));
        match answer.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!("the browser could not do {command}: {}", answer["error"]),
        }
    }

    pub async fn close(mut self) {
        self.run(json!({"cmd": "close"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

