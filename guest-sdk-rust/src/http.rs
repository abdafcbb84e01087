use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, durable, w};

/// An HTTP request.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with any method.
    pub fn new(method: &str, url: impl Into<String>) -> Request {
        Request {
            method: method.to_owned(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
            timeout: None,
        }
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Request {
        Request::new("GET", url)
    }

    /// A POST request.
    pub fn post(url: impl Into<String>) -> Request {
        Request::new("POST", url)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body (and its content type).
    pub fn json(self, value: &impl Serialize) -> Result<Request, Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Gives up after `timeout` (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }
}

/// An HTTP response; any status is a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, Error> {
        Ok(String::from_utf8(self.body.clone())?)
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a request. Errors are named `FetchNotInStep`, `FetchDenied`,
/// `FetchInvalidRequest`, `FetchTimeout` and `FetchFailed`.
pub async fn fetch(req: Request) -> Result<Response, Error> {
    let r = durable::fetch(w::HttpRequest {
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: req.body,
        timeout_ms: req.timeout.map(super::ms),
    })
    .await;
    match r {
        Ok(resp) => Ok(Response {
            status: resp.status,
            headers: resp.headers,
            body: resp.body,
        }),
        Err(e) => Err(match e {
            w::FetchError::NotInStep(m) => Error::non_retryable_named("FetchNotInStep", m),
            w::FetchError::Denied(m) => Error::non_retryable_named("FetchDenied", m),
            w::FetchError::InvalidRequest(m) => {
                Error::non_retryable_named("FetchInvalidRequest", m)
            }
            w::FetchError::Timeout(m) => Error::named("FetchTimeout", m),
            w::FetchError::Failed(m) => Error::named("FetchFailed", m),
        }),
    }
}
