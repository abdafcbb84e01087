//! `weft send-event`, `status`, `list` and `history`: talk to the process
//! holding the data dir, or read the journal directly when none does.

use super::term::outln;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::api::types::History;
use crate::control;
use crate::journal::{Journal, JournalError, Status};
use crate::runner;
use crate::summary::InstanceSummary;

#[derive(clap::Args, Debug)]
pub struct SendEventArgs {
    /// The instance id.
    pub id: String,
    /// The event type the workflow waits for.
    pub event_type: String,
    /// The payload, as JSON (or `@file` to read it; default: null).
    #[arg(default_value = "null")]
    pub payload: String,
}

#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// The instance id.
    pub id: String,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only instances with this status.
    #[arg(long)]
    pub status: Option<Status>,
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What the inspecting verbs ask of a data dir.
enum Request {
    SendEvent {
        id: String,
        event_type: String,
        payload: String,
    },
    Status {
        id: String,
    },
    List {
        status: Option<Status>,
    },
    History {
        id: String,
    },
}

/// Runs a request against whoever holds the data dir: the process on the
/// control socket (the HTTP API), else the journal opened here.
async fn request(data_dir: &Path, store: Option<&str>, req: Request) -> Result<Value> {
    if let Some(url) = store {
        // A shared store: a process on this data dir answers for what it
        // runs (an event wakes it at once); else the store is read here.
        if let Some(v) = over_socket(data_dir, &req).await? {
            return Ok(v);
        }
        let journal = Journal::connect(url, None).await?;
        return from_journal(&journal, req).await;
    }
    if !data_dir.join("journal.redb").exists() {
        bail!(
            "no weft data dir at {} (set --data-dir or WEFT_DATA_DIR)",
            data_dir.display()
        );
    }
    // A process that holds the journal answers on its socket once it has
    // opened it, which can take a while (the journal is verified on open).
    let started = std::time::Instant::now();
    let mut told = false;
    while started.elapsed() < HOLDER_PATIENCE {
        if let Some(v) = over_socket(data_dir, &req).await? {
            return Ok(v);
        }
        match Journal::open(&data_dir.join("journal.redb")) {
            Ok(journal) => return from_journal(&journal, req).await,
            // A process holds the journal but its socket is not up yet.
            Err(JournalError::InUse) => {
                if !told && started.elapsed() > Duration::from_secs(2) {
                    super::term::status(
                        "Waiting",
                        "for the weft process holding the data dir to answer",
                    );
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    bail!(
        "the data dir {} is held by a weft process that does not answer on {}",
        data_dir.display(),
        control::socket_path(data_dir).display()
    )
}

/// How long a command waits for the process holding the data dir to answer.
const HOLDER_PATIENCE: Duration = Duration::from_secs(120);

/// The request through the API of the process holding the data dir, if
/// one answers. Answers in the shapes [`from_journal`] gives.
async fn over_socket(data_dir: &Path, req: &Request) -> Result<Option<Value>> {
    let socket = control::Endpoint::socket(data_dir);
    let call = |method, path: String, body| socket.call(method, path, body);
    let answered = match req {
        Request::SendEvent {
            id,
            event_type,
            payload,
        } => {
            call(
                "POST",
                format!("/v1/instances/{id}/events/{}", path_segment(event_type)),
                Some(payload.clone()),
            )
            .await?
        }
        Request::Status { id } => call("GET", format!("/v1/instances/{id}"), None).await?,
        Request::History { id } => call("GET", format!("/v1/instances/{id}/history"), None).await?,
        Request::List { status } => {
            // Every page, in order.
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = "/v1/instances?limit=1000".to_owned();
                if let Some(s) = status {
                    path.push_str(&format!("&status={}", s.as_str()));
                }
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let Some((code, v)) = call("GET", path, None).await? else {
                    return Ok(None);
                };
                // Kept as JSON, as the journal fallback gives it.
                let mut page: Value = answer(code, v)?;
                if let Value::Array(rows) = page["instances"].take() {
                    all.extend(rows);
                }
                match page["cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => return Ok(Some(Value::Array(all))),
                }
            }
        }
    };
    let Some((code, v)) = answered else {
        return Ok(None);
    };
    Ok(Some(match req {
        Request::SendEvent { .. } => {
            answer::<Value>(code, v)?;
            Value::Null
        }
        Request::Status { .. } => {
            // The instance as `InstanceSummary` shows it: without its steps.
            let mut v: Value = answer(code, v)?;
            if let Value::Object(m) = &mut v {
                m.remove("steps");
            }
            v
        }
        Request::History { .. } => Value::Array(answer::<History>(code, v)?.entries),
        Request::List { .. } => unreachable!("answered above"),
    }))
}

/// `s` percent-encoded for a URL path segment (event types may hold any
/// character).
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of a 2xx answer as `T`, or the API's error message.
fn answer<T: serde::de::DeserializeOwned>(code: u16, v: Value) -> Result<T> {
    if !(200..300).contains(&code) {
        let message = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the weft process answered {code}"));
        bail!("{message}");
    }
    Ok(serde_json::from_value(v)?)
}

/// The request answered from a journal no process holds (so no instance
/// is running).
async fn from_journal(journal: &Journal, req: Request) -> Result<Value> {
    let instance = async |id: &str| {
        journal
            .instance(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no instance with id `{id}`"))
    };
    Ok(match req {
        Request::SendEvent {
            id,
            event_type,
            payload,
        } => {
            let event = runner::make_event(&event_type, &payload)?;
            journal.push_event(&id, event).await?;
            Value::Null
        }
        Request::Status { id } => {
            serde_json::to_value(InstanceSummary::of(&instance(&id).await?, false))?
        }
        Request::List { status } => serde_json::to_value(
            journal
                .list(status)
                .await?
                .iter()
                .map(|r| InstanceSummary::of(r, false))
                .collect::<Vec<_>>(),
        )?,
        Request::History { id } => {
            instance(&id).await?;
            Value::Array(crate::summary::history(journal, &id).await?)
        }
    })
}

pub async fn send_event(data_dir: &Path, store: Option<&str>, a: SendEventArgs) -> Result<i32> {
    request(
        data_dir,
        store,
        Request::SendEvent {
            id: a.id.clone(),
            event_type: a.event_type.clone(),
            payload: super::json_arg(&a.payload)?,
        },
    )
    .await?;
    super::term::status(
        "Sent",
        &format!("event `{}` to instance {}", a.event_type, a.id),
    );
    Ok(0)
}

pub async fn status(data_dir: &Path, store: Option<&str>, a: IdArgs) -> Result<i32> {
    let v = request(data_dir, store, Request::Status { id: a.id.clone() }).await?;
    outln!("{}", serde_json::to_string_pretty(&v)?);
    if v["interrupted"] == true {
        super::term::warn(
            "Interrupted",
            &format!(
                "instance {} is {} in the journal, but no weft process runs it; continue it with `weft resume {}`",
                a.id,
                v["status"].as_str().unwrap_or("unfinished"),
                a.id
            ),
        );
    }
    Ok(0)
}

pub async fn list(data_dir: &Path, store: Option<&str>, a: ListArgs) -> Result<i32> {
    let v = request(data_dir, store, Request::List { status: a.status }).await?;
    let rows = v.as_array().cloned().unwrap_or_default();
    if a.json {
        for r in rows {
            outln!("{r}");
        }
        return Ok(0);
    }
    let s = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let w = rows
        .iter()
        .map(|r| s(r, "id").len())
        .max()
        .unwrap_or(2)
        .max(2);
    let ww = rows
        .iter()
        .map(|r| s(r, "workflow").len())
        .max()
        .unwrap_or(8)
        .max(8);
    outln!(
        "{:<w$}  {:<ww$}  {:<11}  VERSION",
        "ID",
        "WORKFLOW",
        "STATUS"
    );
    let mut interrupted = 0;
    for r in &rows {
        let version = s(r, "version");
        let status = if r["interrupted"] == true {
            interrupted += 1;
            "interrupted".to_owned()
        } else {
            s(r, "status")
        };
        outln!(
            "{:<w$}  {:<ww$}  {:<11}  {}",
            s(r, "id"),
            s(r, "workflow"),
            status,
            &version[..version.len().min(19)]
        );
    }
    if interrupted > 0 {
        super::term::warn(
            "Interrupted",
            &format!(
                "{interrupted} unfinished instances are run by no weft process; continue each with `weft resume ID`"
            ),
        );
    }
    Ok(0)
}

pub async fn history(data_dir: &Path, store: Option<&str>, a: IdArgs) -> Result<i32> {
    let v = request(data_dir, store, Request::History { id: a.id }).await?;
    for row in v.as_array().cloned().unwrap_or_default() {
        outln!("{row}");
    }
    Ok(0)
}
