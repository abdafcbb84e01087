//! A client of weft's HTTP API, over the control socket of a data dir or
//! TCP: the CLI's, and a server's forwarding a request to the host that
//! owns an instance.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use axum::body::Body;
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

/// Path of the control socket in a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("weft.sock")
}

/// Where a command reaches the API of a weft process: the control socket
/// of the process holding a data dir, or a server's address.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Socket(PathBuf),
    /// `host:port` of a server, and the token it needs.
    Http {
        authority: String,
        token: Option<String>,
    },
}

impl Endpoint {
    /// The control socket of `data_dir`.
    pub fn socket(data_dir: &Path) -> Endpoint {
        Endpoint::Socket(socket_path(data_dir))
    }

    /// A server's URL, `http://host:port`.
    pub fn url(url: &str, token: Option<String>) -> Result<Endpoint> {
        let url = url.trim().trim_end_matches('/');
        let Some(authority) = url.strip_prefix("http://") else {
            anyhow::bail!("`{url}`: the CLI reaches servers over http://host:port");
        };
        if authority.is_empty() || authority.contains('/') {
            anyhow::bail!("`{url}` is not a server address like http://127.0.0.1:8080");
        }
        Ok(Endpoint::Http {
            authority: authority.to_owned(),
            token,
        })
    }

    /// One request: the answer's status and JSON body. `Ok(None)` means
    /// nothing listens there.
    pub async fn call(
        &self,
        method: &str,
        path: String,
        body: Option<String>,
    ) -> Result<Option<(u16, Value)>> {
        self.request(method, path, body, None).await
    }

    /// [`Endpoint::call`] with the header `mark` set (a server forwarding
    /// a request).
    pub async fn call_marked(
        &self,
        method: &str,
        path: String,
        body: Option<String>,
        mark: &str,
    ) -> Result<Option<(u16, Value)>> {
        self.request(method, path, body, Some(mark)).await
    }

    async fn request(
        &self,
        method: &str,
        path: String,
        body: Option<String>,
        mark: Option<&str>,
    ) -> Result<Option<(u16, Value)>> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(m) = mark {
            req = req.header(m, "1");
        }
        match self {
            Endpoint::Socket(socket) => {
                let Ok(stream) = UnixStream::connect(socket).await else {
                    return Ok(None);
                };
                req = req.header(header::HOST, "weft");
                let req = req.body(Body::from(body.unwrap_or_default()))?;
                exchange(stream, req).await.map(Some)
            }
            Endpoint::Http { authority, token } => {
                let stream = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .with_context(|| format!("connecting to http://{authority}"))?;
                req = req.header(header::HOST, authority.as_str());
                if let Some(t) = token {
                    req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let req = req.body(Body::from(body.unwrap_or_default()))?;
                exchange(stream, req).await.map(Some)
            }
        }
        .with_context(|| format!("talking to the weft process at {self}"))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Socket(p) => write!(f, "{}", p.display()),
            Endpoint::Http { authority, .. } => write!(f, "http://{authority}"),
        }
    }
}

/// One HTTP/1.1 exchange on a connected stream.
async fn exchange<S>(stream: S, req: Request<Body>) -> Result<(u16, Value)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(Body::new(res.into_body()), 64 << 20)
        .await
        .map_err(|e| anyhow!("reading the answer: {e}"))?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("the answer is not JSON: {e}"))?
    };
    Ok((status, value))
}
