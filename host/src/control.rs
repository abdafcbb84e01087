//! The control socket, `DATA_DIR/weft.sock`: the process holding the data
//! dir (`weft run` or `weft serve`; redb allows one process per journal
//! file) serves the HTTP API on it, so that other `weft` commands reach
//! that process with the same requests as a client of `weft serve`. `weft
//! run` serves the routes that read instances and send events; the others
//! answer `409 needs_server`.

use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::UnixListener;

use crate::api::{Api, router};

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

pub use crate::endpoint::{Endpoint, socket_path};
