//! An instance's lifecycle, in one place. `weft run` and the scheduler of
//! `weft serve` both drive an instance through this one state machine:
//!
//! ```text
//!           ┌──────────── retry (a trapped or timed-out attempt) ──────┐
//!           ▼                                                          │
//!  ──▶ Load ──▶ Admit ──▶ Run ──▶ settle ──▶ final ──▶ Ended::Final   │
//!       │  ▲       │               │   └──────────────────────────────┘
//!       │  │       │               ├──▶ paused ──▶ Load
//!       │  └───────┘ operator      └──▶ evicted ──▶ Wait ──▶ Load
//!       ├──▶ final record ──▶ Ended::Final
//!       └──▶ pause requested ──▶ Ended::Paused
//! ```
//!
//! `Load` is the only place a pause request ends the lifecycle and the only
//! place a final record is returned; every other state goes back to it.
//! Permits (a place in memory, a place among a server's running instances)
//! are taken in `Admit`, kept across retries, and given back before the
//! instance waits evicted, pauses or ends.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use anyhow::Result;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::{Admission, Runtime, Wake};
use crate::durable::{Control, Progress};
use crate::journal::{InstanceRecord, JournalError, Status, StatusUpdate};

/// How a server admits instances to run: a place in memory (the engine's
/// instance slots), then one of `max_running` and, for a workflow with a
/// `concurrency` limit, one of its places. `weft run` runs ungated.
pub struct Gate {
    pub resident: Arc<Semaphore>,
    pub pool: Arc<Semaphore>,
    /// The concurrency limit of each workflow that has one.
    pub workflows: HashMap<String, Arc<Semaphore>>,
}

impl Gate {
    fn admission(&self, workflow: &str) -> Arc<Admission> {
        Admission::new(self.pool.clone(), self.workflows.get(workflow).cloned())
    }
}

/// How an instance's lifecycle ended.
#[derive(Debug)]
pub enum Ended {
    /// Complete, errored or terminated: its final record.
    Final(Box<InstanceRecord>),
    /// Paused on request; it stays paused until resumed (which starts a new
    /// lifecycle).
    Paused,
    /// The instance was deleted.
    Deleted,
}

enum State {
    /// Read the record: end if it is final or a pause was requested.
    Load,
    /// Take a place in memory and the run permits.
    Admit(InstanceRecord),
    /// Instantiate, replay and run the guest, and journal what it did.
    Run(InstanceRecord),
    /// Evicted: wait, holding nothing, until it wakes.
    Wait(Wake),
}

/// What one run of the guest came to, once journaled.
#[derive(Debug)]
pub(super) enum Settled {
    Final(InstanceRecord),
    /// An attempt failed inside a step (trap, timeout): run again.
    Retry,
    /// Stopped for a pause request.
    Paused,
    /// Every pending call waits long.
    Evicted(Wake),
}

/// The permits one lifecycle holds.
#[derive(Default)]
struct Held {
    resident: Option<OwnedSemaphorePermit>,
    admission: Option<Arc<Admission>>,
}

impl Held {
    fn release(&mut self) {
        self.resident = None;
        if let Some(a) = &self.admission {
            a.release();
        }
    }
}

impl Runtime {
    /// Runs an instance through its lifecycle (see the module docs), with
    /// `gate` deciding when it may run (none: at once) and `progress`
    /// receiving what it does.
    pub async fn live(
        &self,
        id: &str,
        gate: Option<&Gate>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<Ended> {
        let mut events = self.event_receiver(id);
        let control = self.control(id);
        let mut held = Held::default();
        let mut state = State::Load;
        loop {
            state = match state {
                State::Load => {
                    let Some(rec) = self.journal.instance(id).await? else {
                        held.release();
                        return Ok(Ended::Deleted);
                    };
                    if rec.status.is_final() {
                        held.release();
                        return Ok(Ended::Final(Box::new(self.finish(rec))));
                    }
                    if control.pause_requested() {
                        held.release();
                        if rec.status != Status::Paused {
                            self.set_status(id, Status::Paused).await?;
                        }
                        return Ok(Ended::Paused);
                    }
                    State::Admit(rec)
                }
                State::Admit(rec) => match gate {
                    None => State::Run(rec),
                    Some(gate) => {
                        let admitted =
                            interruptible(&control, || self.admit(&rec, gate, &mut held));
                        match admitted.await {
                            Some(r) => {
                                r?;
                                State::Run(rec)
                            }
                            None => State::Load,
                        }
                    }
                },
                State::Run(rec) => {
                    if rec.status != Status::Running {
                        // Not waited for: after a crash an instance found
                        // `queued` is run all the same.
                        self.journal.update_lazy(
                            id,
                            StatusUpdate {
                                status: Status::Running,
                                output: None,
                                error: None,
                            },
                        );
                    }
                    // Boxed: a lifecycle parked in `Wait` then holds only the
                    // small state of its wait, not room for a whole run (W7:
                    // host memory per evicted instance).
                    let run = self.run_once(
                        &rec,
                        &events,
                        &control,
                        progress.clone(),
                        held.admission.clone(),
                    );
                    match Box::pin(run).await? {
                        Settled::Final(rec) => {
                            held.release();
                            tracing::info!(
                                target: "weft::instance",
                                workflow = %rec.workflow,
                                instance = %rec.id,
                                status = rec.status.as_str(),
                                error = rec.error.as_ref().map(|e| e.to_string()),
                                "instance ended"
                            );
                            return Ok(Ended::Final(Box::new(self.finish(rec))));
                        }
                        // The permits are kept for the next attempt.
                        Settled::Retry => State::Load,
                        Settled::Paused => {
                            held.release();
                            State::Load
                        }
                        Settled::Evicted(wake) => {
                            held.release();
                            State::Wait(wake)
                        }
                    }
                }
                State::Wait(wake) => {
                    if !control.pause_requested() {
                        if let Some(tx) = &progress {
                            let _ = tx.send(Progress::Evicted {
                                wake_ms: wake.at_ms,
                            });
                        }
                        self.set_status(id, Status::Waiting).await?;
                    }
                    // A pause that came meanwhile is seen here.
                    let wait =
                        interruptible(&control, || self.sleep_evicted(id, &mut events, &wake));
                    if let Some(r) = wait.await {
                        r?;
                    }
                    State::Load
                }
            }
        }
    }

    /// Takes what `held` lacks of a place in memory and the run permits,
    /// marking the instance `queued` while it waits for them.
    async fn admit(&self, rec: &InstanceRecord, gate: &Gate, held: &mut Held) -> Result<()> {
        if held.resident.is_none() {
            held.resident = Some(gate.resident.clone().acquire_owned().await?);
        }
        let admission = held
            .admission
            .get_or_insert_with(|| gate.admission(&rec.workflow));
        if admission.try_acquire() {
            return Ok(());
        }
        if rec.status != Status::Queued {
            self.set_status(&rec.id, Status::Queued).await?;
        }
        admission.acquire().await?;
        Ok(())
    }

    pub async fn set_status(
        &self,
        id: &str,
        status: Status,
    ) -> Result<InstanceRecord, JournalError> {
        self.journal
            .update(
                id,
                StatusUpdate {
                    status,
                    output: None,
                    error: None,
                },
            )
            .await
    }

    /// Runs an instance to its end in this process, ungated (`weft run`).
    pub async fn drive(
        &self,
        id: &str,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<InstanceRecord> {
        match self.live(id, None, progress).await? {
            Ended::Final(rec) => Ok(*rec),
            Ended::Paused => anyhow::bail!("instance {id} was paused"),
            Ended::Deleted => Err(JournalError::UnknownInstance(id.to_owned()).into()),
        }
    }
}

/// Runs the future `f` makes unless the operator changes the instance's
/// pause switch first (or before it starts): `None` then, and the lifecycle
/// looks again. (A closure rather than a future, and no `select!`, so that
/// the parked lifecycle holds one copy of the future, not two.)
async fn interruptible<F: Future>(control: &Control, f: impl FnOnce() -> F) -> Option<F::Output> {
    let mut changed = pin!(control.changed.notified());
    // Registered before the check, so a change in between is not missed.
    changed.as_mut().enable();
    if control.pause_requested() {
        return None;
    }
    let mut f = pin!(f());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        if changed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
