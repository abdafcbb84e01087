//! Helpers for end-to-end tests that drive the real `weft` binary.

pub mod build;
pub mod js;
pub mod pg;
pub mod python;
pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use weft_test_artifacts::{CHANGED, HELLO, SCENARIOS};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Compiled components shared by all tests, so each guest compiles once.
pub fn test_cache_dir() -> PathBuf {
    repo_root().join("target").join("weft-test-cache")
}

/// Upper bound for anything a test waits for; only reached when broken.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A data dir and the commands that use it.
pub struct Weft {
    pub dir: tempfile::TempDir,
    /// The shared store its commands use, if not the embedded journal.
    pub store: Option<String>,
    /// Their lease on the shared store (`WEFT_LEASE`).
    pub lease: &'static str,
}

impl Weft {
    pub fn new() -> Weft {
        Weft {
            dir: tempfile::Builder::new()
                .prefix("weft-e2e")
                .tempdir()
                .unwrap(),
            store: None,
            lease: "3s",
        }
    }

    /// A data dir whose commands keep the journal in the database `db`,
    /// with a lease of 3 s, so that a test waits little for one to run out.
    pub fn on(db: &pg::TestDb) -> Weft {
        Weft {
            store: Some(db.url.clone()),
            ..Weft::new()
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
        c.args(args)
            .env("WEFT_DATA_DIR", self.data_dir())
            .env("WEFT_CACHE_DIR", test_cache_dir())
            .env_remove("WEFT_EVICT_AFTER")
            .env_remove("WEFT_STORE")
            .env_remove("WEFT_LEASE")
            .stdin(Stdio::null());
        if let Some(url) = &self.store {
            c.env("WEFT_STORE", url).env("WEFT_LEASE", self.lease);
        }
        c
    }

    /// Runs a command to its end.
    pub fn exec(&self, args: &[&str]) -> Done {
        let out = self.cmd(args).output().unwrap();
        Done::from(out)
    }

    /// Starts a command with stdout and stderr going to files.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Running {
        self.spawn_env(name, args, &[])
    }

    /// [`Weft::spawn`] with environment variables set for the command.
    pub fn spawn_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let stdout = self.dir.path().join(format!("{name}.out"));
        let stderr = self.dir.path().join(format!("{name}.err"));
        let child = self
            .cmd(args)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Running {
            child,
            stdout,
            stderr,
        }
    }

    /// `weft run SCENARIOS --id ID --input INPUT` in the background, its
    /// output in files named `name`.
    pub fn spawn_scenario(&self, name: &str, id: &str, input: &str) -> Running {
        self.spawn(name, &["run", SCENARIOS, "--id", id, "--input", input])
    }

    /// `weft run SCENARIOS` with a scenario input, to its end.
    pub fn scenario(&self, id: &str, input: &str, extra: &[&str]) -> Done {
        let mut args = vec!["run", SCENARIOS, "--id", id, "--input", input];
        args.extend_from_slice(extra);
        self.exec(&args)
    }

    pub fn history(&self, id: &str) -> Vec<Value> {
        let d = self.exec(&["history", id]);
        assert!(d.ok(), "history failed: {}", d.stderr);
        d.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn status(&self, id: &str) -> Value {
        let d = self.exec(&["status", id]);
        assert!(d.ok(), "status failed: {}", d.stderr);
        serde_json::from_str(&d.stdout).unwrap()
    }
}

/// A finished command.
pub struct Done {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Done {
    fn from(o: Output) -> Done {
        Done {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Done {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// The JSON on stdout of a successful run.
    pub fn json(&self) -> Value {
        assert!(
            self.ok(),
            "command failed ({:?}):\n{}",
            self.code,
            self.stderr
        );
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// A command running in the background.
pub struct Running {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

/// A process a test leaves behind (a failed assertion, a server it did not
/// stop) is killed, so that it does not outlive the test.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stderr satisfies `pred`; panics after [`PATIENCE`] or if
    /// the process exits first.
    pub fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let start = Instant::now();
        loop {
            let text = self.stderr_text();
            if pred(&text) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let text = self.stderr_text();
                if pred(&text) {
                    return;
                }
                panic!("process exited ({status}) before {what}:\n{text}");
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `kill -9`.
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr_text()
    }

    /// Waits for the process to end on its own.
    pub fn finish(mut self) -> Done {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Done {
                    code: status.code(),
                    stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    stderr: self.stderr_text(),
                };
            }
            if start.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("process did not finish:\n{}", self.stderr_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Journal entries of one kind.
pub fn entries<'a>(history: &'a [Value], kind: &str) -> Vec<&'a Value> {
    history.iter().filter(|e| e["kind"] == kind).collect()
}

/// The step entries of `history` named `name`.
pub fn steps_named<'a>(history: &'a [Value], name: &str) -> Vec<&'a Value> {
    entries(history, "step")
        .into_iter()
        .filter(|s| s["name"] == name)
        .collect()
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}
