//! Standard `wasi:http/outgoing-handler` for guests, under the rules of
//! `fetch`: only from step bodies, only to the workflow's allowed hosts.
//! Libraries that speak WASI HTTP (Rust's wstd or waki, componentize-py's
//! bindings) then work in steps unchanged. A step's result is journaled,
//! and redacted, like any other, so a response is never fetched again once
//! its step completed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::http;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The hooks of one instance's store: they apply the rules of the run
/// that sends the request (in a shared store, the run the guest runs).
pub struct HttpHooks {
    pub(super) current: Arc<super::shared::CurrentRun>,
}

/// wasmtime's own behaviour, which [`HttpHooks`] sends allowed requests
/// with.
struct Plain;

impl WasiHttpHooks for Plain {}

type Sent = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl HttpHooks {
    /// Why the request may not go out, if it may not.
    fn refusal(&self, request: &http::Request<WasiBody>) -> Option<Error> {
        let uri = request.uri();
        let Some(inst) = self.current.get() else {
            return Some(Error::InternalError(Some(format!(
                "wasi:http request to {uri} outside any run"
            ))));
        };
        if inst.lock().running.is_empty() {
            tracing::warn!(
                instance = %inst.id,
                "a wasi:http request to {uri} was refused: it was sent outside a step body; do I/O inside a step so that its result is journaled"
            );
            return Some(Error::InternalError(Some(format!(
                "wasi:http request to {uri} outside a step body; do I/O inside a step so that its result is journaled"
            ))));
        }
        let host = uri.host().unwrap_or_default();
        if !inst.policy.allows(host) {
            tracing::warn!(
                instance = %inst.id,
                "a wasi:http request to {uri} was refused: host `{host}` is not on the workflow's allow-list"
            );
            return Some(Error::HttpRequestDenied);
        }
        None
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        match self.refusal(&request) {
            // Read the body the guest is sending, then refuse: clients
            // such as wstd send the body while they wait for the answer,
            // and a body cut short would hide the refusal behind a
            // "connection reset".
            Some(e) => Box::new(async move {
                let mut body = request.into_body();
                while let Some(Ok(_)) = body.frame().await {}
                Err(e)
            }),
            None => Plain.send_request(request.map(Linger::wrap), options, fut),
        }
    }
}

/// How long, at most, a request body hyper no longer wants is still read.
const LINGER: Duration = Duration::from_secs(30);

/// A request body that, when hyper drops it before its end (the answer
/// came first, or the body was known to be empty), goes on reading what
/// the guest still writes, so that the guest's writes do not fail with a
/// closed stream. Clients such as wstd write the body while they wait for
/// the answer, and a fast server's answer would otherwise turn a success
/// into a "connection reset" (seen 1 run in 3 against a server answering
/// before it read an empty body).
struct Linger(Option<WasiBody>);

impl Linger {
    fn wrap(body: WasiBody) -> WasiBody {
        Linger(Some(body)).boxed_unsync()
    }
}

impl http_body::Body for Linger {
    type Data = bytes::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

impl Drop for Linger {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take() else {
            return;
        };
        if http_body::Body::is_end_stream(&body) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(LINGER, drain).await;
            });
        }
    }
}
