//! The CLI as a client of `weft serve`: create, pause, resume, terminate
//! and restart over the HTTP API.

use super::term::outln;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::term;

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

/// The URL of the server to use: `--server`, else the one that announced
/// itself in the data dir.
pub fn server_url(data_dir: &Path, o: &ServerOptions) -> Option<String> {
    o.server
        .clone()
        .or_else(|| std::fs::read_to_string(super::serve::url_file(data_dir)).ok())
        .map(|s| s.trim().trim_end_matches('/').to_owned())
}

fn need_server(data_dir: &Path, o: &ServerOptions) -> Result<String> {
    server_url(data_dir, o).with_context(|| {
        format!(
            "no weft server holds {}; start one with `weft serve` or pass --server URL",
            data_dir.display()
        )
    })
}

/// Sends one request; returns the JSON body of a 2xx answer.
pub async fn call(
    url: String,
    method: &'static str,
    token: Option<String>,
    body: Option<Value>,
) -> Result<Value> {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.call()
            }
            (m, body) => {
                let mut r = match m {
                    "POST" => agent.post(&url),
                    "PATCH" => agent.patch(&url),
                    _ => agent.put(&url),
                };
                if let Some(a) = &auth {
                    r = r.header("authorization", a);
                }
                r.header("content-type", "application/json")
                    .send(body.unwrap_or(Value::Null).to_string())
            }
        }
        .with_context(|| format!("connecting to {url}"))?;
        let status = resp.status();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v["error"]["message"].as_str().unwrap_or(&text);
            bail!("{msg} (HTTP {})", status.as_u16());
        }
        Ok(v)
    })
    .await?
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
    let base = need_server(data_dir, &a.server)?;
    let params: Value = serde_json::from_str(&super::json_arg(&a.params)?)
        .context("the params are not valid JSON")?;
    let mut body = json!({"params": params});
    if let Some(id) = &a.id {
        body["id"] = json!(id);
    }
    let url = format!("{base}/v1/workflows/{}/instances", a.workflow);
    let v = call(url, "POST", a.server.token.clone(), Some(body)).await?;
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
    let base = need_server(data_dir, o)?;
    let inst = call(
        format!("{base}/v1/instances/{id}"),
        "GET",
        o.token.clone(),
        None,
    )
    .await?;
    let wf = inst["workflow"].as_str().unwrap_or_default();
    let url = format!("{base}/v1/workflows/{wf}/instances/{id}/status");
    let v = call(url, "PATCH", o.token.clone(), Some(body)).await?;
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
    let base = need_server(data_dir, &a.server)?;
    let body = match &a.id {
        Some(id) => json!({"id": id}),
        None => json!({"all": true}),
    };
    let url = format!("{base}/v1/workflows/{}/upgrade", a.workflow);
    let v = call(url, "POST", a.server.token.clone(), Some(body)).await?;
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
