//! The HTTP API of `weft serve` (JSON under `/v1`).
//!
//! Errors are `{"error": {"code", "message"}}` with a 4xx or 5xx status,
//! including those axum answers itself (an unknown method, a bad query
//! string or path, a body over the limit) and those hyper answers before
//! the router (see [`listen`]). With a token configured, every `/v1`
//! request must carry `Authorization: Bearer <token>`.

pub mod listen;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::journal::{
    AttemptResult, Entry, InstanceRecord, JournalError, MAX_PAYLOAD_BYTES, Status,
};
use crate::scheduler::{LifecycleError, Scheduler};

/// Shared state of the API handlers.
pub struct Api {
    pub scheduler: Arc<Scheduler>,
    pub token: Option<String>,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        if let Some(l) = e.downcast_ref::<LifecycleError>() {
            return match l {
                LifecycleError::UnknownWorkflow(_) | LifecycleError::UnknownInstance(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", l.to_string())
                }
                LifecycleError::Conflict(_) => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", l.to_string())
                }
                LifecycleError::Invalid(_) => ApiError::bad_request(l.to_string()),
            };
        }
        if let Some(j) = e.downcast_ref::<JournalError>() {
            return match j {
                JournalError::UnknownInstance(_) => {
                    ApiError::new(StatusCode::NOT_FOUND, "not_found", j.to_string())
                }
                JournalError::Finished { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "conflict", j.to_string())
                }
                _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", j.to_string()),
            };
        }
        if let Some(i) = e.downcast_ref::<crate::runner::InvalidInput>() {
            return ApiError::bad_request(i.to_string());
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{e:#}"),
        )
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Builds the router.
pub fn router(api: Arc<Api>) -> Router {
    let v1 = Router::new()
        .route("/workflows", get(list_workflows))
        .route(
            "/workflows/{name}/instances",
            post(create).get(list_instances),
        )
        .route(
            "/workflows/{name}/instances/batch",
            // Each instance's params may be 1 MiB; the batch as a whole is
            // bounded so that one request cannot hold unbounded memory.
            post(create_batch).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .route(
            "/workflows/{name}/instances/{id}",
            get(get_instance).delete(delete_instance),
        )
        .route(
            "/workflows/{name}/instances/{id}/status",
            patch(change_status),
        )
        .route(
            "/workflows/{name}/instances/{id}/events/{event_type}",
            post(send_event),
        )
        .route("/instances/{id}", get(get_instance_by_id))
        .route("/workflows/{name}/upgrade", post(upgrade))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // Payloads are limited to 1 MiB; larger bodies get a clear 413.
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES * 2 + 4096))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(api)
}

/// Largest body of a batch create: 100 instances' params of 1 MiB each
/// would be 100 MiB held at once, so the batch as a whole is limited.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// Gives every error answer the API's JSON body: those of axum's own
/// (405 for an unknown method, a query string or path that does not parse,
/// a body over the limit) come as plain text or empty.
async fn json_errors(res: Response) -> Response {
    let json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = res.status();
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::METHOD_NOT_ALLOWED, _) => {
            "this route does not take that method (its `Allow` header lists those it takes)"
                .to_owned()
        }
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!(
            "the body is over the limit ({MAX_PAYLOAD_BYTES} bytes per payload; {MAX_BATCH_BYTES} for a batch)"
        ),
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase(),
    };
    let mut res = ApiError::new(status, code, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        res.headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    res
}

async fn auth(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    if let Some(token) = &api.token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs `Authorization: Bearer <token>`",
            )
            .into_response();
        }
    }
    next.run(req).await
}

fn parse_body(body: &Bytes) -> ApiResult<Value> {
    if body.len() > MAX_PAYLOAD_BYTES + 1024 {
        return Err(too_large(body.len()));
    }
    parse_json(body)
}

fn parse_json(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn too_large(n: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the payload is {n} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)"),
    )
}

fn payload_text(v: &Value) -> ApiResult<String> {
    let text = v.to_string();
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(too_large(text.len()));
    }
    Ok(text)
}

/// The summary of an instance.
pub fn instance_json(rec: &InstanceRecord) -> Value {
    let mut v = json!({
        "id": rec.id,
        "workflow": rec.workflow,
        "status": rec.status,
        "version": rec.digest,
        "createdMs": rec.created_ms,
        "updatedMs": rec.updated_ms,
    });
    if let Some(o) = &rec.output {
        v["output"] = serde_json::from_str(o.get()).unwrap_or(Value::Null);
    }
    if let Some(e) = &rec.error {
        v["error"] = json!(e);
    }
    v
}

/// The steps of an instance, one row per step occurrence.
fn steps_json(entries: &[(u64, Entry)]) -> Vec<Value> {
    let mut rows: BTreeMap<(String, u32), Value> = BTreeMap::new();
    let mut order = Vec::new();
    for (_, e) in entries {
        let Entry::Step {
            name,
            n,
            attempt,
            started_ms,
            ended_ms,
            result,
        } = e
        else {
            continue;
        };
        let key = (name.clone(), *n);
        let row = rows.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            json!({"name": name, "count": n + 1, "startedMs": started_ms})
        });
        row["attempts"] = json!(attempt);
        match result {
            AttemptResult::Ok { value } => {
                row["status"] = json!("complete");
                row["endedMs"] = json!(ended_ms);
                row["output"] = value.clone();
            }
            AttemptResult::Err { error, retry_ms } => {
                row["error"] = json!(error);
                if retry_ms.is_some() {
                    row["status"] = json!("retrying");
                } else {
                    row["status"] = json!("errored");
                    row["endedMs"] = json!(ended_ms);
                }
            }
        }
    }
    order
        .into_iter()
        .map(|k| rows.remove(&k).unwrap())
        .collect()
}

async fn list_workflows(State(api): State<Arc<Api>>) -> ApiResult<Json<Value>> {
    let instances = api
        .scheduler
        .rt
        .journal
        .list(None)
        .map_err(anyhow::Error::from)?;
    let mut out: Vec<Value> = api
        .scheduler
        .workflows()
        .map(|w| {
            let mut versions: Vec<&str> = instances
                .iter()
                .filter(|r| r.workflow == w.name && r.digest != w.digest)
                .map(|r| r.digest.as_str())
                .collect();
            versions.sort();
            versions.dedup();
            versions.insert(0, &w.digest);
            json!({"name": w.name, "version": w.digest, "versions": versions, "concurrency": w.concurrency})
        })
        .collect();
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({"workflows": out})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    id: Option<String>,
    #[serde(default)]
    params: Value,
}

fn create_body(v: Value) -> ApiResult<CreateBody> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"id\"?, \"params\"?}}: {e}")))
}

async fn create(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body = create_body(parse_body(&body)?)?;
    let params = payload_text(&body.params)?;
    let (new, rec) = api.scheduler.create(&name, body.id, &params).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(instance_json(&rec))).into_response())
}

async fn create_batch(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // The body limit of the route bounds the batch; each params is checked
    // against the payload limit below.
    let Value::Array(items) = parse_json(&body)? else {
        return Err(ApiError::bad_request(
            "expected a JSON array of {\"id\"?, \"params\"?}",
        ));
    };
    if items.len() > 100 {
        return Err(ApiError::bad_request(format!(
            "a batch holds at most 100 instances, got {}",
            items.len()
        )));
    }
    api.scheduler.workflow(&name).map_err(anyhow::Error::from)?;
    let bodies = items
        .into_iter()
        .map(create_body)
        .collect::<ApiResult<Vec<_>>>()?;
    let mut out = Vec::new();
    for b in bodies {
        let params = payload_text(&b.params)?;
        let (_, rec) = api.scheduler.create(&name, b.id, &params).await?;
        out.push(instance_json(&rec));
    }
    Ok(Json(json!({"instances": out})))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

async fn list_instances(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    api.scheduler.workflow(&name).map_err(anyhow::Error::from)?;
    let status = match &q.status {
        Some(s) => Some(s.parse::<Status>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let all = api
        .scheduler
        .rt
        .journal
        .list(status)
        .map_err(anyhow::Error::from)?;
    let page: Vec<&InstanceRecord> = all
        .iter()
        .filter(|r| r.workflow == name)
        .filter(|r| q.cursor.as_deref().is_none_or(|c| r.id.as_str() > c))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    let page = &page[..page.len().min(limit)];
    let cursor = if more {
        page.last().map(|r| r.id.clone())
    } else {
        None
    };
    Ok(Json(json!({
        "instances": page.iter().map(|r| instance_json(r)).collect::<Vec<_>>(),
        "cursor": cursor,
    })))
}

fn load(api: &Api, name: Option<&str>, id: &str) -> ApiResult<InstanceRecord> {
    if let Some(name) = name {
        api.scheduler.workflow(name).map_err(anyhow::Error::from)?;
    }
    match api
        .scheduler
        .rt
        .journal
        .instance(id)
        .map_err(anyhow::Error::from)?
    {
        Some(rec) if name.is_none_or(|n| n == rec.workflow) => Ok(rec),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no instance with id `{id}`{}",
                name.map(|n| format!(" in workflow `{n}`"))
                    .unwrap_or_default()
            ),
        )),
    }
}

fn detailed(api: &Api, rec: &InstanceRecord) -> ApiResult<Json<Value>> {
    let entries = api
        .scheduler
        .rt
        .journal
        .entries(&rec.id)
        .map_err(anyhow::Error::from)?;
    let mut v = instance_json(rec);
    v["steps"] = json!(steps_json(&entries));
    Ok(Json(v))
}

async fn get_instance(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let rec = load(&api, Some(&name), &id)?;
    detailed(&api, &rec)
}

async fn get_instance_by_id(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let rec = load(&api, None, &id)?;
    detailed(&api, &rec)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
    from: Option<FromStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FromStep {
    name: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn change_status(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    load(&api, Some(&name), &id)?;
    let b: StatusBody = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"status\": \"pause\" | \"resume\" | \"terminate\" | \"restart\", \"from\"?}}: {e}")))?;
    let s = &api.scheduler;
    let rec = match (b.status.as_str(), b.from) {
        ("pause", None) => s.pause(&id).await?,
        ("resume", None) => s.resume(&id).await?,
        ("terminate", None) => s.terminate(&id).await?,
        ("restart", from) => s.restart(&id, from.map(|f| (f.name, f.count))).await?,
        (other, Some(_)) if ["pause", "resume", "terminate"].contains(&other) => {
            return Err(ApiError::bad_request("`from` applies to restart only"));
        }
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "unknown status change `{other}` (expected pause, resume, terminate or restart)"
            )));
        }
    };
    Ok(Json(instance_json(&rec)))
}

async fn send_event(
    State(api): State<Arc<Api>>,
    Path((name, id, event_type)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    load(&api, Some(&name), &id)?;
    let payload = payload_text(&parse_body(&body)?)?;
    api.scheduler
        .rt
        .send_event(&id, &event_type, &payload)
        .await?;
    Ok(StatusCode::ACCEPTED)
}

async fn delete_instance(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    load(&api, Some(&name), &id)?;
    api.scheduler.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpgradeBody {
    id: Option<String>,
    #[serde(default)]
    all: bool,
}

/// Moves instances to the newest version when their journal replays on it.
async fn upgrade(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let wf = api.scheduler.workflow(&name).map_err(anyhow::Error::from)?;
    let b: UpgradeBody = serde_json::from_value(parse_body(&body)?).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"id\"}} or {{\"all\": true}}: {e}"))
    })?;
    let ids: Vec<String> = match (b.id, b.all) {
        (Some(id), false) => {
            load(&api, Some(&name), &id)?;
            vec![id]
        }
        (None, true) => api
            .scheduler
            .rt
            .journal
            .list(None)
            .map_err(anyhow::Error::from)?
            .into_iter()
            .filter(|r| r.workflow == name && !r.status.is_final() && r.digest != wf.digest)
            .map(|r| r.id)
            .collect(),
        _ => return Err(ApiError::bad_request("give either \"id\" or \"all\": true")),
    };
    let mut upgraded = Vec::new();
    let mut refused = Vec::new();
    for id in ids {
        match api.scheduler.upgrade(&id).await? {
            Ok(_) => upgraded.push(json!(id)),
            Err(reason) => refused.push(json!({"id": id, "reason": reason})),
        }
    }
    Ok(Json(
        json!({"version": wf.digest, "upgraded": upgraded, "refused": refused}),
    ))
}
