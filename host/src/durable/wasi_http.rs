//! Standard `wasi:http/outgoing-handler` for guests, under the rules of
//! `fetch`: only from step bodies, only to the workflow's allowed hosts.
//! Libraries that speak WASI HTTP (Rust's wstd or waki, componentize-py's
//! bindings) then work in steps unchanged. A step's result is journaled,
//! and redacted, like any other, so a response is never fetched again once
//! its step completed.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::http;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::Instance;

/// The hooks of one instance's store.
pub struct HttpHooks {
    pub(super) inst: Arc<Instance>,
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
        if self.inst.lock().running.is_empty() {
            tracing::warn!(
                instance = %self.inst.id,
                "a wasi:http request to {uri} was refused: it was sent outside a step body; do I/O inside a step so that its result is journaled"
            );
            return Some(Error::InternalError(Some(format!(
                "wasi:http request to {uri} outside a step body; do I/O inside a step so that its result is journaled"
            ))));
        }
        let host = uri.host().unwrap_or_default();
        if !self.inst.policy.allows(host) {
            tracing::warn!(
                instance = %self.inst.id,
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
            None => Plain.send_request(request, options, fut),
        }
    }
}
