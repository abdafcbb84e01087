//! The `weft` command line: one module per verb.

mod build;
mod check;
mod client;
mod inspect;
mod open;
mod run;
pub mod serve;
pub mod term;
mod wizer;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::defaults;

/// weft: run durable workflows compiled to WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "weft", version, about, max_term_width = 100)]
pub struct Cli {
    /// Where weft keeps its journal and components.
    #[arg(long, global = true, env = "WEFT_DATA_DIR", default_value = ".weft")]
    pub data_dir: PathBuf,

    /// Keep the journal in this shared store instead of the data dir's
    /// embedded one: `postgres://user@host:5432/db`. Hosts with the same
    /// store share its instances.
    #[arg(long, global = true, env = "WEFT_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// How logs on stderr are written: `text` for people, `json` for log
    /// pipelines (one object per line, naming workflow, instance, step and
    /// attempt). `RUST_LOG` filters them.
    #[arg(
        long,
        global = true,
        env = "WEFT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::logs::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a new workflow instance to its end and print its output.
    Run(run::RunArgs),
    /// Build a workflow component from Python (componentize-py) or Rust.
    Build(build::BuildArgs),
    /// Check and precompile a component into the cache, without running it.
    Compile(run::CompileArgs),
    /// Continue an instance: resume a paused one on the server holding the
    /// data dir, or run it here after a crash or an interruption.
    Resume(run::ResumeArgs),
    /// Serve the workflows of weft.toml over HTTP, running many instances.
    Serve(serve::ServeArgs),
    /// Create an instance on a server.
    Create(client::CreateArgs),
    /// Pause an instance on a server at its next durable call.
    Pause(client::LifecycleArgs),
    /// Terminate an instance on a server.
    Terminate(client::LifecycleArgs),
    /// Re-run an instance on a server from the start or from a step.
    Restart(client::RestartArgs),
    /// Move instances to the newest deployed version, checked by replay.
    Upgrade(client::UpgradeArgs),
    /// List a server's cron schedules and their next ticks.
    Schedules(client::SchedulesArgs),
    /// Send an event to an instance (buffered until a wait takes it).
    SendEvent(inspect::SendEventArgs),
    /// Show an instance's status, output or error as JSON.
    Status(inspect::IdArgs),
    /// List instances.
    List(inspect::ListArgs),
    /// Print an instance's journal, one JSON object per line.
    History(inspect::IdArgs),
    /// Verify a data dir: the database's checksums, the write-ahead log,
    /// and that every record decodes.
    Check(check::CheckArgs),
}

/// Options shared by the commands that execute workflows.
#[derive(clap::Args, Debug, Clone)]
pub struct ExecOptions {
    /// The shared store (the global `--store`), if any.
    #[arg(skip)]
    pub store: Option<String>,
    /// Drop an instance from memory when everything it waits for is further
    /// away than this, and replay it when it wakes (e.g. `5s`, `500ms`).
    #[arg(long, env = "WEFT_EVICT_AFTER", default_value = defaults::EVICT_AFTER_TEXT, value_parser = parse_duration)]
    pub evict_after: Duration,
    /// On a shared store: how long this host's lease on its instances
    /// lasts unrenewed; other hosts take them that long after it dies
    /// (default: the config's `[store] lease`, else 10s).
    #[arg(long, env = "WEFT_LEASE", value_parser = parse_duration)]
    pub lease: Option<Duration>,
    /// A host that `fetch` in step bodies may reach (repeatable; `*.x.com`
    /// and `*` work). Nothing is reachable by default.
    #[arg(long = "allow-host", value_name = "HOST")]
    pub allow_hosts: Vec<String>,
    /// A secret for step bodies: `NAME` takes the value of the host's
    /// environment variable NAME, `NAME=VAR` that of VAR (repeatable).
    #[arg(long = "secret", value_name = "NAME[=VAR]")]
    pub secrets: Vec<String>,
    /// Memory limit per instance, in MiB.
    #[arg(long, default_value_t = defaults::MEMORY_MB)]
    pub memory_mb: usize,
    /// Steps per instance.
    #[arg(long, default_value_t = defaults::MAX_STEPS)]
    pub max_steps: u64,
    /// CPU time of the workflow body outside steps, per run, in ms.
    #[arg(long, default_value_t = defaults::BODY_CPU_MS)]
    pub cpu_ms: u64,
    /// CPU time of one step attempt's body, in ms (waiting is not CPU).
    #[arg(long, default_value_t = defaults::STEP_CPU_MS)]
    pub step_cpu_ms: u64,
    /// `shared`: run in a shared component instance, as
    /// `isolation = "shared"` in weft.toml does (Python).
    #[arg(long, value_enum, default_value = "instance")]
    pub isolation: crate::durable::policy::Isolation,
}

impl ExecOptions {
    /// The policy these options describe.
    pub fn policy(&self) -> Result<crate::durable::policy::Policy> {
        let mut secrets = std::collections::BTreeMap::new();
        for s in &self.secrets {
            let (name, var) = s.split_once('=').unwrap_or((s, s));
            let value = crate::durable::policy::secret_from_env(var)
                .map_err(|e| anyhow::anyhow!("--secret {s}: {e}"))?;
            secrets.insert(name.to_owned(), value);
        }
        Ok(crate::durable::policy::Policy {
            allow_hosts: self.allow_hosts.clone(),
            secrets,
            limits: crate::durable::policy::Limits::with(
                Some(self.memory_mb),
                Some(self.max_steps),
                Some(self.cpu_ms),
                Some(self.step_cpu_ms),
            ),
            isolation: self.isolation,
        })
    }
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            store: None,
            evict_after: defaults::EVICT_AFTER,
            lease: None,
            allow_hosts: Vec::new(),
            secrets: Vec::new(),
            memory_mb: defaults::MEMORY_MB,
            max_steps: defaults::MAX_STEPS,
            cpu_ms: defaults::BODY_CPU_MS,
            step_cpu_ms: defaults::STEP_CPU_MS,
            isolation: Default::default(),
        }
    }
}

/// A child's stdout that goes to this process's stderr: a build tool's
/// progress is a log, not a command's output.
pub fn stdout_to_stderr() -> std::process::Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::process::Stdio::from(fd),
        Err(_) => std::process::Stdio::null(),
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let ms = match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("bad duration `{s}` (use ms, s, m or h)")),
    };
    Ok(Duration::from_millis(ms))
}

/// Reads a JSON argument: the text itself, or `@path` for a file's content.
pub fn json_arg(arg: &str) -> Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading JSON from {path}: {e}")),
        None => Ok(arg.to_owned()),
    }
}

/// A panic inside redb means the database file is damaged (redb reports
/// most damage as an error, but not all): say so plainly and exit, on
/// whichever thread it happens. Other panics keep the default report.
fn report_damage_on_redb_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_redb = info.location().is_some_and(|l| l.file().contains("/redb-"));
        if !in_redb {
            return default(info);
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        term::error(&format!(
            "the journal is damaged (redb: {what}). weft stopped rather than read it further. \
             Keep a copy of the data dir, run `weft check` for a report, and restore the data dir from a backup"
        ));
        std::process::exit(1);
    }));
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    if wizer::requested() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return wizer::main(&args);
    }
    report_damage_on_redb_panics();
    let cli = Cli::parse();
    crate::logs::init(cli.log_format);
    // One worker per core (tokio's default): instances run on all of them.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            term::error(&format!("cannot start the async runtime: {e}"));
            return 1;
        }
    };
    let store = cli.store.clone().filter(|s| !s.is_empty());
    let store = store.as_deref();
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(mut a) => {
                a.exec.store = store.map(str::to_owned);
                run::run(&cli.data_dir, a).await
            }
            Command::Build(a) => build::build(a),
            Command::Compile(a) => run::compile(&cli.data_dir, a).await,
            Command::Resume(a) => match client::endpoint(&cli.data_dir, &a.server).await {
                Ok(Some(_)) => client::resume(&cli.data_dir, &a.id, &a.server).await,
                Ok(None) => {
                    let mut a = a;
                    a.exec.store = store.map(str::to_owned);
                    run::resume(&cli.data_dir, a).await
                }
                Err(e) => Err(e),
            },
            Command::Serve(mut a) => {
                a.exec.store = store.map(str::to_owned);
                serve::serve(&cli.data_dir, a).await
            }
            Command::Create(a) => client::create(&cli.data_dir, a).await,
            Command::Pause(a) => client::pause(&cli.data_dir, a).await,
            Command::Terminate(a) => client::terminate(&cli.data_dir, a).await,
            Command::Restart(a) => client::restart(&cli.data_dir, a).await,
            Command::Upgrade(a) => client::upgrade(&cli.data_dir, a).await,
            Command::Schedules(a) => client::schedules(&cli.data_dir, a).await,
            Command::SendEvent(a) => inspect::send_event(&cli.data_dir, store, a).await,
            Command::Status(a) => inspect::status(&cli.data_dir, store, a).await,
            Command::List(a) => inspect::list(&cli.data_dir, store, a).await,
            Command::History(a) => inspect::history(&cli.data_dir, store, a).await,
            Command::Check(a) => check::check(&cli.data_dir, a),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    crate::otel::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            term::error(&format!("{e:#}"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line's text defaults say the same as `defaults`.
    #[test]
    fn text_defaults_match() {
        assert_eq!(
            parse_duration(defaults::EVICT_AFTER_TEXT),
            Ok(defaults::EVICT_AFTER)
        );
        assert!(parse_duration(defaults::HEAD_TIMEOUT_TEXT).is_ok());
    }
}
