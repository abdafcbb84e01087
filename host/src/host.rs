//! The `weft:workflow/durable` host interface and the per-instance state
//! behind it: replay matching, journaling, waits and the journaled WASI
//! clocks and randomness.
//!
//! Store data is [`HostState`]; the durable interface reads it through the
//! [`Durable`] projection. Everything that must outlive one host call (the
//! replay index, pending waits, running steps) lives in [`Instance`], shared
//! with the runner's watchdog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, watch};
use wasmtime::Result;
use wasmtime::component::{Accessor, HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::types::{
    self as wit, Backoff as WitBackoff, StepConfig, StepOutcome, StepRun, StepStart, StepVerdict,
};
use crate::bindings::weft::workflow::durable;
use crate::journal::{
    AttemptResult, Entry, ErrorInfo, Journal, MAX_PAYLOAD_BYTES, Nondet, UnixMs, WaitResult, now_ms,
};
use crate::replay::{Backoff, CallRecord, Kind, Replay, retry_delay_ms};

/// Default wait-for-event timeout: 24 hours.
pub const DEFAULT_EVENT_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest sleep: 365 days.
pub const MAX_SLEEP_MS: u64 = 365 * 24 * 3600 * 1000;

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
}

struct StepHandle {
    name: String,
    n: u32,
    attempt: u32,
    config: StepConfig,
    not_before: Option<UnixMs>,
    started_ms: UnixMs,
}

/// Mutable state of one instance run.
pub struct State {
    pub replay: Replay,
    handles: HashMap<u64, StepHandle>,
    next_id: u64,
    pub running: HashMap<u64, RunningStep>,
    pub waits: HashMap<u64, PendingWait>,
    /// Host calls doing work right now (journal writes, replay checks); an
    /// instance is never evicted while one is.
    pub busy: usize,
    /// The generator behind the guest's randomness outside steps.
    rng: rand::rngs::StdRng,
    /// Set when the instance must end as `errored` (non-determinism).
    pub fatal: Option<ErrorInfo>,
    /// Set when the host failed (journal I/O); the instance stays resumable.
    pub host_error: Option<String>,
    /// Set when the instance stopped at a durable call because a pause was
    /// requested.
    pub paused: bool,
    /// Steps begun in this run (replayed or new).
    pub steps: u64,
    /// Epoch ticks the workflow body ran while no step body was running.
    pub body_ticks: u64,
}

/// One instance run: shared by the store's host calls and the runner.
pub struct Instance {
    pub id: String,
    pub journal: Journal,
    pub state: Mutex<State>,
    /// Signalled whenever running steps or pending waits change.
    pub changed: Notify,
    /// Counts events sent to this instance.
    pub events: watch::Receiver<u64>,
    /// Operator requests (pause).
    pub control: Arc<crate::runner::Control>,
    /// Starts child workflows, when a server runs this instance.
    pub children: Option<Arc<dyn crate::runner::Children>>,
    /// What the workflow may do (hosts, secrets, limits).
    pub policy: Arc<crate::policy::Policy>,
    /// Replay only, to check a new version: stop before any new work or
    /// wait, and write nothing.
    pub dry_run: bool,
    pub progress: Option<mpsc::UnboundedSender<Progress>>,
}

impl Instance {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        journal: Journal,
        replay: Replay,
        seed: u64,
        events: watch::Receiver<u64>,
        control: Arc<crate::runner::Control>,
        children: Option<Arc<dyn crate::runner::Children>>,
        policy: Arc<crate::policy::Policy>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Arc<Instance> {
        Arc::new(Instance {
            id,
            journal,
            control,
            children,
            policy,
            dry_run: false,
            state: Mutex::new(State {
                replay,
                handles: HashMap::new(),
                next_id: 0,
                running: HashMap::new(),
                waits: HashMap::new(),
                busy: 0,
                rng: rand::SeedableRng::seed_from_u64(seed),
                fatal: None,
                host_error: None,
                paused: false,
                steps: 0,
                body_ticks: 0,
            }),
            changed: Notify::new(),
            events,
            progress,
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

    fn report(&self, p: Progress) {
        if let Some(tx) = &self.progress {
            let _ = tx.send(p);
        }
    }

    /// Records a workflow-ending error and returns the trap that unwinds the
    /// guest.
    fn fatal(&self, e: ErrorInfo) -> wasmtime::Error {
        let msg = e.to_string();
        let mut st = self.lock();
        if st.fatal.is_none() {
            st.fatal = Some(e);
        }
        wasmtime::format_err!(msg)
    }

    fn host_failure(&self, e: impl std::fmt::Display) -> wasmtime::Error {
        let msg = format!("journal write failed: {e}");
        self.lock().host_error.get_or_insert(msg.clone());
        wasmtime::format_err!(msg)
    }

    /// Waits until `wake_ms`, registered as a pending wait so the runner can
    /// evict the instance while it waits.
    async fn wait_until(&self, wake_ms: UnixMs, what: WaitFor) {
        let now = now_ms();
        if wake_ms <= now {
            return;
        }
        let _guard = self.register_wait(wake_ms, what);
        tokio::time::sleep(Duration::from_millis(wake_ms - now)).await;
    }

    /// Marks a host call as working until the guard drops.
    fn busy(&self) -> BusyGuard<'_> {
        self.lock().busy += 1;
        BusyGuard { inst: self }
    }

    fn register_wait(&self, wake_ms: UnixMs, what: WaitFor) -> WaitGuard<'_> {
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
    fn dry_run_stop(&self) -> Result<()> {
        if self.dry_run {
            return Err(wasmtime::format_err!("dry run reached new work"));
        }
        Ok(())
    }

    /// In a dry run, a call that would wait waits forever (the replay
    /// check decides from the other calls).
    async fn dry_run_park(&self) {
        if self.dry_run {
            std::future::pending::<()>().await;
        }
    }

    /// Before new work: let the guest finish replaying what it can, then
    /// check that no journaled call was skipped.
    async fn catch_up(&self, kind: Kind, name: &str, n: u32) -> Result<()> {
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
    fn check_pause(&self) -> Result<()> {
        if self.control.pause_requested() {
            self.lock().paused = true;
            return Err(wasmtime::format_err!("instance paused"));
        }
        Ok(())
    }

    fn nondet(&self, probe: fn(&Nondet) -> bool, live: impl FnOnce() -> Nondet) -> Nondet {
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

struct BusyGuard<'a> {
    inst: &'a Instance,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.inst.lock().busy -= 1;
        self.inst.changed.notify_one();
    }
}

struct WaitGuard<'a> {
    inst: &'a Instance,
    id: u64,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.inst.lock().waits.remove(&self.id);
        self.inst.changed.notify_one();
    }
}

/// The data of every store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    durable: DurableCtx,
    /// Enforces the memory limit and remembers that it was hit.
    pub limiter: MemoryLimiter,
}

/// Caps linear memory and tables; records when a guest asked for more.
pub struct MemoryLimiter {
    pub max_bytes: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

impl HostState {
    /// The instance this store runs.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.durable.inst
    }
}

impl HostState {
    /// Builds the store data for one run of `inst`: WASI with journaled
    /// clocks and randomness, guest output suppressed while replaying.
    pub fn new(inst: Arc<Instance>, seed: u64) -> HostState {
        let mut b = WasiCtx::builder();
        b.stdout(GuestOutput(inst.clone()))
            .stderr(GuestOutput(inst.clone()))
            .wall_clock(JournaledClock(inst.clone()))
            .monotonic_clock(JournaledMonotonic(inst.clone()))
            .secure_random(InstanceRandom(inst.clone()))
            .insecure_random(InstanceRandom(inst.clone()))
            .insecure_random_seed(seed as u128 | ((seed as u128) << 64));
        HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                max_bytes: inst.policy.limits.memory_bytes,
                hit: false,
            },
            durable: DurableCtx { inst },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The durable interface's view of the store.
pub struct DurableCtx {
    inst: Arc<Instance>,
}

/// [`HasData`] projection for the durable interface.
pub struct Durable;

impl HasData for Durable {
    type Data<'a> = &'a mut DurableCtx;
}

/// Adds `weft:workflow/durable` to a linker.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    durable::add_to_linker::<HostState, Durable>(linker, |s| &mut s.durable)?;
    Ok(())
}

fn instance_of<T>(accessor: &Accessor<T, Durable>) -> Arc<Instance> {
    accessor.with(|mut a| a.get().inst.clone())
}

fn to_wit(e: ErrorInfo) -> wit::ErrorInfo {
    wit::ErrorInfo {
        name: e.name,
        message: e.message,
    }
}

fn from_wit(e: wit::ErrorInfo) -> ErrorInfo {
    ErrorInfo::new(e.name, e.message)
}

fn wait_result(r: WaitResult) -> Result<wit::Event, wit::WaitError> {
    match r {
        WaitResult::Delivered { event } => Ok(wit::Event {
            event_type: event.event_type,
            payload: event.payload.to_string(),
            timestamp_ms: event.timestamp_ms,
        }),
        WaitResult::TimedOut => Err(wit::WaitError::Timeout),
    }
}

fn backoff(b: WitBackoff) -> Backoff {
    match b {
        WitBackoff::Constant => Backoff::Constant,
        WitBackoff::Linear => Backoff::Linear,
        WitBackoff::Exponential => Backoff::Exponential,
    }
}

/// When the next attempt after failed attempt `attempt` may start, or
/// `None` when the retries are used up.
pub fn next_retry_ms(retries: &wit::RetryPolicy, attempt: u32, now: UnixMs) -> Option<UnixMs> {
    (attempt <= retries.limit).then(|| {
        now.saturating_add(retry_delay_ms(
            retries.delay_ms,
            backoff(retries.backoff),
            attempt,
        ))
    })
}

impl durable::Host for DurableCtx {
    fn secret(&mut self, name: String) -> Result<Result<String, wit::ErrorInfo>> {
        let inst = &self.inst;
        if inst.lock().running.is_empty() {
            return Ok(Err(wit::ErrorInfo {
                name: "NotInStep".into(),
                message: format!(
                    "secret(\"{name}\") was called outside a step body; read secrets inside steps"
                ),
            }));
        }
        Ok(inst.policy.secrets.get(&name).cloned().ok_or_else(|| wit::ErrorInfo {
            name: "UnknownSecret".into(),
            message: format!("the workflow has no secret named `{name}` (add it under [workflows.NAME.secrets] in weft.toml)"),
        }))
    }

    fn step_begin(&mut self, name: String, config: StepConfig) -> Result<StepStart> {
        let inst = &self.inst;
        let mut st = inst.lock();
        st.steps += 1;
        if st.steps > inst.policy.limits.max_steps {
            drop(st);
            return Err(inst.fatal(ErrorInfo::new(
                "StepLimitExceeded",
                format!(
                    "the instance began more than {} steps (limit `max_steps`)",
                    inst.policy.limits.max_steps
                ),
            )));
        }
        let n = st.replay.occurrence(&name);
        let (attempt, not_before) = match st.replay.take(Kind::Step, &name, n) {
            Err(e) => {
                drop(st);
                return Err(inst.fatal(e.into_error()));
            }
            Ok(Some(CallRecord::Step {
                outcome: Some(outcome),
                ..
            })) => {
                return Ok(StepStart::Cached(
                    outcome.map(|v| v.to_string()).map_err(to_wit),
                ));
            }
            Ok(Some(CallRecord::Step {
                attempts, retry_ms, ..
            })) => (attempts + 1, retry_ms),
            Ok(_) => (1, None),
        };
        st.next_id += 1;
        let handle = st.next_id;
        st.handles.insert(
            handle,
            StepHandle {
                name,
                n,
                attempt,
                config,
                not_before,
                started_ms: 0,
            },
        );
        Ok(StepStart::Run(StepRun { handle, attempt }))
    }
}

impl<T> durable::HostWithStore<T> for Durable {
    async fn step_ready(accessor: &Accessor<T, Self>, handle: u64) -> Result<()> {
        let inst = instance_of(accessor);
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
        start_attempt(&inst, handle);
        Ok(())
    }

    async fn step_end(
        accessor: &Accessor<T, Self>,
        handle: u64,
        outcome: StepOutcome,
    ) -> Result<StepVerdict> {
        let inst = instance_of(accessor);
        let busy = inst.busy();
        let (name, n, attempt, started_ms, retries) = {
            let mut st = inst.lock();
            st.running.remove(&handle);
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
            )
        };
        inst.changed.notify_one();
        let ended_ms = now_ms();
        let policy = inst.policy.clone();
        let outcome = match outcome {
            StepOutcome::Ok(json) if policy.leaks(&json) => StepOutcome::Ok(policy.redact(&json)),
            StepOutcome::Err(e) => StepOutcome::Err(to_wit(policy.redact_error(from_wit(e)))),
            StepOutcome::NonRetryable(e) => {
                StepOutcome::NonRetryable(to_wit(policy.redact_error(from_wit(e))))
            }
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

    async fn run_workflow(
        accessor: &Accessor<T, Self>,
        name: String,
        workflow: String,
        params: String,
    ) -> Result<Result<String, wit::ErrorInfo>> {
        let inst = instance_of(accessor);
        run_child(&inst, name, workflow, params)
            .await
            .map(|r| r.map(|v| v.to_string()).map_err(to_wit))
    }

    async fn fetch(
        accessor: &Accessor<T, Self>,
        request: wit::HttpRequest,
    ) -> Result<Result<wit::HttpResponse, wit::FetchError>> {
        let inst = instance_of(accessor);
        Ok(crate::fetch::fetch(&inst, request).await)
    }

    async fn delay(_accessor: &Accessor<T, Self>, duration_ms: u64) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(duration_ms.min(MAX_SLEEP_MS))).await;
        Ok(())
    }

    async fn sleep(accessor: &Accessor<T, Self>, name: String, duration_ms: u64) -> Result<()> {
        let inst = instance_of(accessor);
        durable_sleep(&inst, name, |now| {
            now.saturating_add(duration_ms.min(MAX_SLEEP_MS))
        })
        .await
    }

    async fn sleep_until(accessor: &Accessor<T, Self>, name: String, unix_ms: u64) -> Result<()> {
        let inst = instance_of(accessor);
        durable_sleep(&inst, name, |now| {
            unix_ms.min(now.saturating_add(MAX_SLEEP_MS))
        })
        .await
    }

    async fn wait_for_event(
        accessor: &Accessor<T, Self>,
        name: String,
        event_type: String,
        timeout_ms: Option<u64>,
    ) -> Result<Result<wit::Event, wit::WaitError>> {
        let inst = instance_of(accessor);
        let busy = inst.busy();
        let (n, rec) = {
            let mut st = inst.lock();
            let n = st.replay.occurrence(&name);
            (n, st.replay.take(Kind::Wait, &name, n))
        };
        let deadline_ms = match rec.map_err(|e| inst.fatal(e.into_error()))? {
            Some(CallRecord::Wait {
                result: Some(r), ..
            }) => return Ok(wait_result(r)),
            Some(CallRecord::Wait { deadline_ms, .. }) => deadline_ms,
            _ => {
                inst.catch_up(Kind::Wait, &name, n).await?;
                let now = now_ms();
                let deadline_ms =
                    now.saturating_add(timeout_ms.unwrap_or(DEFAULT_EVENT_TIMEOUT_MS));
                inst.journal
                    .append(
                        &inst.id,
                        vec![Entry::WaitStart {
                            name: name.clone(),
                            n,
                            event_type: event_type.clone(),
                            started_ms: now,
                            deadline_ms,
                        }],
                    )
                    .await
                    .map_err(|e| inst.host_failure(e))?;
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
            let left = deadline_ms.saturating_sub(now_ms());
            tokio::select! {
                _ = events.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(left)) => {}
            }
        }
    }
}

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

async fn run_child(
    inst: &Instance,
    name: String,
    workflow: String,
    params: String,
) -> Result<Result<serde_json::Value, ErrorInfo>> {
    use crate::journal::ChildResult;
    let busy = inst.busy();
    let (n, rec) = {
        let mut st = inst.lock();
        let n = st.replay.occurrence(&name);
        (n, st.replay.take(Kind::Child, &name, n))
    };
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
    let child = match rec.map_err(|e| inst.fatal(e.into_error()))? {
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
            return Ok(to_result(result));
        }
        let _guard = inst.register_wait(u64::MAX, WaitFor::Child(child.clone()));
        drop(busy);
        let _ = events.changed().await;
    }
}

fn start_attempt(inst: &Instance, handle: u64) {
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
    };
    st.running.insert(handle, running);
    drop(st);
    inst.changed.notify_one();
}

/// Validates a step's result: JSON, at most 1 MiB.
fn check_result(name: &str, json: String) -> Result<serde_json::Value, ErrorInfo> {
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

async fn durable_sleep(
    inst: &Instance,
    name: String,
    wake: impl FnOnce(UnixMs) -> UnixMs,
) -> Result<()> {
    let busy = inst.busy();
    let (n, rec) = {
        let mut st = inst.lock();
        let n = st.replay.occurrence(&name);
        (n, st.replay.take(Kind::Sleep, &name, n))
    };
    let wake_ms = match rec.map_err(|e| inst.fatal(e.into_error()))? {
        Some(CallRecord::Sleep { wake_ms }) => wake_ms,
        _ => {
            inst.catch_up(Kind::Sleep, &name, n).await?;
            let now = now_ms();
            let wake_ms = wake(now);
            inst.journal
                .append(
                    &inst.id,
                    vec![Entry::Sleep {
                        name: name.clone(),
                        n,
                        started_ms: now,
                        wake_ms,
                    }],
                )
                .await
                .map_err(|e| inst.host_failure(e))?;
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

// ---- journaled WASI clocks, randomness and replay-aware output ----

fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct JournaledClock(Arc<Instance>);

impl wasmtime_wasi::HostWallClock for JournaledClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        match self.0.nondet(
            |v| matches!(v, Nondet::WallClock { .. }),
            || Nondet::WallClock {
                nanos: wall_nanos(),
            },
        ) {
            Nondet::WallClock { nanos } => Duration::from_nanos(nanos),
            _ => Duration::from_nanos(wall_nanos()),
        }
    }
}

/// Monotonic time as nanoseconds since the Unix epoch, so that it keeps
/// increasing across host restarts and replays.
struct JournaledMonotonic(Arc<Instance>);

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        match self.0.nondet(
            |v| matches!(v, Nondet::MonotonicClock { .. }),
            || Nondet::MonotonicClock {
                nanos: wall_nanos(),
            },
        ) {
            Nondet::MonotonicClock { nanos } => nanos,
            _ => wall_nanos(),
        }
    }
}

/// Randomness for the guest. Outside step bodies it comes from a
/// generator seeded by the instance's seed (fixed at creation, stored in the
/// instance record), so a replay that makes the same reads sees the same
/// bytes without a journal entry per read (Python reads thousands of bytes
/// at start-up). Inside step bodies it is live.
struct InstanceRandom(Arc<Instance>);

impl InstanceRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut st = self.0.lock();
        if st.running.is_empty() {
            rand::Rng::fill_bytes(&mut st.rng, buf);
        } else {
            drop(st);
            rand::fill(buf);
        }
    }
}

impl rand::TryRng for InstanceRandom {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}

/// Guest stdout and stderr: forwarded to the host's stderr (weft's stdout
/// carries the workflow output), dropped while the guest is replaying.
struct GuestOutput(Arc<Instance>);

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(ReplayAwareWriter {
            inst: self.0.clone(),
            pending: Vec::new(),
        })
    }
}

/// Writes whole lines only, so guest output never splits a line of weft's
/// own progress output on the shared stderr.
struct ReplayAwareWriter {
    inst: Arc<Instance>,
    pending: Vec<u8>,
}

impl ReplayAwareWriter {
    fn emit(&mut self, all: bool) {
        let end = if all {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        let chunk: Vec<u8> = self.pending.drain(..end).collect();
        if !chunk.is_empty() && !self.inst.replaying() {
            use std::io::Write;
            let text = String::from_utf8_lossy(&chunk);
            let text = self.inst.policy.redact(&text);
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

impl Drop for ReplayAwareWriter {
    fn drop(&mut self) {
        self.emit(true);
    }
}

impl tokio::io::AsyncWrite for ReplayAwareWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        // A line longer than 64 KiB is written as is.
        let all = self.pending.len() > 64 * 1024;
        self.emit(all);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.emit(true);
        std::task::Poll::Ready(Ok(()))
    }
}
