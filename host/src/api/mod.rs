//! The HTTP API of `weft serve` (JSON under `/v1`).
//!
//! Errors are `{"error": {"code", "message"}}` with a 4xx or 5xx status,
//! including those axum answers itself (an unknown method, a bad query
//! string or path, a body over the limit) and those hyper answers before
//! the router (see [`listen`]). With a token configured, every `/v1`
//! request must carry `Authorization: Bearer <token>`.

mod error;
mod forward;
pub mod listen;
pub mod types;
mod ui;

pub use error::ApiError;
use error::{json_errors, too_large};
use types::*;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::journal::{InstanceRecord, MAX_PAYLOAD_BYTES, Status};
use crate::runner::Runtime;
use crate::scheduler::{Scheduler, Upgrade};
use crate::summary::InstanceSummary;

/// Shared state of the API handlers: the runtime holding the data dir, and
/// the scheduler of `weft serve` (none in `weft run`, whose API on the
/// control socket serves reads and events only).
pub struct Api {
    pub rt: Arc<Runtime>,
    pub scheduler: Option<Arc<Scheduler>>,
    pub token: Option<String>,
}

impl Api {
    fn scheduler(&self) -> ApiResult<&Arc<Scheduler>> {
        self.scheduler.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "needs_server",
                "this weft process runs one instance (`weft run`); workflows, creating \
                 instances and changing their status need `weft serve`",
            )
        })
    }

    /// Whether this process runs the instance (a server runs every one).
    fn live(&self, id: &str) -> bool {
        self.scheduler.is_some() || self.rt.tracks(id)
    }

    fn summary(&self, rec: &InstanceRecord) -> InstanceSummary {
        InstanceSummary::of(rec, self.live(&rec.id))
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
        .route("/instances", get(list_all))
        .route("/instances/{id}", get(get_instance_by_id))
        .route("/instances/{id}/history", get(history))
        .route(
            "/instances/{id}/events/{event_type}",
            post(send_event_by_id),
        )
        .route("/workflows/{name}/upgrade", post(upgrade))
        .route("/schedules", get(list_schedules))
        .layer(axum::middleware::from_fn_with_state(api.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"ok": true})) }))
        .route(
            "/metrics",
            get(metrics).layer(axum::middleware::from_fn_with_state(api.clone(), auth)),
        )
        .nest("/v1", v1)
        .merge(ui::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        // Payloads are limited to 1 MiB; larger bodies get a clear 413.
        .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES * 2 + 4096))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(api)
}

/// The cron schedules of the server's workflows, with their next ticks.
async fn list_schedules(State(api): State<Arc<Api>>) -> ApiResult<Json<Value>> {
    Ok(Json(json!({"schedules": api.scheduler()?.schedules()})))
}

/// Prometheus metrics (behind the token, as `/v1`).
async fn metrics(State(api): State<Arc<Api>>) -> ApiResult<Response> {
    let counts = api.rt.journal.counts().await?;
    let m = crate::metrics::get();
    if let Some(s) = &api.scheduler {
        m.in_memory.set(s.in_memory() as i64);
    }
    let text = m.encode(&counts);
    Ok(([("content-type", crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Largest body of a batch create: 100 instances' params of 1 MiB each
/// would be 100 MiB held at once, so the batch as a whole is limited.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

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

fn payload_text(v: &Value) -> ApiResult<String> {
    let text = v.to_string();
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(too_large(text.len()));
    }
    Ok(text)
}

async fn list_workflows(State(api): State<Arc<Api>>) -> ApiResult<Json<Workflows>> {
    let instances = api.rt.journal.list(None).await?;
    let mut counts: std::collections::HashMap<String, std::collections::BTreeMap<String, u64>> =
        std::collections::HashMap::new();
    for r in &instances {
        *counts
            .entry(r.workflow.clone())
            .or_default()
            .entry(r.status.as_str().to_owned())
            .or_default() += 1;
    }
    let mut workflows: Vec<WorkflowInfo> = api
        .scheduler()?
        .workflows()
        .map(|w| {
            let mut versions: Vec<String> = instances
                .iter()
                .filter(|r| r.workflow == w.name && r.digest != w.digest)
                .map(|r| r.digest.clone())
                .collect();
            versions.sort();
            versions.dedup();
            versions.insert(0, w.digest.clone());
            WorkflowInfo {
                name: w.name.clone(),
                version: w.digest.clone(),
                versions,
                concurrency: w.concurrency,
                counts: counts.remove(&w.name).unwrap_or_default(),
            }
        })
        .collect();
    workflows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(Workflows { workflows }))
}

fn create_body(v: Value) -> ApiResult<CreateBody> {
    let v = if v.is_null() { json!({}) } else { v };
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"id\"?, \"params\"?}}: {e}")))
}

/// The W3C trace context a create request carries: its instance's traces
/// continue it.
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    (v.len() <= 128).then(|| v.to_owned())
}

async fn create(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let body = create_body(parse_body(&body)?)?;
    let params = payload_text(&body.params)?;
    let (new, rec) = api
        .scheduler()?
        .create(&name, body.id, &params, traceparent(&headers))
        .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(api.summary(&rec))).into_response())
}

async fn create_batch(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Created>> {
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
    api.scheduler()?.workflow(&name)?;
    let bodies = items
        .into_iter()
        .map(create_body)
        .collect::<ApiResult<Vec<_>>>()?;
    let mut out = Vec::new();
    for b in bodies {
        let params = payload_text(&b.params)?;
        let (_, rec) = api
            .scheduler()?
            .create(&name, b.id, &params, traceparent(&headers))
            .await?;
        out.push(api.summary(&rec));
    }
    Ok(Json(Created { instances: out }))
}

async fn list_instances(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<InstancePage>> {
    api.scheduler()?.workflow(&name)?;
    page(&api, Some(&name), q).await
}

/// A page of instances (of `workflow`, or of all), ordered by id.
async fn page(api: &Api, workflow: Option<&str>, q: ListQuery) -> ApiResult<Json<InstancePage>> {
    let status = match &q.status {
        Some(s) => Some(s.parse::<Status>().map_err(ApiError::bad_request)?),
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let all = api.rt.journal.list(status).await?;
    let page: Vec<&InstanceRecord> = all
        .iter()
        .filter(|r| workflow.is_none_or(|w| r.workflow == w))
        .filter(|r| q.prefix.as_deref().is_none_or(|p| r.id.starts_with(p)))
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
    Ok(Json(InstancePage {
        instances: page.iter().map(|r| api.summary(r)).collect(),
        cursor,
    }))
}

async fn load(api: &Api, name: Option<&str>, id: &str) -> ApiResult<InstanceRecord> {
    if let Some(name) = name {
        api.scheduler()?.workflow(name)?;
    }
    match api.rt.journal.instance(id).await? {
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

async fn detailed(api: &Api, rec: &InstanceRecord) -> ApiResult<Json<InstanceDetail>> {
    let entries = api.rt.journal.entries(&rec.id).await?;
    Ok(Json(InstanceDetail {
        summary: api.summary(rec),
        input: rec.input.clone(),
        steps: StepSummary::of(&entries),
    }))
}

async fn get_instance(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult<Json<InstanceDetail>> {
    let rec = load(&api, Some(&name), &id).await?;
    detailed(&api, &rec).await
}

async fn get_instance_by_id(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceDetail>> {
    let rec = load(&api, None, &id).await?;
    detailed(&api, &rec).await
}

async fn change_status(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    load(&api, Some(&name), &id).await?;
    let b: StatusBody = serde_json::from_value(parse_body(&body)?)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"status\": \"pause\" | \"resume\" | \"terminate\" | \"restart\", \"from\"?}}: {e}")))?;
    let s = api.scheduler()?;
    let rec = match (b.status.as_str(), b.from) {
        ("pause", None) => s.pause(&id).await,
        ("resume", None) => s.resume(&id).await,
        ("terminate", None) => s.terminate(&id).await,
        ("restart", from) => s.restart(&id, from.map(|f| (f.name, f.count))).await,
        (other, Some(_)) if ["pause", "resume", "terminate"].contains(&other) => {
            return Err(ApiError::bad_request("`from` applies to restart only"));
        }
        (other, _) => {
            return Err(ApiError::bad_request(format!(
                "unknown status change `{other}` (expected pause, resume, terminate or restart)"
            )));
        }
    };
    let path = format!("/v1/workflows/{name}/instances/{id}/status");
    let body = String::from_utf8_lossy(&body).into_owned();
    let here = rec.map(|rec| Json(api.summary(&rec)));
    forward::or_owner(&api, &headers, ("PATCH", path, Some(body)), here).await
}

async fn send_event(
    State(api): State<Arc<Api>>,
    Path((name, id, event_type)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    load(&api, Some(&name), &id).await?;
    let payload = payload_text(&parse_body(&body)?)?;
    api.rt.send_event(&id, &event_type, &payload).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `POST /v1/instances/{id}/events/{type}`: an event by instance id alone.
async fn send_event_by_id(
    State(api): State<Arc<Api>>,
    Path((id, event_type)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    load(&api, None, &id).await?;
    let payload = payload_text(&parse_body(&body)?)?;
    api.rt.send_event(&id, &event_type, &payload).await?;
    Ok(StatusCode::ACCEPTED)
}

/// `GET /v1/instances/{id}/history`: the journal, as `weft history` prints it.
async fn history(State(api): State<Arc<Api>>, Path(id): Path<String>) -> ApiResult<Json<History>> {
    load(&api, None, &id).await?;
    Ok(Json(History {
        entries: crate::summary::history(&api.rt.journal, &id).await?,
    }))
}

/// `GET /v1/instances?status=&limit=&cursor=`: instances of every workflow.
async fn list_all(
    State(api): State<Arc<Api>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<InstancePage>> {
    page(&api, None, q).await
}

async fn delete_instance(
    State(api): State<Arc<Api>>,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    load(&api, Some(&name), &id).await?;
    let here = api
        .scheduler()?
        .delete(&id)
        .await
        .map(|()| StatusCode::NO_CONTENT);
    let path = format!("/v1/workflows/{name}/instances/{id}");
    forward::or_owner(&api, &headers, ("DELETE", path, None), here).await
}

/// Moves instances to the newest version when their journal replays on it.
async fn upgrade(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Json<UpgradeReport>> {
    let wf = api.scheduler()?.workflow(&name)?;
    let b: UpgradeBody = serde_json::from_value(parse_body(&body)?).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"id\"}} or {{\"all\": true}}: {e}"))
    })?;
    let ids: Vec<String> = match (b.id, b.all) {
        (Some(id), false) => {
            load(&api, Some(&name), &id).await?;
            vec![id]
        }
        (None, true) => api
            .rt
            .journal
            .list(None)
            .await?
            .into_iter()
            .filter(|r| r.workflow == name && !r.status.is_final() && r.digest != wf.digest)
            .map(|r| r.id)
            .collect(),
        _ => return Err(ApiError::bad_request("give either \"id\" or \"all\": true")),
    };
    let mut upgraded = Vec::new();
    let mut refused = Vec::new();
    for id in ids {
        match api.scheduler()?.upgrade(&id).await? {
            Upgrade::Moved(_) => upgraded.push(id),
            Upgrade::Refused(reason) => refused.push(Refused { id, reason }),
        }
    }
    Ok(Json(UpgradeReport {
        version: wf.digest.clone(),
        upgraded,
        refused,
    }))
}

#[cfg(test)]
mod tests;
