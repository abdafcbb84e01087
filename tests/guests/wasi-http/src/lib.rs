//! A workflow whose steps speak standard `wasi:http` through a published
//! client crate (wstd), not weft's `fetch`: a GET and a POST with a secret
//! in a header, a request to a host off the allow-list, and one outside any
//! step.

use serde::Deserialize;
use serde_json::{Value, json};
use weft_sdk::{Error, WorkflowEvent, sleep, step};
use wstd::http::{Body, Client, Request};

#[derive(Deserialize)]
struct Input {
    url: String,
    #[serde(default)]
    ms: u64,
}

/// Sends `req` with wstd and reads the answer: (status, body).
fn send(req: Request<Body>) -> Result<(u16, String), String> {
    wstd::runtime::block_on(async move {
        let mut res = Client::new().send(req).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status().as_u16();
        let body = res
            .body_mut()
            .str_contents()
            .await
            .map_err(|e| format!("{e:?}"))?
            .to_owned();
        Ok((status, body))
    })
}

fn get(url: &str) -> Result<(u16, String), String> {
    send(Request::get(url).body(Body::empty()).map_err(|e| e.to_string())?)
}

async fn run(event: WorkflowEvent<Input>) -> Result<Value, Error> {
    let url = event.payload.url.as_str();
    let (status, body) = step("get", || async { get(url).map_err(Error::new) }).await?;
    let posted: (u16, String) = step("post", || async {
        let key = weft_sdk::secret("API_KEY")?;
        let req = Request::post(url)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from("order 42"))
            .map_err(|e| Error::new(e.to_string()))?;
        send(req).map_err(Error::new)
    })
    .await?;
    let denied: Result<(u16, String), Error> = step("denied", || async {
        get("http://example.invalid/").map_err(Error::new)
    })
    .retries(0)
    .await;
    let outside = get(url).unwrap_err();
    sleep("after", std::time::Duration::from_millis(event.payload.ms)).await;
    Ok(json!({
        "get": [status, body],
        "post": posted,
        "denied": denied.unwrap_err().message(),
        "outside": outside,
    }))
}

weft_sdk::workflow!(run);
