//! Child workflows: `run-workflow` starts a deployed workflow as a child
//! instance and waits for its end, journaling both.

use std::sync::Arc;

use wasmtime::Result;

use super::{Instance, WaitFor, check_result};
use crate::journal::{Entry, ErrorInfo, now_ms};
use crate::replay::{CallRecord, Kind};

/// The id of a child workflow: derived from the parent's id, the call's
/// name and occurrence, so a replay finds the same child.
pub fn child_id(parent: &str, name: &str, n: u32) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{parent}\0{name}\0{n}").as_bytes());
    let prefix: String = parent.chars().take(60).collect();
    format!(
        "{prefix}-c{:x}",
        &h[..8].iter().fold(0u64, |a, b| (a << 8) | *b as u64)
    )
}

pub(super) async fn run_child(
    inst: &Instance,
    name: String,
    workflow: String,
    params: String,
) -> Result<Result<serde_json::Value, ErrorInfo>> {
    use crate::journal::ChildResult;
    let busy = inst.busy();
    let (n, rec) = inst.journaled(Kind::Child, &name)?;
    let end = |result: ChildResult| Entry::ChildEnd {
        name: name.clone(),
        n,
        ended_ms: now_ms(),
        result,
    };
    let to_result = |r: ChildResult| match r {
        ChildResult::Ok { value } => Ok(value),
        ChildResult::Err { error } => Err(error),
    };
    let child = match rec {
        Some(CallRecord::Child {
            result: Some(r), ..
        }) => return Ok(to_result(r)),
        Some(CallRecord::Child { child_id, .. }) => child_id,
        _ => {
            inst.catch_up(Kind::Child, &name, n).await?;
            let child = child_id(&inst.id, &name, n);
            let start = Entry::ChildStart {
                name: name.clone(),
                n,
                workflow: workflow.clone(),
                child_id: child.clone(),
                started_ms: now_ms(),
            };
            let mut appended = false;
            let started = match &inst.children {
                None => Err(ErrorInfo::new(
                    "ChildWorkflowsUnavailable",
                    format!(
                        "starting workflow `{workflow}` needs a server: run the parent with `weft serve`"
                    ),
                )),
                Some(c) => match check_result(&name, params) {
                    Ok(p) => {
                        // The start is journaled first: a crash between the
                        // two finds the child by its derived id on replay.
                        inst.journal
                            .append(&inst.id, vec![start.clone()])
                            .await
                            .map_err(|e| inst.host_failure(e))?;
                        appended = true;
                        c.start_child(
                            workflow.clone(),
                            child.clone(),
                            p.to_string(),
                            inst.id.clone(),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(error) = started {
                let mut entries = vec![];
                if !appended {
                    entries.push(start);
                }
                entries.push(end(ChildResult::Err {
                    error: error.clone(),
                }));
                inst.journal
                    .append(&inst.id, entries)
                    .await
                    .map_err(|e| inst.host_failure(e))?;
                return Ok(Err(error));
            }
            child
        }
    };
    drop(busy);
    let mut events = inst.events.clone();
    loop {
        let busy = inst.busy();
        events.borrow_and_update();
        let rec = inst
            .journal
            .instance(&child)
            .await
            .map_err(|e| inst.host_failure(e))?;
        let result = match rec {
            None => Some(ChildResult::Err {
                error: ErrorInfo::new(
                    "ChildWorkflowError",
                    format!("child instance `{child}` was deleted"),
                ),
            }),
            Some(r) if r.status == crate::journal::Status::Complete => Some(ChildResult::Ok {
                value: r
                    .output
                    .as_deref()
                    .and_then(|o| serde_json::from_str(o.get()).ok())
                    .unwrap_or(serde_json::Value::Null),
            }),
            Some(r) if r.status == crate::journal::Status::Errored => Some(ChildResult::Err {
                error: r
                    .error
                    .unwrap_or_else(|| ErrorInfo::new("ChildWorkflowError", "the child errored")),
            }),
            Some(r) if r.status == crate::journal::Status::Terminated => Some(ChildResult::Err {
                error: ErrorInfo::new(
                    "ChildWorkflowTerminated",
                    format!("child instance `{child}` was terminated"),
                ),
            }),
            Some(_) => None,
        };
        if let Some(result) = result {
            inst.journal
                .append(&inst.id, vec![end(result.clone())])
                .await
                .map_err(|e| inst.host_failure(e))?;
            drop(busy);
            inst.wait_over().await;
            return Ok(to_result(result));
        }
        let _guard = inst.register_wait(u64::MAX, WaitFor::Child(child.clone()));
        drop(busy);
        let _ = events.changed().await;
    }
}

/// `run-workflow`: a child's output, with a span for a call not answered
/// from the journal.
pub(super) async fn run_workflow(
    inst: Arc<Instance>,
    name: String,
    workflow: String,
    params: String,
) -> Result<Result<String, crate::bindings::types::ErrorInfo>> {
    // A replayed call is answered from the journal: no span for it.
    let span = if inst.replaying() {
        tracing::Span::none()
    } else {
        tracing::info_span!(
            target: "weft::trace",
            parent: &inst.span,
            "child",
            otel.name = %format!("child {workflow}"),
            workflow = %workflow,
            name = %name,
            parent_instance = %inst.id,
        )
    };
    use tracing::Instrument;
    run_child(&inst, name, workflow, params)
        .instrument(span)
        .await
        .map(|r| r.map(|v| v.to_string()).map_err(super::convert::to_wit))
}
