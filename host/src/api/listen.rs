//! Serving the API's router on a TCP listener, with the limits a server
//! facing a network needs and `axum::serve` does not set:
//!
//! - a connection that has not sent a whole request head within the head
//!   timeout (`weft serve --head-timeout`, 20 s by default) is closed, and
//!   so is a kept-alive connection idle that long (hyper's header-read
//!   timeout, which needs a timer);
//! - requests hyper itself cannot parse (a URI over 64 KiB, oversized or
//!   malformed heads) are answered by hyper before the router sees them,
//!   with an empty body; [`JsonParseErrors`] gives those answers the API's
//!   `{"error": {"code", "message"}}` body too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a stop waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` until `shutdown` completes, then waits up to [`DRAIN`] for
/// the requests in flight. `head_timeout` is how long a connection may
/// take to send a request's head, and may stay idle between requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(JsonParseErrors::new(stream));
        let conn = builder.serve_connection(io, TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away or times out ends its connection.
            let _ = conn.await;
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {}
    }
    Ok(())
}

/// The connection as hyper sees it. Writes pass through, except the bodiless
/// error answers hyper writes for requests it could not parse, which are
/// replaced by the same status with the API's JSON error body.
pub struct JsonParseErrors {
    inner: TcpStream,
    /// A replacement being written, and how much of it is written.
    pending: Option<(Vec<u8>, usize)>,
    /// Closing: until when, and how much more, to read and discard.
    linger: Option<(Pin<Box<tokio::time::Sleep>>, usize)>,
}

/// How long, and for how many bytes, a closing connection keeps reading
/// what the client still sends (a request body answered early, as with
/// 413) before it is dropped. Dropping a socket with unread data sends a
/// reset, which can destroy the answer before the client reads it; servers
/// "linger" to avoid that (nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

impl JsonParseErrors {
    fn new(inner: TcpStream) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
            linger: None,
        }
    }
}

/// The answer to put in place of `head`, if it is one of hyper's own
/// bodiless error answers (a 4xx with `content-length: 0` and nothing
/// after its head; the API's own errors always have a body).
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let status_line = text.strip_prefix("HTTP/1.1 ")?.split("\r\n").next()?;
    let (code, reason) = status_line.split_once(' ')?;
    let (code, message) = match code {
        "400" => ("bad_request", "the request could not be parsed as HTTP/1.1"),
        "414" => ("uri_too_long", "the URI is longer than 65534 bytes"),
        "431" => (
            "headers_too_large",
            "the request's head is larger than this server accepts",
        ),
        _ => return None,
    };
    let bodiless = text.ends_with("\r\n\r\n")
        && text
            .to_ascii_lowercase()
            .contains("\r\ncontent-length: 0\r\n");
    if !bodiless {
        return None;
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    Some(
        format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            &status_line[..3],
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for JsonParseErrors {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonParseErrors {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = &mut *self;
        if me.pending.is_none() {
            match replacement(buf) {
                Some(r) => me.pending = Some((r, 0)),
                None => return Pin::new(&mut me.inner).poll_write(cx, buf),
            }
        }
        // Write all of the replacement, then report `buf` as written.
        while let Some((bytes, done)) = &mut me.pending {
            if *done == bytes.len() {
                me.pending = None;
                return Poll::Ready(Ok(buf.len()));
            }
            match Pin::new(&mut me.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => {
                    me.pending = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => {
                    me.pending = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Sends our end's FIN, then drains what the client still sends, for
    /// at most [`LINGER`] and [`LINGER_BYTES`], so that the answer is not
    /// lost to a reset.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.linger.is_none() {
            std::task::ready!(Pin::new(&mut me.inner).poll_shutdown(cx))?;
            me.linger = Some((Box::pin(tokio::time::sleep(LINGER)), LINGER_BYTES));
        }
        let (deadline, left) = me.linger.as_mut().expect("set above");
        let mut buf = [0u8; 16 << 10];
        loop {
            if deadline.as_mut().poll(cx).is_ready() || *left == 0 {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut buf);
            match Pin::new(&mut me.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => *left = left.saturating_sub(rb.filled().len()),
                // The client is gone: nothing more to protect.
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    // Not vectored, so that hyper hands over a response's head in one
    // buffer, which `replacement` can recognise.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_errors_are_replaced() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let r = String::from_utf8(replacement(head).unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{r}");
        assert!(r.ends_with(r#"{"error":{"code":"uri_too_long","message":"the URI is longer than 65534 bytes"}}"#), "{r}");
        // An answer with a body, or another status, passes through.
        assert!(
            replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nabcde").is_none()
        );
        assert!(replacement(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
