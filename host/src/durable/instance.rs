//! The state of one instance run, shared by its host calls and the
//! runner's watchdog: the replay index, running steps, pending waits, and
//! the operator's pause switch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use wasmtime::Result;

use crate::bindings::types::{self as wit, StepConfig};
use crate::journal::{Entry, ErrorInfo, Journal, JournalError, Nondet, UnixMs, now_ms, until_ms};
use crate::replay::{CallRecord, Kind, Replay};

/// Progress of an instance, reported for new work only (never for replay).
#[derive(Debug, Clone)]
pub enum Progress {
    StepDone {
        name: String,
        attempt: u32,
        elapsed_ms: u64,
    },
    StepFailed {
        name: String,
        attempt: u32,
        error: ErrorInfo,
        retry_in_ms: Option<u64>,
    },
    Sleeping {
        name: String,
        wake_ms: UnixMs,
    },
    Waiting {
        name: String,
        event_type: String,
        deadline_ms: UnixMs,
    },
    EventReceived {
        name: String,
        event_type: String,
    },
    /// The instance was dropped from memory until `wake_ms` or an event.
    Evicted {
        wake_ms: UnixMs,
    },
    /// The instance is being replayed from `entries` journal entries.
    Replaying {
        entries: usize,
    },
}

/// What a pending wait waits for.
#[derive(Debug, Clone)]
pub enum WaitFor {
    Sleep,
    Retry,
    Event(String),
    /// A child workflow with this id.
    Child(String),
}

/// A host call that is waiting for time or an event.
#[derive(Debug, Clone)]
pub struct PendingWait {
    pub wake_ms: UnixMs,
    pub what: WaitFor,
}

/// A step attempt whose body is running.
#[derive(Debug, Clone)]
pub struct RunningStep {
    pub name: String,
    pub n: u32,
    pub attempt: u32,
    pub started_ms: UnixMs,
    pub deadline: Instant,
    pub retries: wit::RetryPolicy,
    /// CPU time the guest spent in this attempt's body.
    pub cpu: Duration,
    /// The attempt's trace span.
    pub span: tracing::Span,
}

pub(crate) struct StepHandle {
    pub(crate) name: String,
    pub(crate) n: u32,
    pub(crate) attempt: u32,
    pub(crate) config: StepConfig,
    pub(crate) not_before: Option<UnixMs>,
    pub(crate) started_ms: UnixMs,
}

/// Mutable state of one instance run.
pub struct State {
    pub replay: Replay,
    pub(crate) handles: HashMap<u64, StepHandle>,
    pub(crate) next_id: u64,
    pub running: HashMap<u64, RunningStep>,
    pub waits: HashMap<u64, PendingWait>,
    /// Host calls doing work right now (journal writes, replay checks); an
    /// instance is never evicted while one is.
    pub busy: usize,
    /// The generator behind the guest's randomness outside steps.
    pub(crate) rng: rand::rngs::StdRng,
    /// Set when the instance must end as `errored` (non-determinism).
    pub fatal: Option<ErrorInfo>,
    /// Set when the host failed (journal I/O); the instance stays resumable.
    pub host_error: Option<String>,
    /// Set when a write was refused because another host took the
    /// instance: this host drops it.
    pub fenced: bool,
    /// Set when the instance stopped at a durable call because a pause was
    /// requested.
    pub paused: bool,
    /// What the guest said of the error it is about to end with.
    pub error_detail: Option<String>,
    /// A panic the guest reported before trapping: the step whose body
    /// panicked (its handle), and the message.
    pub panic: Option<(Option<u64>, String)>,
    /// Steps begun in this run (replayed or new).
    pub steps: u64,
    /// CPU time the workflow body (outside step bodies) spent in this run.
    pub body_cpu: Duration,
    /// Where the guest runs, for charging its CPU time.
    pub cpu: super::cpu::CpuMeter,
    /// The step body the guest says it runs now (`running-step`); `None`
    /// also before it said anything.
    pub current: Option<u64>,
    /// Whether the guest says which step body it runs. If not, CPU time
    /// and traps are charged to the one step body running, if only one is.
    pub marks_steps: bool,
    /// The step whose attempt passed its CPU limit: the trap that follows
    /// fails that attempt alone.
    pub cpu_exceeded: Option<u64>,
    /// CPU time the guest spent in this run after it was stopped.
    pub stopped_cpu: Duration,
}

impl State {
    /// The state of a run that replays `replay`, with the guest's
    /// randomness outside steps seeded by `seed`.
    pub(crate) fn new(replay: Replay, seed: u64) -> State {
        State {
            replay,
            handles: HashMap::new(),
            next_id: 0,
            running: HashMap::new(),
            waits: HashMap::new(),
            busy: 0,
            rng: rand::SeedableRng::seed_from_u64(seed),
            fatal: None,
            host_error: None,
            fenced: false,
            paused: false,
            error_detail: None,
            panic: None,
            steps: 0,
            body_cpu: Duration::ZERO,
            cpu: Default::default(),
            current: None,
            marks_steps: false,
            cpu_exceeded: None,
            stopped_cpu: Duration::ZERO,
        }
    }
}

/// One instance run: shared by the store's host calls and the runner.
pub struct Instance {
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The run's trace span.
    pub span: tracing::Span,
    pub journal: Journal,
    pub state: Mutex<State>,
    /// Signalled whenever running steps or pending waits change.
    pub changed: Notify,
    /// Counts events sent to this instance.
    pub events: watch::Receiver<u64>,
    /// Operator requests (pause).
    pub control: Arc<super::Control>,
    /// Starts child workflows, when a server runs this instance.
    pub children: Option<Arc<dyn super::Children>>,
    /// What the workflow may do (hosts, secrets, limits).
    pub policy: Arc<crate::durable::policy::Policy>,
    /// Replay only, to check a new version: stop before any new work or
    /// wait, and write nothing.
    pub dry_run: bool,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The run permits of a server's instance, given back while it waits.
    pub admission: Option<Arc<dyn super::RunPermits>>,
    /// Stops the run without its store (a run in a shared instance).
    pub stop: super::stop::Stop,
}

/// What an [`Instance`] is made of.
pub struct InstanceOptions {
    pub id: String,
    /// The workflow's name (for metrics and logs).
    pub workflow: String,
    /// The run's trace span ([`crate::otel`]); step spans are its children.
    pub span: tracing::Span,
    pub journal: Journal,
    /// The instance's journal, to replay against.
    pub replay: Replay,
    /// Seed of the guest's randomness outside steps.
    pub seed: u64,
    /// Counts events sent to the instance.
    pub events: watch::Receiver<u64>,
    pub control: Arc<super::Control>,
    /// Starts child workflows, when something can.
    pub children: Option<Arc<dyn super::Children>>,
    pub policy: Arc<crate::durable::policy::Policy>,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
    /// The run permits of a server's instance, given back while it waits.
    pub admission: Option<Arc<dyn super::RunPermits>>,
    /// Replay only, to check a new version: write nothing.
    pub dry_run: bool,
}

impl Instance {
    pub fn new(o: InstanceOptions) -> Arc<Instance> {
        let InstanceOptions {
            id,
            workflow,
            span,
            journal,
            replay,
            seed,
            events,
            control,
            children,
            policy,
            progress,
            admission,
            dry_run,
        } = o;
        Arc::new(Instance {
            id,
            workflow,
            span,
            journal,
            control,
            children,
            policy,
            dry_run,
            admission,
            state: Mutex::new(State::new(replay, seed)),
            changed: Notify::new(),
            events,
            progress,
            stop: Default::default(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether journaled calls remain to be replayed.
    pub fn replaying(&self) -> bool {
        self.lock().replay.is_replaying()
    }

    /// Checks that the replay made every journaled call (used when `run`
    /// returns).
    pub fn check_finished(&self) -> Result<(), ErrorInfo> {
        self.lock()
            .replay
            .check_caught_up(None)
            .map_err(|e| e.into_error())
    }

    /// One step attempt ended: `Some(true)` succeeded, `Some(false)`
    /// failed and will be retried, `None` failed for good. Counts it in
    /// the metrics and logs it (debug, `weft::step`).
    pub fn attempt_ended(
        &self,
        running: Option<&RunningStep>,
        step: &str,
        attempt: u32,
        outcome: Option<bool>,
        took: Duration,
        error: Option<&ErrorInfo>,
    ) {
        crate::metrics::get().step_ended(&self.workflow, outcome, took);
        if let Some(r) = running {
            let (name, status) = match outcome {
                Some(true) => ("completed", "ok"),
                Some(false) => ("retried", "error"),
                None => ("failed", "error"),
            };
            r.span.record("outcome", name);
            r.span.record("otel.status_code", status);
            if let Some(e) = error {
                r.span.record("otel.status_description", e.to_string());
            }
        }
        tracing::debug!(
            target: "weft::step",
            workflow = %self.workflow,
            instance = %self.id,
            step,
            attempt,
            outcome = match outcome {
                Some(true) => "completed",
                Some(false) => "retried",
                None => "failed",
            },
            duration_ms = took.as_millis() as u64,
            error = error.map(|e| e.to_string()),
            "step attempt ended"
        );
    }

    pub(crate) fn report(&self, p: Progress) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(p);
        }
    }

    /// Records a workflow-ending error and returns the trap that unwinds the
    /// guest.
    pub(crate) fn fatal(&self, e: ErrorInfo) -> wasmtime::Error {
        let msg = e.to_string();
        let mut st = self.lock();
        if st.fatal.is_none() {
            st.fatal = Some(e);
        }
        wasmtime::format_err!(msg)
    }

    pub(crate) fn host_failure(&self, e: impl std::fmt::Display + 'static) -> wasmtime::Error {
        let fenced = matches!(
            (&e as &dyn std::any::Any).downcast_ref::<JournalError>(),
            Some(JournalError::Fenced(_))
        );
        let msg = format!("journal write failed: {e}");
        let mut st = self.lock();
        st.host_error.get_or_insert(msg.clone());
        st.fenced |= fenced;
        wasmtime::format_err!(msg)
    }

    /// Before a step's body runs: on a shared store, this host must still
    /// own the instance, and its lease must surely hold (else it waits for
    /// a renewal); a host that lost the instance runs nothing more of it.
    pub(crate) async fn may_run(&self) -> Result<()> {
        self.journal
            .may_run(&self.id)
            .await
            .map_err(|e| self.host_failure(e))
    }

    /// Waits until `wake_ms`, registered as a pending wait so the runner can
    /// evict the instance while it waits.
    pub(crate) async fn wait_until(&self, wake_ms: UnixMs, what: WaitFor) {
        let left = until_ms(wake_ms);
        if left.is_zero() {
            return;
        }
        let guard = self.register_wait(wake_ms, what);
        tokio::time::sleep(left).await;
        drop(guard);
        self.wait_over().await;
    }

    /// Called when a wait of a server's instance ends, before the guest goes
    /// on: takes the run permits back if the watchdog gave them up while
    /// the instance only waited.
    pub(crate) async fn wait_over(&self) {
        if let Some(a) = &self.admission {
            a.reacquire().await;
        }
    }

    /// The instance only waits: its run permits may serve another.
    pub(crate) fn waiting_only(&self) {
        if let Some(a) = &self.admission {
            a.release();
        }
    }

    /// Marks a host call as working until the guard drops.
    pub(crate) fn busy(&self) -> BusyGuard<'_> {
        self.lock().busy += 1;
        BusyGuard { inst: self }
    }

    pub(crate) fn register_wait(&self, wake_ms: UnixMs, what: WaitFor) -> WaitGuard<'_> {
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.waits.insert(id, PendingWait { wake_ms, what });
            id
        };
        self.changed.notify_one();
        WaitGuard { inst: self, id }
    }

    /// In a dry run, stops the guest where it would do new work or wait.
    pub(crate) fn dry_run_stop(&self) -> Result<()> {
        if self.dry_run {
            return Err(wasmtime::format_err!("dry run reached new work"));
        }
        Ok(())
    }

    /// In a dry run, a call that would wait waits forever (the replay
    /// check decides from the other calls).
    pub(crate) async fn dry_run_park(&self) {
        if self.dry_run {
            std::future::pending::<()>().await;
        }
    }

    /// The replay step of a durable call: its occurrence (how many calls of
    /// that name came before) and what the journal holds for it. A
    /// journaled call of another kind under that key is non-determinism,
    /// fatal to the run.
    pub(crate) fn journaled(&self, kind: Kind, name: &str) -> Result<(u32, Option<CallRecord>)> {
        let mut st = self.lock();
        let n = st.replay.occurrence(name);
        let rec = st.replay.take(kind, name, n);
        drop(st);
        Ok((n, rec.map_err(|e| self.fatal(e.into_error()))?))
    }

    /// The record step of a durable call the journal does not hold: once
    /// the guest has replayed all it can ([`Instance::catch_up`]), journals
    /// the entry `make(now)` builds, durably, and returns what `make` gave
    /// with it.
    pub(crate) async fn record<R>(
        &self,
        kind: Kind,
        name: &str,
        n: u32,
        make: impl FnOnce(UnixMs) -> (Entry, R),
    ) -> Result<R> {
        self.catch_up(kind, name, n).await?;
        let (entry, out) = make(now_ms());
        self.journal
            .append(&self.id, vec![entry])
            .await
            .map_err(|e| self.host_failure(e))?;
        Ok(out)
    }

    /// Before new work: let the guest finish replaying what it can, then
    /// check that no journaled call was skipped.
    pub(crate) async fn catch_up(&self, kind: Kind, name: &str, n: u32) -> Result<()> {
        // The first poll of a host call happens inside the guest's call;
        // yielding once lets the guest run until all its tasks are blocked,
        // which, on replay, means every journaled call reachable was made.
        // With nothing left to replay there is nothing to wait for.
        if self.replaying() {
            tokio::task::yield_now().await;
        }
        let r = self.lock().replay.check_caught_up(Some((kind, name, n)));
        r.map_err(|e| self.fatal(e.into_error()))?;
        self.dry_run_stop()?;
        self.check_pause()
    }

    /// Stops the guest at a durable call when a pause was requested.
    pub(crate) fn check_pause(&self) -> Result<()> {
        if self.control.pause_requested() {
            self.lock().paused = true;
            return Err(wasmtime::format_err!("instance paused"));
        }
        Ok(())
    }

    pub(crate) fn nondet(
        &self,
        probe: fn(&Nondet) -> bool,
        live: impl FnOnce() -> Nondet,
    ) -> Nondet {
        let mut st = self.lock();
        if !st.running.is_empty() {
            // Inside a step body: the step's result is what is journaled.
            return live();
        }
        if let Some(v) = st.replay.next_nondet(probe) {
            return v;
        }
        let v = live();
        drop(st);
        if !self.dry_run {
            self.journal
                .append_lazy(&self.id, vec![Entry::Nondet { value: v.clone() }]);
        }
        v
    }
}

pub(crate) struct BusyGuard<'a> {
    inst: &'a Instance,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.inst.lock().busy -= 1;
        self.inst.changed.notify_one();
    }
}

pub(crate) struct WaitGuard<'a> {
    inst: &'a Instance,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.inst.lock().waits.remove(&self.id);
        self.inst.changed.notify_one();
    }
}
