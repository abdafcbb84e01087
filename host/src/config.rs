//! `weft.toml`: the workflows a server deploys.
//!
//! ```toml
//! [server]
//! addr = "127.0.0.1:8080"   # optional
//! max_running = 256         # instances working at once (optional)
//!
//! [store]
//! url = "postgres://weft@db:5432/weft"   # optional: a shared store
//! lease = "10s"                          # a host's lease on its instances
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
    pub store: StoreConfig,
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

/// Where the journal is kept: the data dir's embedded journal unless `url`
/// names a shared store (`postgres://…`; `--store` and `WEFT_STORE` win).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub url: Option<String>,
    /// How long a host's lease lasts unrenewed, e.g. `"10s"` (`--lease`
    /// wins).
    pub lease: Option<String>,
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
    /// Hosts `fetch` may reach (`*.example.com`, `*` for any).
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Secrets and config values for step bodies: a string, or
    /// `{ env = "VAR" }` for the host's environment variable VAR.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSource>,
    /// Memory limit per instance, in MiB (default: [`crate::defaults`]).
    pub memory_mb: Option<usize>,
    /// Steps per instance (default 10,000).
    pub max_steps: Option<u64>,
    /// CPU time of the workflow body outside steps per run, in ms (default 30,000).
    pub cpu_ms: Option<u64>,
    /// CPU time of one step attempt's body, in ms (default 600,000).
    pub step_cpu_ms: Option<u64>,
    /// `"instance"` (default): a component instance per workflow instance.
    /// `"shared"`: runs share a few warm instances (Python; see
    /// docs/python.md).
    #[serde(default)]
    pub isolation: crate::durable::policy::Isolation,
    /// Cron schedules: one instance per tick (`weft serve`).
    #[serde(default)]
    pub schedules: Vec<crate::scheduler::cron::ScheduleSpec>,
}

/// Where a secret's value comes from.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SecretSource {
    Value(String),
    Env { env: String },
}

impl WorkflowConfig {
    /// The policy of the workflow.
    pub fn policy(&self, name: &str) -> Result<crate::durable::policy::Policy> {
        let mut secrets = BTreeMap::new();
        for (k, v) in &self.secrets {
            let value = match v {
                SecretSource::Value(s) => s.clone(),
                SecretSource::Env { env } => crate::durable::policy::secret_from_env(env)
                    .map_err(|e| anyhow::anyhow!("secret `{k}` of workflow `{name}`: {e}"))?,
            };
            secrets.insert(k.clone(), value);
        }
        Ok(crate::durable::policy::Policy {
            allow_hosts: self.allow_hosts.clone(),
            secrets,
            limits: crate::durable::policy::Limits::with(
                self.memory_mb,
                self.max_steps,
                self.cpu_ms,
                self.step_cpu_ms,
            ),
            isolation: self.isolation,
        })
    }
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

    /// The path of a workflow's component.
    pub fn component_path(&self, name: &str) -> PathBuf {
        self.base.join(&self.workflows[name].component)
    }
}
