//! The control socket, `DATA_DIR/weft.sock`: the process holding the data
//! dir (`weft run` or `weft serve`; redb allows one process per journal
//! file) serves the HTTP API on it, so that other `weft` commands reach
//! that process with the same requests as a client of `weft serve`. `weft
//! run` serves the routes that read instances and send events; the others
//! answer `409 needs_server`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use axum::body::Body;
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};

use crate::api::{Api, router};

/// Path of the control socket in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("weft.sock")
}

/// Serves the API on the data dir's socket until the task is aborted.
/// Removes a stale socket file first (the caller holds the journal, so no
/// other process serves). The socket needs no token: only users who may
/// open the data dir reach it.
pub fn serve(api: Api) -> Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(&api.rt.data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    let app = router(Arc::new(Api { token: None, ..api }));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }))
}

/// One request to the process serving `data_dir`: its status and JSON
/// body. `Ok(None)` means no process answers on the socket.
pub async fn call(
    data_dir: &Path,
    method: &str,
    path: String,
    body: Option<String>,
) -> Result<Option<(u16, Value)>> {
    let socket = socket_path(data_dir);
    let Ok(stream) = UnixStream::connect(&socket).await else {
        return Ok(None);
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("talking to the weft process on {}", socket.display()))?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "weft")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.unwrap_or_default()))?;
    let res = sender
        .send_request(req)
        .await
        .with_context(|| format!("talking to the weft process on {}", socket.display()))?;
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(res.into_body()), 64 << 20)
        .await
        .map_err(|e| anyhow!("reading the answer of the weft process: {e}"))?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            anyhow!(
                "bad answer from the weft process on {}: {e}",
                socket.display()
            )
        })?
    };
    Ok(Some((status, value)))
}
