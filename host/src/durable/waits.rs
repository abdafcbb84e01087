//! The durable calls that wait: `sleep`, `sleep-until` and
//! `wait-for-event`. Each takes what the journal holds for it (the
//! replay-or-record step of [`Instance::journaled`] and
//! [`Instance::record`]), then waits for its time or its event.

use wasmtime::Result;

use super::convert::wait_result;
use super::{DEFAULT_EVENT_TIMEOUT_MS, Instance, MAX_SLEEP_MS, Progress, WaitFor};
use crate::bindings::types as wit;
use crate::journal::{Entry, UnixMs, WaitResult, now_ms, until_ms};
use crate::replay::{CallRecord, Kind};

/// `sleep`: a durable sleep of `duration_ms` (at most a year).
pub(super) async fn sleep_for(inst: &Instance, name: String, duration_ms: u64) -> Result<()> {
    durable_sleep(inst, name, |now| {
        now.saturating_add(duration_ms.min(MAX_SLEEP_MS))
    })
    .await
}

/// `sleep-until`: a durable sleep until `unix_ms` (at most a year away).
pub(super) async fn sleep_until(inst: &Instance, name: String, unix_ms: u64) -> Result<()> {
    durable_sleep(inst, name, |now| {
        unix_ms.min(now.saturating_add(MAX_SLEEP_MS))
    })
    .await
}

/// `delay`: a plain timer, not journaled (at most a year).
pub(super) async fn delay(duration_ms: u64) {
    tokio::time::sleep(std::time::Duration::from_millis(
        duration_ms.min(MAX_SLEEP_MS),
    ))
    .await;
}

/// A durable sleep until `wake(now)`, `now` being when it first started.
async fn durable_sleep(
    inst: &Instance,
    name: String,
    wake: impl FnOnce(UnixMs) -> UnixMs,
) -> Result<()> {
    let busy = inst.busy();
    let (n, rec) = inst.journaled(Kind::Sleep, &name)?;
    let wake_ms = match rec {
        Some(CallRecord::Sleep { wake_ms }) => wake_ms,
        _ => {
            let wake_ms = inst
                .record(Kind::Sleep, &name, n, |now| {
                    let wake_ms = wake(now);
                    let entry = Entry::Sleep {
                        name: name.clone(),
                        n,
                        started_ms: now,
                        wake_ms,
                    };
                    (entry, wake_ms)
                })
                .await?;
            inst.report(Progress::Sleeping { name, wake_ms });
            wake_ms
        }
    };
    drop(busy);
    if wake_ms > now_ms() {
        inst.dry_run_park().await;
    }
    inst.wait_until(wake_ms, WaitFor::Sleep).await;
    Ok(())
}

/// Waits for an event of `event_type`, or until the timeout (default 24 h)
/// from when the wait first started.
pub(super) async fn wait_for_event(
    inst: &Instance,
    name: String,
    event_type: String,
    timeout_ms: Option<u64>,
) -> Result<Result<wit::Event, wit::WaitError>> {
    let busy = inst.busy();
    let (n, rec) = inst.journaled(Kind::Wait, &name)?;
    let deadline_ms = match rec {
        Some(CallRecord::Wait {
            result: Some(r), ..
        }) => return Ok(wait_result(r)),
        Some(CallRecord::Wait { deadline_ms, .. }) => deadline_ms,
        _ => {
            let deadline_ms = inst
                .record(Kind::Wait, &name, n, |now| {
                    let deadline_ms =
                        now.saturating_add(timeout_ms.unwrap_or(DEFAULT_EVENT_TIMEOUT_MS));
                    let entry = Entry::WaitStart {
                        name: name.clone(),
                        n,
                        event_type: event_type.clone(),
                        started_ms: now,
                        deadline_ms,
                    };
                    (entry, deadline_ms)
                })
                .await?;
            inst.report(Progress::Waiting {
                name: name.clone(),
                event_type: event_type.clone(),
                deadline_ms,
            });
            deadline_ms
        }
    };
    drop(busy);
    inst.dry_run_park().await;
    let mut events = inst.events.clone();
    loop {
        let busy = inst.busy();
        events.borrow_and_update();
        let timed_out = now_ms() >= deadline_ms;
        let buffered = inst
            .journal
            .inbox(&inst.id)
            .await
            .map_err(|e| inst.host_failure(e))?
            .iter()
            .any(|e| e.event_type == event_type);
        if buffered || timed_out {
            let r = inst
                .journal
                .take_event(&inst.id, &name, n, &event_type, timed_out)
                .await
                .map_err(|e| inst.host_failure(e))?;
            if let Some(r) = r {
                drop(busy);
                inst.wait_over().await;
                if matches!(r, WaitResult::Delivered { .. }) {
                    inst.report(Progress::EventReceived {
                        name: name.clone(),
                        event_type: event_type.clone(),
                    });
                }
                return Ok(wait_result(r));
            }
        }
        let _guard = inst.register_wait(deadline_ms, WaitFor::Event(event_type.clone()));
        drop(busy);
        tokio::select! {
            _ = events.changed() => {}
            _ = tokio::time::sleep(until_ms(deadline_ms)) => {}
        }
    }
}
