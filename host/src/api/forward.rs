//! On a shared store, a request for an instance another live host runs
//! goes to that host's API and its answer comes back unchanged.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Api, ApiError, ApiResult};
use crate::endpoint::Endpoint;
use crate::journal::Owner;
use crate::scheduler;

/// Marks a forwarded request, so that it is never forwarded twice (the
/// instance moved meanwhile).
const FORWARDED: &str = "x-weft-forwarded";

/// Carries out `here`, or, when another live host owns the instance, sends
/// the same request to it and answers with its answer.
pub(super) async fn or_owner<T: IntoResponse>(
    api: &Api,
    headers: &HeaderMap,
    (method, path, body): (&str, String, Option<String>),
    here: Result<T, scheduler::Error>,
) -> ApiResult<Response> {
    let owner = match here {
        Ok(v) => return Ok(v.into_response()),
        Err(scheduler::Error::OwnedElsewhere(o)) => o,
        Err(e) => return Err(e.into()),
    };
    if headers.contains_key(FORWARDED) {
        return Err(unavailable(
            &owner,
            "the instance is moving between hosts; try again",
        ));
    }
    let Some(url) = &owner.api else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the instance is run by `weft run` (host `{}`), which takes no such requests; \
                 stop it, and the request works on any server",
                owner.host
            ),
        ));
    };
    let to = Endpoint::url(url, api.token.clone()).map_err(|e| unavailable(&owner, e))?;
    match to.call_marked(method, path, body, FORWARDED).await {
        Ok(Some((status, body))) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if body.is_null() {
                return Ok(status.into_response());
            }
            Ok((status, Json(body)).into_response())
        }
        Ok(None) => Err(unavailable(&owner, "nothing answers there")),
        Err(e) => Err(unavailable(&owner, format!("{e:#}"))),
    }
}

fn unavailable(owner: &Owner, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "owner_unavailable",
        format!(
            "the instance is run by host `{}` ({}), which did not take the request: {why}; \
             if that host is gone, any host takes the instance once its lease runs out",
            owner.host,
            owner.api.as_deref().unwrap_or("no API")
        ),
    )
}
