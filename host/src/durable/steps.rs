//! Running step attempts: waiting until a body may run, journaling each
//! attempt's outcome, retries after their backoff. Both durable interfaces
//! (`durable` and `durable-sync`) call these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Result;

use super::convert::{from_wit, to_wit};
use super::{Instance, Progress, RunningStep, WaitFor, limits, next_retry_ms};
use crate::bindings::types::{StepOutcome, StepVerdict};
use crate::journal::{AttemptResult, Entry, ErrorInfo, MAX_PAYLOAD_BYTES, now_ms};
use crate::replay::Kind;

/// Waits until the body of step `handle` may run (`step-ready`).
pub(super) async fn step_ready(inst: Arc<Instance>, handle: u64) -> Result<()> {
    let busy = inst.busy();
    let (name, n, not_before) = {
        let st = inst.lock();
        let h = st
            .handles
            .get(&handle)
            .ok_or_else(|| wasmtime::format_err!("unknown step handle {handle}"))?;
        (h.name.clone(), h.n, h.not_before)
    };
    inst.catch_up(Kind::Step, &name, n).await?;
    drop(busy);
    if let Some(at) = not_before {
        inst.wait_until(at, WaitFor::Retry).await;
    }
    inst.may_run().await?;
    start_attempt(&inst, handle);
    Ok(())
}

/// Journals one attempt's outcome and answers with the verdict, after the
/// backoff delay when the step is retried (`step-end`). `memory_hit` says
/// whether the store's memory limit refused memory.
pub(super) async fn step_end(
    inst: Arc<Instance>,
    memory_hit: bool,
    handle: u64,
    outcome: StepOutcome,
) -> Result<StepVerdict> {
    let busy = inst.busy();
    let (name, n, attempt, started_ms, retries, running) = {
        let mut st = inst.lock();
        let running = st.running.remove(&handle);
        let h = st
            .handles
            .get(&handle)
            .ok_or_else(|| wasmtime::format_err!("unknown step handle {handle}"))?;
        (
            h.name.clone(),
            h.n,
            h.attempt,
            h.started_ms,
            h.config.retries,
            running,
        )
    };
    inst.changed.notify_one();
    let ended_ms = now_ms();
    let policy = inst.policy.clone();
    let max_bytes = policy.limits.memory_bytes;
    let checked = |e| {
        to_wit(limits::name_memory_error(
            policy.redact_error(from_wit(e)),
            memory_hit,
            max_bytes,
        ))
    };
    let outcome = match outcome {
        StepOutcome::Ok(json) if policy.leaks(&json) => StepOutcome::Ok(policy.redact(&json)),
        StepOutcome::Err(e) => StepOutcome::Err(checked(e)),
        StepOutcome::NonRetryable(e) => StepOutcome::NonRetryable(checked(e)),
        other => other,
    };
    let (result, retry_in) = match outcome {
        StepOutcome::Ok(json) => match check_result(&name, json) {
            Ok(value) => (AttemptResult::Ok { value }, None),
            Err(error) => (
                AttemptResult::Err {
                    error,
                    retry_ms: None,
                },
                None,
            ),
        },
        StepOutcome::NonRetryable(e) => (
            AttemptResult::Err {
                error: from_wit(e),
                retry_ms: None,
            },
            None,
        ),
        StepOutcome::Err(e) => {
            let retry_ms = next_retry_ms(&retries, attempt, ended_ms);
            (
                AttemptResult::Err {
                    error: from_wit(e),
                    retry_ms,
                },
                retry_ms.map(|at| at - ended_ms),
            )
        }
    };
    let entry = Entry::Step {
        name: name.clone(),
        n,
        attempt,
        started_ms,
        ended_ms,
        result: result.clone(),
    };
    inst.journal
        .append(&inst.id, vec![entry])
        .await
        .map_err(|e| inst.host_failure(e))?;
    let (outcome, error) = match &result {
        AttemptResult::Ok { .. } => (Some(true), None),
        AttemptResult::Err { error, retry_ms } => (retry_ms.map(|_| false), Some(error)),
    };
    inst.attempt_ended(
        running.as_ref(),
        &name,
        attempt,
        outcome,
        Duration::from_millis(ended_ms.saturating_sub(started_ms)),
        error,
    );
    // The outcome is durable; a pause takes effect now.
    inst.check_pause()?;
    match result {
        AttemptResult::Ok { value } => {
            inst.report(Progress::StepDone {
                name,
                attempt,
                elapsed_ms: ended_ms.saturating_sub(started_ms),
            });
            inst.lock().handles.remove(&handle);
            Ok(StepVerdict::Done(Ok(value.to_string())))
        }
        AttemptResult::Err { error, retry_ms } => {
            inst.report(Progress::StepFailed {
                name,
                attempt,
                error: error.clone(),
                retry_in_ms: retry_in,
            });
            drop(busy);
            match retry_ms {
                Some(at) => {
                    inst.wait_until(at, WaitFor::Retry).await;
                    if let Some(h) = inst.lock().handles.get_mut(&handle) {
                        h.attempt += 1;
                    }
                    start_attempt(&inst, handle);
                    Ok(StepVerdict::Retry(attempt + 1))
                }
                None => {
                    inst.lock().handles.remove(&handle);
                    Ok(StepVerdict::Done(Err(to_wit(error))))
                }
            }
        }
    }
}

pub(super) fn start_attempt(inst: &Instance, handle: u64) {
    let mut st = inst.lock();
    let now = now_ms();
    let Some(h) = st.handles.get_mut(&handle) else {
        return;
    };
    h.started_ms = now;
    let running = RunningStep {
        name: h.name.clone(),
        n: h.n,
        attempt: h.attempt,
        started_ms: now,
        deadline: Instant::now() + Duration::from_millis(h.config.timeout_ms),
        retries: h.config.retries,
        cpu: Duration::ZERO,
        span: tracing::info_span!(
            target: "weft::trace",
            parent: &inst.span,
            "step",
            otel.name = %format!("step {}", h.name),
            workflow = %inst.workflow,
            instance = %inst.id,
            step = %h.name,
            attempt = h.attempt,
            outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        ),
    };
    st.running.insert(handle, running);
    drop(st);
    inst.changed.notify_one();
}

/// Validates a step's result: JSON, at most 1 MiB.
pub(crate) fn check_result(name: &str, json: String) -> Result<serde_json::Value, ErrorInfo> {
    if json.len() > MAX_PAYLOAD_BYTES {
        return Err(ErrorInfo::new(
            "StepResultTooLarge",
            format!(
                "step \"{name}\" returned {} bytes; a step result may be at most {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
                json.len()
            ),
        ));
    }
    serde_json::from_str(&json).map_err(|e| {
        ErrorInfo::new(
            "InvalidStepResult",
            format!("step \"{name}\" returned invalid JSON: {e}"),
        )
    })
}
