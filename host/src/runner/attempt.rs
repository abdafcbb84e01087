//! One run of an instance's guest: instantiate, replay, do new work until
//! the guest returns, traps or the watchdog interrupts it; then journal what
//! came of it (the `Run` state of the lifecycle).

use std::sync::Arc;

use anyhow::{Result, bail};
use tokio::sync::{mpsc, watch};

use super::lifecycle::Settled;
use super::shared::SharedEnd;
use super::store::workflow_event;
use super::watchdog::watchdog;
use super::{Admission, Runtime, Wake, parse_payload};
use crate::durable::policy::{Isolation, Policy};
use crate::durable::{
    Charged, Control, Instance, InstanceOptions, Progress, RunningStep, next_retry_ms,
};
use crate::journal::{
    AttemptResult, Entry, ErrorInfo, InstanceRecord, JournalError, Status, StatusUpdate, now_ms,
};
use crate::replay::Replay;

/// Why the watchdog stopped a live instance.
#[derive(Debug)]
pub(super) enum Interrupt {
    /// A step ran past its timeout.
    Timeout(RunningStep),
    /// Every pending call waits long: drop the instance until it wakes.
    Evict(Wake),
    /// A pause was requested and no step is running.
    Pause,
}

/// How the guest's `run` ended: returned (its output or error), trapped, or
/// was interrupted.
type RunResult =
    Result<wasmtime::Result<Result<String, crate::bindings::types::ErrorInfo>>, Interrupt>;

/// Stops a shared run when dropped.
struct StopOnDrop<'a>(&'a Instance);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.stop();
    }
}

impl Runtime {
    /// Runs the guest of `rec` once and settles the outcome.
    pub(super) async fn run_once(
        &self,
        rec: &InstanceRecord,
        events: &watch::Receiver<u64>,
        control: &Arc<Control>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        admission: Option<Arc<Admission>>,
    ) -> Result<Settled> {
        self.fetch_component(&rec.digest).await?;
        let component = self.components.load(&rec.digest)?;
        let entries = self.journal.entries(&rec.id).await?;
        if !entries.is_empty()
            && let Some(tx) = &progress
        {
            let _ = tx.send(Progress::Replaying {
                entries: entries.len(),
            });
        }
        if !entries.is_empty() {
            let m = crate::metrics::get();
            m.workflow(&m.replays, &rec.workflow);
        }
        let span = tracing::info_span!(
            target: "weft::trace",
            "run",
            otel.name = %format!("run {}", rec.workflow),
            workflow = %rec.workflow,
            instance = %rec.id,
            journal_entries = entries.len(),
            outcome = tracing::field::Empty,
        );
        if let Some(tp) = &rec.traceparent {
            crate::otel::set_parent(&span, tp);
        }
        let mut replay = Replay::new(entries);
        replay.trace(&span);
        let inst = Instance::new(InstanceOptions {
            id: rec.id.clone(),
            workflow: rec.workflow.clone(),
            span,
            journal: self.journal.clone(),
            replay,
            seed: rec.seed,
            events: events.clone(),
            control: control.clone(),
            children: self.children.get().and_then(|w| w.upgrade()),
            policy: self.policy(&rec.workflow),
            progress: progress.clone(),
            admission: admission.map(|a| a as Arc<dyn crate::durable::RunPermits>),
            dry_run: false,
        });
        let _live = self.journal.live();
        let event = workflow_event(rec);
        let (ended, memory_hit) = if inst.policy.isolation == Isolation::Shared
            && component.can_share()
            && !self.shared.isolated(&inst.id)
        {
            match self.run_in_shared(&component, &inst, event, control).await {
                Some(ended) => ended,
                // Its shared instance went down for another run's fault:
                // replayed elsewhere, charged nothing.
                None => {
                    self.shared.displaced(&inst.id);
                    let m = crate::metrics::get();
                    m.workflow(&m.displaced, &inst.workflow);
                    inst.span.record("outcome", "displaced");
                    return Ok(Settled::Retry);
                }
            }
        } else {
            let _resident = self.components.resident();
            let mut store = self.new_store(&component, &inst, rec.seed);
            let run = component.run(&mut store, event);
            let ended = tokio::select! {
                r = run => Ok(r),
                i = watchdog(&inst, control, self.evict_after) => Err(i),
            };
            let memory_hit = store.data().limiter.was_hit();
            drop(store);
            (ended, memory_hit)
        };
        let settled = self.settle(&inst, ended, memory_hit, &progress).await;
        let outcome = match &settled {
            Ok(Settled::Final(rec)) => rec.status.as_str(),
            Ok(Settled::Retry) => "retry",
            Ok(Settled::Paused) => "paused",
            Ok(Settled::Evicted(_)) => "evicted",
            Err(_) => "host_error",
        };
        inst.span.record("outcome", outcome);
        settled
    }

    /// Runs `inst` in a shared instance ([`super::shared`]) under the
    /// watchdog. Returns how it ended and whether it hit the memory limit,
    /// once none of its calls is in flight any more; `None` when its
    /// instance went down for another run's fault.
    async fn run_in_shared(
        &self,
        component: &Arc<crate::engine::LoadedComponent>,
        inst: &Arc<Instance>,
        event: crate::bindings::types::WorkflowEvent,
        control: &Arc<Control>,
    ) -> Option<(RunResult, bool)> {
        // Also when this future is dropped (the scheduler aborts the
        // instance's task to delete, upgrade or shut it down): the run
        // must not go on in the shared instance.
        let _stop = StopOnDrop(inst);
        let done = self.run_shared(component, inst, event);
        // A call failed (non-determinism, a pause, the journal): the run is
        // stopped, and the reason is in the instance's state, which
        // settling reads first. (The guest also stops its run when it
        // drops it, just before it returns.)
        let failed = async {
            inst.stop.stopped().await;
            let failed = {
                let st = inst.lock();
                st.fatal.is_some() || st.host_error.is_some() || st.paused || st.fenced
            };
            if !failed {
                std::future::pending::<()>().await;
            }
        };
        let ended = tokio::select! {
            r = done => Ok(r.ok()),
            i = watchdog(inst, control, self.evict_after) => Err(i),
            _ = failed => Ok(Some(SharedEnd::Returned(Err(
                crate::bindings::types::ErrorInfo {
                    name: "RunStopped".into(),
                    message: "the run was stopped".into(),
                },
            )))),
        };
        inst.stop.stop();
        inst.stop.drained().await;
        tracing::debug!(instance = %inst.id, "shared run ended: {}", match &ended {
            Err(i) => format!("{i:?}"),
            Ok(Some(SharedEnd::Returned(r))) => format!("returned {}", r.is_ok()),
            Ok(Some(SharedEnd::Down { culprit })) => format!("down, culprit {}", culprit.is_some()),
            Ok(None) => "dropped".into(),
        });
        match ended {
            Err(interrupt) => Some((Err(interrupt), false)),
            Ok(Some(SharedEnd::Returned(out))) => Some((Ok(Ok(out)), false)),
            Ok(Some(SharedEnd::Down {
                culprit: Some((trap, memory_hit)),
            })) => {
                // Its next attempts run alone: a trap storm of its retries
                // takes no other run down.
                self.shared.culprit(&inst.id);
                Some((Ok(Err(trap)), memory_hit))
            }
            Ok(Some(SharedEnd::Down { culprit: None })) | Ok(None) => None,
        }
    }

    /// Journals what one run came to: the final state, failed attempts of
    /// the steps a trap or timeout cut short, or nothing (paused, evicted).
    async fn settle(
        &self,
        inst: &Instance,
        ended: RunResult,
        memory_hit: bool,
        progress: &Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<Settled> {
        let id = inst.id.as_str();
        let policy: &Policy = &inst.policy;
        let (fatal, host_error, paused) = {
            let st = inst.lock();
            if st.fenced {
                return Err(JournalError::Fenced(id.to_owned()).into());
            }
            (st.fatal.clone(), st.host_error.clone(), st.paused)
        };
        if let Some(e) = host_error {
            bail!("instance {id}: {e}");
        }
        if let Some(e) = fatal {
            return self.end(id, Err(e)).await;
        }
        if paused {
            return Ok(Settled::Paused);
        }
        match ended {
            Ok(Ok(Ok(json))) => {
                let json = policy.redact(&json);
                let out = match inst.check_finished() {
                    Err(e) => Err(e),
                    Ok(()) => parse_payload("workflow output", &json)
                        .map_err(|e| ErrorInfo::new("InvalidOutput", format!("{e:#}"))),
                };
                self.end(id, out).await
            }
            Ok(Ok(Err(e))) => {
                let mut e = ErrorInfo::new(e.name, e.message);
                e.traceback = inst.lock().error_detail.take();
                let e = policy.redact_error(e);
                let e =
                    crate::durable::name_memory_error(e, memory_hit, policy.limits.memory_bytes);
                self.end(id, Err(e)).await
            }
            // No room in the engine's pool: not the workflow's doing. The
            // lifecycle's owner tries again later (nothing was journaled).
            Ok(Err(e)) if crate::engine::out_of_slots(&e) => {
                bail!("instance {id}: {e:#}")
            }
            Ok(Err(trap)) => {
                tracing::debug!("instance {id} trapped: {trap:?}");
                let (panic, running, cpu_exceeded, charged) = {
                    let mut st = inst.lock();
                    let running: Vec<(u64, RunningStep)> =
                        st.running.iter().map(|(h, s)| (*h, s.clone())).collect();
                    (
                        st.panic.take(),
                        running,
                        st.cpu_exceeded.take(),
                        st.charged(),
                    )
                };
                let only = |running: Vec<(u64, RunningStep)>, handle: u64| {
                    running.into_iter().filter(|(h, _)| *h == handle).collect()
                };
                // A step whose attempt used up its CPU fails alone.
                if let Some(h) = cpu_exceeded
                    && let Some((_, step)) = running.iter().find(|(r, _)| *r == h)
                {
                    let e = ErrorInfo::new(
                        "CpuLimitExceeded",
                        format!(
                            "step \"{}\" attempt {} used more than {} ms of CPU (limit `step_cpu_ms`)",
                            step.name, step.attempt, policy.limits.step_cpu_ms
                        ),
                    );
                    return self.trapped(inst, only(running, h), e, progress).await;
                }
                // Otherwise a trap (or the memory limit) is charged to the
                // step body that was running when it came, when the guest
                // says which one that was or only one was running; else to
                // every step body in flight.
                let culprits = match charged {
                    Charged::Step(h) => only(running.clone(), h),
                    _ => running.clone(),
                };
                if memory_hit {
                    let e = crate::durable::memory_limit_exceeded(policy.limits.memory_bytes);
                    return self.trapped(inst, culprits, e, progress).await;
                }
                match panic {
                    // A panic in a step body is a failed attempt of that
                    // step alone: its siblings in flight were not at fault
                    // and run again on the replay without spending one.
                    Some((Some(handle), message)) if running.iter().any(|(h, _)| *h == handle) => {
                        let e = ErrorInfo::new(
                            "WorkflowTrap",
                            format!("the step panicked: {}", policy.redact(&message)),
                        );
                        self.trapped(inst, only(running, handle), e, progress).await
                    }
                    // Outside any step body: the workflow's own code.
                    Some((_, message)) => {
                        let e = ErrorInfo::new(
                            "WorkflowTrap",
                            format!("the workflow panicked: {}", policy.redact(&message)),
                        );
                        self.end(id, Err(e)).await
                    }
                    None => {
                        let what = match trap.downcast_ref::<wasmtime::Trap>() {
                            Some(t) => t.to_string(),
                            None => trap.to_string(),
                        };
                        let e = ErrorInfo::new(
                            "WorkflowTrap",
                            format!("the workflow trapped: {}", policy.redact(&what)),
                        );
                        // The guest said it ran the workflow body: its own
                        // code trapped, whatever steps were in flight.
                        if charged == Charged::Body {
                            return self.end(id, Err(e)).await;
                        }
                        self.trapped(inst, culprits, e, progress).await
                    }
                }
            }
            Err(Interrupt::Timeout(step)) => {
                let now = now_ms();
                let error = |step: &RunningStep| {
                    ErrorInfo::new(
                        "StepTimeout",
                        format!(
                            "step \"{}\" attempt {} ran past its timeout of {} ms",
                            step.name,
                            step.attempt,
                            now.saturating_sub(step.started_ms)
                        ),
                    )
                };
                self.fail_attempts(inst, vec![step], error, progress)
                    .await?;
                Ok(Settled::Retry)
            }
            Err(Interrupt::Evict(wake)) => {
                let m = crate::metrics::get();
                m.workflow(&m.evictions, &inst.workflow);
                Ok(Settled::Evicted(wake))
            }
            Err(Interrupt::Pause) => Ok(Settled::Paused),
        }
    }

    /// A trap with `running` steps in flight is a failed attempt of each;
    /// with none, it ends the instance.
    async fn trapped(
        &self,
        inst: &Instance,
        running: Vec<(u64, RunningStep)>,
        e: ErrorInfo,
        progress: &Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<Settled> {
        if running.is_empty() {
            return self.end(&inst.id, Err(e)).await;
        }
        let steps = running.into_iter().map(|(_, s)| s).collect();
        self.fail_attempts(inst, steps, |_| e.clone(), progress)
            .await?;
        Ok(Settled::Retry)
    }

    /// Journals the instance's final state.
    async fn end(
        &self,
        id: &str,
        out: Result<Box<serde_json::value::RawValue>, ErrorInfo>,
    ) -> Result<Settled> {
        let update = match out {
            Ok(output) => StatusUpdate {
                status: Status::Complete,
                output: Some(output),
                error: None,
            },
            Err(error) => StatusUpdate {
                status: Status::Errored,
                output: None,
                error: Some(error),
            },
        };
        Ok(Settled::Final(self.journal.update(id, update).await?))
    }

    /// Journals a failed attempt, with its retry time, for each of `steps`.
    async fn fail_attempts(
        &self,
        inst: &Instance,
        steps: Vec<RunningStep>,
        error: impl Fn(&RunningStep) -> ErrorInfo,
        progress: &Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<()> {
        let now = now_ms();
        let entries = steps
            .into_iter()
            .map(|step| {
                let error = error(&step);
                let retry_ms = next_retry_ms(&step.retries, step.attempt, now);
                inst.attempt_ended(
                    Some(&step),
                    &step.name,
                    step.attempt,
                    retry_ms.map(|_| false),
                    std::time::Duration::from_millis(now.saturating_sub(step.started_ms)),
                    Some(&error),
                );
                if let Some(tx) = progress {
                    let _ = tx.send(Progress::StepFailed {
                        name: step.name.clone(),
                        attempt: step.attempt,
                        error: error.clone(),
                        retry_in_ms: retry_ms.map(|at| at - now),
                    });
                }
                Entry::Step {
                    name: step.name,
                    n: step.n,
                    attempt: step.attempt,
                    started_ms: step.started_ms,
                    ended_ms: now,
                    result: AttemptResult::Err { error, retry_ms },
                }
            })
            .collect();
        self.journal.append(&inst.id, entries).await?;
        Ok(())
    }
}
