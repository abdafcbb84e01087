//! `fetch`: outgoing HTTP from step bodies, to allowed hosts only.

use std::time::Duration;

use crate::bindings::types as wit;
use crate::durable::Instance;

/// Default timeout of one request.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Largest response body read.
const MAX_BODY: u64 = 64 << 20;

/// Sends a request for a step body, enforcing the in-step rule and the
/// workflow's allow-list.
pub async fn fetch(
    inst: &Instance,
    req: wit::HttpRequest,
) -> Result<wit::HttpResponse, wit::FetchError> {
    if inst.lock().running.is_empty() {
        return Err(wit::FetchError::NotInStep(format!(
            "fetch({} {}) was called outside a step body; do I/O inside a step so that its result is journaled",
            req.method, req.url
        )));
    }
    let uri: ureq::http::Uri = req
        .url
        .parse()
        .map_err(|e| wit::FetchError::InvalidRequest(format!("bad URL `{}`: {e}", req.url)))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Err(wit::FetchError::InvalidRequest(format!(
                "URL `{}` must start with http:// or https://",
                req.url
            )));
        }
    }
    let host = uri.host().unwrap_or_default().to_owned();
    if !inst.policy.allows(&host) {
        return Err(wit::FetchError::Denied(format!(
            "host `{host}` is not on this workflow's allow-list (allow_hosts in weft.toml, --allow-host for weft run)"
        )));
    }
    let method: ureq::http::Method = req
        .method
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| wit::FetchError::InvalidRequest(format!("bad method `{}`", req.method)))?;
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let url = req.url.clone();
    tokio::task::spawn_blocking(move || send(method, &url, req.headers, req.body, timeout))
        .await
        .unwrap_or_else(|e| Err(wit::FetchError::Failed(e.to_string())))
}

fn send(
    method: ureq::http::Method,
    url: &str,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<wit::HttpResponse, wit::FetchError> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in &headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(body.unwrap_or_default())
        .map_err(|e| wit::FetchError::InvalidRequest(e.to_string()))?;
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let mut resp = agent.run(request).map_err(|e| match e {
        ureq::Error::Timeout(_) => wit::FetchError::Timeout(format!(
            "no response from {url} within {} ms",
            timeout.as_millis()
        )),
        other => wit::FetchError::Failed(format!("{url}: {other}")),
    })?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| wit::FetchError::Failed(format!("reading the body from {url}: {e}")))?;
    Ok(wit::HttpResponse {
        status,
        headers,
        body,
    })
}
