//! The API router in-process: requests through `tower::ServiceExt::oneshot`
//! against a scheduler on a temporary data dir, no socket.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::runner::Runtime;

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
}

fn fixture(token: Option<&str>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(&dir.path().join("data"), Duration::from_secs(5)).unwrap();
    let bytes = std::fs::read(weft_test_artifacts::SCENARIOS).unwrap();
    let digest = rt.components.store_bytes(&bytes).unwrap();
    let scheduler = Scheduler::new(rt.clone(), vec![("rs".into(), digest, None)], 50);
    let app = router(Arc::new(Api {
        rt,
        scheduler: Some(scheduler),
        token: token.map(str::to_owned),
    }));
    Fixture { _dir: dir, app }
}

impl Fixture {
    async fn call(&self, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body.to_owned()))
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn wait_status(&self, id: &str, status: &str) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.call("GET", &format!("/v1/instances/{id}"), "").await;
            if v["status"] == status {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{id}: {v}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn is_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_inspect_and_list() {
    let f = fixture(None);
    let (s, v) = f
        .call(
            "POST",
            "/v1/workflows/rs/instances",
            r#"{"id": "b1", "params": {"scenario": "basic"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["id"], "b1");
    assert_eq!(v["workflow"], "rs");
    // The same id again: the existing instance, nothing starts twice.
    let (s, _) = f
        .call("POST", "/v1/workflows/rs/instances", r#"{"id": "b1"}"#)
        .await;
    assert_eq!(s, StatusCode::OK);
    let done = f.wait_status("b1", "complete").await;
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "{done}");
    assert!(
        steps
            .iter()
            .all(|s| s["status"] == "complete" && s["count"] == 1)
    );
    // The typed summary and detail agree with the list.
    let (s, page) = f
        .call("GET", "/v1/workflows/rs/instances?limit=10", "")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["instances"][0]["id"], "b1");
    assert_eq!(page["cursor"], Value::Null);
    let (_, wfs) = f.call("GET", "/v1/workflows", "").await;
    assert_eq!(wfs["workflows"][0]["name"], "rs");
    assert_eq!(wfs["workflows"][0]["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_shape() {
    let f = fixture(None);
    let (s, v) = f.call("GET", "/v1/instances/nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    is_error(&v, "not_found");
    let (s, v) = f.call("POST", "/v1/workflows/zz/instances", "{}").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    is_error(&v, "not_found");
    let (s, v) = f
        .call("POST", "/v1/workflows/rs/instances", "{not json")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    is_error(&v, "invalid_json");
    let (s, v) = f.call("DELETE", "/v1/workflows", "").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    is_error(&v, "method_not_allowed");
    let (s, v) = f
        .call("GET", "/v1/workflows/rs/instances?limit=abc", "")
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    is_error(&v, "bad_request");
    let (s, v) = f
        .call("POST", "/v1/workflows/rs/instances", r#"{"id": "bad id!"}"#)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    is_error(&v, "bad_request");
    let big = json!({"params": "x".repeat(MAX_PAYLOAD_BYTES)}).to_string();
    let (s, v) = f.call("POST", "/v1/workflows/rs/instances", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    is_error(&v, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_answers_the_new_status() {
    let f = fixture(None);
    f.call(
        "POST",
        "/v1/workflows/rs/instances",
        r#"{"id": "w", "params": {"scenario": "events"}}"#,
    )
    .await;
    f.wait_status("w", "waiting").await;
    let status = "/v1/workflows/rs/instances/w/status";
    let (_, v) = f.call("PATCH", status, r#"{"status": "pause"}"#).await;
    assert_eq!(v["status"], "paused", "{v}");
    let (s, v) = f.call("PATCH", status, r#"{"status": "pause"}"#).await;
    assert_eq!(s, StatusCode::CONFLICT);
    is_error(&v, "conflict");
    let (_, v) = f.call("PATCH", status, r#"{"status": "resume"}"#).await;
    assert!(v["status"] == "queued" || v["status"] == "running", "{v}");
    let (s, v) = f
        .call(
            "PATCH",
            status,
            r#"{"status": "restart", "from": {"name": "x", "count": 0}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (_, v) = f.call("PATCH", status, r#"{"status": "terminate"}"#).await;
    assert_eq!(v["status"], "terminated");
    let (s, v) = f
        .call("POST", "/v1/workflows/rs/instances/w/events/first", "1")
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    is_error(&v, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_v1_only() {
    let f = fixture(Some("s3cret"));
    let (s, v) = f.call("GET", "/v1/workflows", "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    is_error(&v, "unauthorized");
    let (s, _) = f.call("GET", "/healthz", "").await;
    assert_eq!(s, StatusCode::OK);
}
