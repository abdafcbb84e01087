//! `weft serve`: many instances behind an HTTP API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::{ExecOptions, term};
use crate::api::{Api, router};
use crate::config::Config;
use crate::control;
use crate::defaults;
use crate::scheduler::Scheduler;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The workflows to deploy (default: ./weft.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to listen (default: the config's, else 127.0.0.1:8080). Any
    /// address other than loopback needs a token.
    #[arg(long)]
    pub addr: Option<String>,
    /// A bearer token every API call must carry.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Instances working at once; waiting ones do not count (default: the
    /// config's, else 500).
    #[arg(long)]
    pub max_running: Option<usize>,
    /// Close a connection that takes longer than this to send a request's
    /// head, or that stays idle this long between requests.
    #[arg(long, default_value = defaults::HEAD_TIMEOUT_TEXT, value_parser = super::parse_duration)]
    pub head_timeout: std::time::Duration,
    #[command(flatten)]
    pub exec: ExecOptions,
}

/// The file where a server announces its URL inside the data dir.
pub fn url_file(data_dir: &Path) -> PathBuf {
    data_dir.join("server.url")
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub async fn serve(data_dir: &Path, a: ServeArgs) -> Result<i32> {
    let config_path = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("weft.toml"));
    let cfg = Config::load(&config_path)?;
    if cfg.workflows.is_empty() {
        bail!(
            "{} declares no workflows ([workflows.NAME] with a component)",
            config_path.display()
        );
    }
    let addr_text = a
        .addr
        .clone()
        .or(cfg.server.addr.clone())
        .unwrap_or_else(|| defaults::ADDR.into());
    let addr: SocketAddr = addr_text
        .parse()
        .with_context(|| format!("`{addr_text}` is not an address like 127.0.0.1:8080"))?;
    // An empty token would let anyone in who sends `Bearer ` alone.
    let token = a.token.clone().filter(|t| !t.trim().is_empty());
    if !addr.ip().is_loopback() && token.is_none() {
        let given = if a.token.is_some() {
            " (the one given is empty)"
        } else {
            ""
        };
        bail!(
            "serving on {addr}, which is not loopback, needs a token{given}: --token or WEFT_TOKEN"
        );
    }
    let mut exec = a.exec.clone();
    if exec.store.is_none() {
        exec.store = cfg.store.url.clone();
    }
    if exec.lease.is_none()
        && let Some(l) = &cfg.store.lease
    {
        exec.lease = Some(
            super::parse_duration(l)
                .map_err(|e| anyhow::anyhow!("[store] lease = \"{l}\": {e}"))?,
        );
    }
    let rt = super::open::open_runtime(data_dir, &exec).await?;
    let mut workflows = Vec::new();
    for (name, w) in &cfg.workflows {
        let path = prepare(&cfg, name)?;
        let bytes = std::fs::read(&path)
            .with_context(|| format!("reading the component of `{name}`: {}", path.display()))?;
        let digest = super::open::store_and_load(&rt, &path, &bytes, "Deployed")
            .await
            .with_context(|| format!("deploying workflow `{name}`"))?;
        let policy = w.policy(name)?;
        if policy.isolation == crate::durable::policy::Isolation::Shared
            && !rt.components.load(&digest)?.can_share()
        {
            anyhow::bail!(
                "workflow `{name}`: isolation = \"shared\" needs a component that exports `run-shared`: a Python workflow built with `weft build --isolation shared`; {} is not one",
                path.display()
            );
        }
        let shared = policy.isolation == crate::durable::policy::Isolation::Shared;
        rt.set_policy(name, policy);
        if shared {
            rt.warm_shared(name, &digest)?;
        }
        workflows.push((name.clone(), digest, w.concurrency));
    }
    // Versions no instance uses and no workflow deploys are deleted.
    let mut keep: std::collections::HashSet<String> =
        workflows.iter().map(|w| w.1.clone()).collect();
    keep.extend(rt.journal.list(None).await?.into_iter().map(|r| r.digest));
    let removed = rt.components.collect_garbage(&keep)?;
    if removed > 0 {
        term::status("Removed", &format!("{removed} unused component versions"));
    }
    let max_running = a
        .max_running
        .or(cfg.server.max_running)
        .unwrap_or(defaults::MAX_RUNNING);
    let mut schedules = Vec::new();
    for (name, w) in &cfg.workflows {
        for spec in &w.schedules {
            schedules.push(crate::scheduler::cron::Schedule::parse(name, spec)?);
        }
    }
    let scheduler = Scheduler::new(rt.clone(), workflows, max_running);
    scheduler.install_children();
    let socket = control::serve(Api {
        rt: rt.clone(),
        scheduler: Some(scheduler.clone()),
        token: None,
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    scheduler.join_cluster(&url).await?;
    let resumed = scheduler.resume_all().await?;
    if resumed > 0 {
        term::status("Resumed", &format!("{resumed} unfinished instances"));
    }
    if !schedules.is_empty() {
        term::status("Scheduled", &format!("{} cron schedules", schedules.len()));
    }
    scheduler.start_schedules(schedules);
    std::fs::write(url_file(data_dir), &url)?;
    term::status("Serving", &url);
    let app = router(Arc::new(Api {
        rt: rt.clone(),
        scheduler: Some(scheduler.clone()),
        token,
    }));
    let result = crate::api::listen::serve(listener, app, a.head_timeout, shutdown_signal()).await;
    term::status("Stopping", "every unfinished instance stays resumable");
    scheduler.shutdown().await;
    socket.abort();
    let _ = std::fs::remove_file(url_file(data_dir));
    let _ = std::fs::remove_file(control::socket_path(data_dir));
    result?;
    Ok(0)
}

/// Runs a workflow's build command, if any, and returns its component path.
/// The command finds this `weft` first on its `PATH` (so `weft build` works
/// whether or not weft is installed), and its output goes to stderr with
/// the rest of the server's log.
fn prepare(cfg: &Config, name: &str) -> Result<PathBuf> {
    if let Some(cmd) = &cfg.workflows[name].build {
        term::status("Building", &format!("{name}: {cmd}"));
        let mut path: Vec<PathBuf> = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.to_owned()))
            .into_iter()
            .collect();
        path.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(&cfg.base)
            .env("PATH", std::env::join_paths(path)?)
            .stdout(super::stdout_to_stderr())
            .status()
            .with_context(|| format!("running the build command of `{name}`"))?;
        if !status.success() {
            bail!("the build command of workflow `{name}` failed: {cmd}");
        }
    }
    Ok(cfg.component_path(name))
}
