//! The control socket: lets other `weft` commands reach a process that holds
//! the data dir (redb allows one process per journal file).
//!
//! Protocol: one JSON request per connection, one JSON line back:
//! `{"ok": <value>}` or `{"error": "<message>"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::journal::{Journal, Status};
use crate::runner::Runtime;
use crate::summary::InstanceSummary;

/// A request to the process holding the data dir.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    SendEvent {
        id: String,
        #[serde(rename = "type")]
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

/// Path of the control socket in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("weft.sock")
}

/// Serves requests until the listener is dropped. Removes a stale socket
/// file first (the caller holds the journal, so no other process serves).
pub fn serve(rt: Arc<Runtime>) -> Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(&rt.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| anyhow!("binding control socket {}: {e}", path.display()))?;
    Ok(tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let rt = rt.clone();
            tokio::spawn(async move {
                let _ = handle(rt, conn).await;
            });
        }
    }))
}

async fn handle(rt: Arc<Runtime>, conn: UnixStream) -> Result<()> {
    let (r, mut w) = conn.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => match execute(&rt, req).await {
            Ok(v) => json!({ "ok": v }),
            Err(e) => json!({ "error": format!("{e:#}") }),
        },
        Err(e) => json!({ "error": format!("bad request: {e}") }),
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    Ok(())
}

/// Executes a request in the process that holds the journal.
pub async fn execute(rt: &Runtime, req: Request) -> Result<Value> {
    match req {
        Request::SendEvent {
            id,
            event_type,
            payload,
        } => {
            rt.send_event(&id, &event_type, &payload).await?;
            Ok(Value::Null)
        }
        other => read(&rt.journal, other, &|id| rt.tracks(id)),
    }
}

/// Answers the read-only requests from a journal; `live` says whether an
/// instance is run by the process answering (none, when the journal was
/// opened by the asking command itself).
pub fn read(journal: &Journal, req: Request, live: &dyn Fn(&str) -> bool) -> Result<Value> {
    match req {
        Request::Status { id } => match journal.instance(&id)? {
            Some(rec) => Ok(serde_json::to_value(InstanceSummary::of(&rec, live(&id)))?),
            None => bail!("no instance with id `{id}`"),
        },
        Request::List { status } => Ok(serde_json::to_value(
            journal
                .list(status)?
                .iter()
                .map(|r| InstanceSummary::of(r, live(&r.id)))
                .collect::<Vec<_>>(),
        )?),
        Request::History { id } => {
            if journal.instance(&id)?.is_none() {
                bail!("no instance with id `{id}`");
            }
            let mut rows = Vec::new();
            for (seq, entry) in journal.entries(&id)? {
                // RawValue fields only serialize to text, not to a Value.
                let mut v: Value = serde_json::from_str(&serde_json::to_string(&entry)?)?;
                if let Value::Object(m) = &mut v {
                    m.insert("seq".into(), seq.into());
                }
                rows.push(v);
            }
            for event in journal.inbox(&id)? {
                let mut v: Value = serde_json::from_str(&serde_json::to_string(&event)?)?;
                if let Value::Object(m) = &mut v {
                    m.insert("kind".into(), "bufferedEvent".into());
                }
                rows.push(v);
            }
            Ok(Value::Array(rows))
        }
        Request::SendEvent { .. } => bail!("send-event needs a runtime"),
    }
}

/// Sends a request to the process serving `data_dir`, if there is one.
/// `Ok(None)` means no process answers on the socket.
pub async fn call(data_dir: &Path, req: &Request) -> Result<Option<Value>> {
    let path = socket_path(data_dir);
    let conn = match UnixStream::connect(&path).await {
        Ok(c) => c,
        Err(_) => return Ok(None),
    };
    let (r, mut w) = conn.into_split();
    let mut out = serde_json::to_vec(req)?;
    out.push(b'\n');
    w.write_all(&out).await?;
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let v: Value = serde_json::from_str(&line).map_err(|e| {
        anyhow!(
            "bad answer from the weft process on {}: {e}",
            path.display()
        )
    })?;
    if let Some(e) = v.get("error") {
        bail!("{}", e.as_str().unwrap_or("error"));
    }
    Ok(Some(v.get("ok").cloned().unwrap_or(Value::Null)))
}
