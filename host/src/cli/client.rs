//! The CLI as a client of `weft serve`: create, pause, resume, terminate
//! and restart over the HTTP API.

use super::term::outln;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::term;
use crate::control::Endpoint;

/// Options to reach a server.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerOptions {
    /// The server's URL (default: the server holding the data dir).
    #[arg(long, env = "WEFT_SERVER")]
    pub server: Option<String>,
    /// Bearer token for the server.
    #[arg(long, env = "WEFT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The API to talk to: `--server`, else the process holding the data dir
/// (on its control socket), if one answers there.
pub async fn endpoint(data_dir: &Path, o: &ServerOptions) -> Result<Option<Endpoint>> {
    if let Some(url) = &o.server {
        return Ok(Some(Endpoint::url(url, o.token.clone())?));
    }
    let socket = Endpoint::socket(data_dir);
    // Something must answer: a socket file left by a crash is not a server.
    let answers = socket
        .call("GET", "/healthz".into(), None)
        .await
        .ok()
        .flatten()
        .is_some();
    Ok(answers.then_some(socket))
}

async fn need_server(data_dir: &Path, o: &ServerOptions) -> Result<Endpoint> {
    endpoint(data_dir, o).await?.with_context(|| {
        format!(
            "no weft server holds {}; start one with `weft serve` or pass --server URL",
            data_dir.display()
        )
    })
}

/// Sends one request; returns the JSON body of a 2xx answer.
pub async fn call(
    to: &Endpoint,
    method: &'static str,
    path: String,
    body: Option<Value>,
) -> Result<Value> {
    let Some((status, v)) = to.call(method, path, body.map(|b| b.to_string())).await? else {
        bail!("no weft process answers at {to}");
    };
    if !(200..300).contains(&status) {
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        bail!("{msg} (HTTP {status})");
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// The workflow's name, as deployed in weft.toml.
    pub workflow: String,
    /// The instance id (default: a random one).
    #[arg(long)]
    pub id: Option<String>,
    /// The instance's params, as JSON (or `@file`).
    #[arg(long, default_value = "null")]
    pub params: String,
    #[command(flatten)]
    pub server: ServerOptions,
}

#[derive(clap::Args, Debug)]
pub struct LifecycleArgs {
    /// The instance id.
    pub id: String,
    #[command(flatten)]
    pub server: ServerOptions,
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    /// The instance id.
    pub id: String,
    /// Re-run from this step, keeping the journal before it.
    #[arg(long)]
    pub from: Option<String>,
    /// Which occurrence of the step (1 for the first).
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[command(flatten)]
    pub server: ServerOptions,
}

fn print_instance(v: &Value, json: bool) {
    if json {
        outln!("{v}");
    } else {
        outln!(
            "{}  {}  {}",
            v["id"].as_str().unwrap_or(""),
            v["workflow"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or("")
        );
    }
}

pub async fn create(data_dir: &Path, a: CreateArgs) -> Result<i32> {
    let to = need_server(data_dir, &a.server).await?;
    let params: Value = serde_json::from_str(&super::json_arg(&a.params)?)
        .context("the params are not valid JSON")?;
    let mut body = json!({"params": params});
    if let Some(id) = &a.id {
        body["id"] = json!(id);
    }
    let path = format!("/v1/workflows/{}/instances", a.workflow);
    let v = call(&to, "POST", path, Some(body)).await?;
    print_instance(&v, a.server.json);
    Ok(0)
}

async fn change(
    data_dir: &Path,
    id: &str,
    o: &ServerOptions,
    body: Value,
    verb: &str,
) -> Result<i32> {
    let to = need_server(data_dir, o).await?;
    let inst = call(&to, "GET", format!("/v1/instances/{id}"), None).await?;
    let wf = inst["workflow"].as_str().unwrap_or_default();
    let path = format!("/v1/workflows/{wf}/instances/{id}/status");
    let v = call(&to, "PATCH", path, Some(body)).await?;
    if !o.json {
        term::status(verb, &format!("instance {id}"));
    }
    print_instance(&v, o.json);
    Ok(0)
}

pub async fn pause(data_dir: &Path, a: LifecycleArgs) -> Result<i32> {
    change(
        data_dir,
        &a.id,
        &a.server,
        json!({"status": "pause"}),
        "Paused",
    )
    .await
}

pub async fn resume(data_dir: &Path, id: &str, o: &ServerOptions) -> Result<i32> {
    change(data_dir, id, o, json!({"status": "resume"}), "Resumed").await
}

pub async fn terminate(data_dir: &Path, a: LifecycleArgs) -> Result<i32> {
    change(
        data_dir,
        &a.id,
        &a.server,
        json!({"status": "terminate"}),
        "Terminated",
    )
    .await
}

pub async fn restart(data_dir: &Path, a: RestartArgs) -> Result<i32> {
    let mut body = json!({"status": "restart"});
    if let Some(from) = &a.from {
        body["from"] = json!({"name": from, "count": a.count});
    }
    change(data_dir, &a.id, &a.server, body, "Restarted").await
}

#[derive(clap::Args, Debug)]
pub struct UpgradeArgs {
    /// The workflow.
    pub workflow: String,
    /// The instance to upgrade.
    #[arg(required_unless_present = "all")]
    pub id: Option<String>,
    /// Every unfinished instance of the workflow on an older version.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    #[command(flatten)]
    pub server: ServerOptions,
}

/// `weft upgrade`: move instances to the newest deployed version, each only
/// if its journal replays on it.
pub async fn upgrade(data_dir: &Path, a: UpgradeArgs) -> Result<i32> {
    let to = need_server(data_dir, &a.server).await?;
    let body = match &a.id {
        Some(id) => json!({"id": id}),
        None => json!({"all": true}),
    };
    let path = format!("/v1/workflows/{}/upgrade", a.workflow);
    let v = call(&to, "POST", path, Some(body)).await?;
    if a.server.json {
        outln!("{v}");
    } else {
        for id in v["upgraded"].as_array().into_iter().flatten() {
            term::status(
                "Upgraded",
                &format!(
                    "{} to {}",
                    id.as_str().unwrap_or(""),
                    &v["version"].as_str().unwrap_or("")
                        [..19.min(v["version"].as_str().unwrap_or("").len())]
                ),
            );
        }
        for r in v["refused"].as_array().into_iter().flatten() {
            term::warn(
                "Refused",
                &format!(
                    "{} stays on its version: {}",
                    r["id"].as_str().unwrap_or(""),
                    r["reason"].as_str().unwrap_or("")
                ),
            );
        }
    }
    Ok(if v["refused"].as_array().is_some_and(|r| !r.is_empty()) {
        1
    } else {
        0
    })
}

#[derive(clap::Args, Debug)]
pub struct SchedulesArgs {
    #[command(flatten)]
    pub server: ServerOptions,
}

/// `weft schedules`: the server's cron schedules and their next ticks.
pub async fn schedules(data_dir: &Path, a: SchedulesArgs) -> Result<i32> {
    let to = need_server(data_dir, &a.server).await?;
    let v = call(&to, "GET", "/v1/schedules".into(), None).await?;
    if a.server.json {
        outln!("{v}");
        return Ok(0);
    }
    let list = v["schedules"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        term::status(
            "Schedules",
            "none (add `schedules = [\"…\"]` under [workflows.NAME])",
        );
    }
    for s in list {
        let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
        outln!(
            "{:<16} {:<20} {:<16} missed={:<7} next {}",
            text("workflow"),
            text("cron"),
            text("timezone"),
            text("missed"),
            s["next"].as_str().unwrap_or("never")
        );
    }
    Ok(0)
}
