//! `weft.toml`: the workflows a server deploys.
//!
//! ```toml
//! [server]
//! addr = "127.0.0.1:8080"   # optional
//! max_running = 256         # instances in memory at once (optional)
//!
//! [workflows.hello]
//! component = "target/guests/wasm32-wasip2/release/hello.wasm"
//!
//! [workflows.pipeline]
//! build = "weft build pipeline/app.py -o pipeline.wasm"   # run before loading
//! component = "pipeline.wasm"
//! concurrency = 10          # at most 10 instances running at once
//! ```
//!
//! Paths and build commands are relative to the file's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub workflows: BTreeMap<String, WorkflowConfig>,
    /// The directory relative paths are resolved against.
    #[serde(skip)]
    pub base: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub addr: Option<String>,
    pub max_running: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// The component file.
    pub component: PathBuf,
    /// A shell command that builds the component, run before loading it.
    pub build: Option<String>,
    /// At most this many instances of the workflow run at once.
    pub concurrency: Option<usize>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut c: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        c.base = path
            .parent()
            .map(Path::to_owned)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        for (name, w) in &c.workflows {
            if !crate::runner::valid_id(name) {
                bail!(
                    "workflow name `{name}` in {}: use letters, digits, `_` and `-`",
                    path.display()
                );
            }
            if w.concurrency == Some(0) {
                bail!("workflow `{name}`: concurrency must be at least 1");
            }
        }
        Ok(c)
    }

    /// Runs a workflow's build command, if any, and returns its component path.
    pub fn prepare(&self, name: &str) -> Result<PathBuf> {
        let w = &self.workflows[name];
        if let Some(cmd) = &w.build {
            crate::cli::term::status("Building", &format!("{name}: {cmd}"));
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&self.base)
                .status()
                .with_context(|| format!("running the build command of `{name}`"))?;
            if !status.success() {
                bail!("the build command of workflow `{name}` failed: {cmd}");
            }
        }
        Ok(self.base.join(&w.component))
    }
}
