//! The `weft:workflow/durable` host interface and the per-instance state
//! behind it: replay matching, journaling, waits, `fetch` and secrets, and
//! the journaled WASI clocks and randomness.
//!
//! This layer sits on the replay index and the journal; what it needs from
//! the layers above (who starts child workflows, the run permits a waiting
//! instance gives back, operator requests) are the traits and types of
//! [`control`], which the runner implements.
//!
//! Store data is [`HostState`]; the durable interface reads it through the
//! [`Durable`] projection. Everything that must outlive one host call (the
//! replay index, pending waits, running steps) lives in [`Instance`], shared
//! with the runner's watchdog.

use std::sync::Arc;

use wasmtime::Result;
use wasmtime::component::{Accessor, HasData, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::types::{
    self as wit, StepConfig, StepOutcome, StepRun, StepStart, StepVerdict,
};
use crate::bindings::weft::workflow::durable;
use crate::journal::ErrorInfo;
use crate::replay::{CallRecord, Kind};

mod child;
mod control;
mod convert;
pub mod cpu;
pub mod fetch;
mod instance;
mod limits;
mod output;
pub mod policy;
pub mod shared;
mod steps;
pub mod stop;
mod sync;
mod waits;
mod wasi;
mod wasi_http;

pub use child::child_id;
pub use control::{BoxFuture, Children, Control, RunPermits};
pub use convert::next_retry_ms;
use convert::to_wit;
pub use cpu::Charged;
use instance::StepHandle;
pub use instance::{Instance, InstanceOptions, PendingWait, Progress, RunningStep, State, WaitFor};
pub use limits::{MemoryLimiter, exceeded as memory_limit_exceeded, name_memory_error};
use output::GuestOutput;
pub(crate) use steps::check_result;
use steps::start_attempt;
use wasi::{InstanceRandom, JournaledClock, JournaledMonotonic};

/// Default wait-for-event timeout: 24 hours.
pub const DEFAULT_EVENT_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Longest sleep: 365 days.
pub const MAX_SLEEP_MS: u64 = 365 * 24 * 3600 * 1000;

/// The data of every store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_hooks: wasi_http::HttpHooks,
    durable: DurableCtx,
    /// Enforces the memory limit and remembers that it was hit.
    pub limiter: MemoryLimiter,
}

impl HostState {
    /// The instance this store runs; in a shared store, a placeholder
    /// (see [`HostState::shared`]).
    pub fn instance(&self) -> &Arc<Instance> {
        &self.durable.inst
    }

    /// The run the guest runs code of now ([`shared::CurrentRun`]).
    pub fn current(&self) -> Option<Arc<Instance>> {
        self.durable.current.get()
    }
}

impl HostState {
    /// Builds the store data for one run of `inst`: WASI with journaled
    /// clocks and randomness, guest output suppressed while replaying.
    /// With `live_monotonic`, the monotonic clock is not journaled: the
    /// guest's runtime reads it for its own timers only.
    pub fn new(inst: Arc<Instance>, seed: u64, live_monotonic: bool) -> HostState {
        let current = shared::CurrentRun::of(inst.clone());
        Self::with_current(inst, current, seed, live_monotonic)
    }

    /// Builds the data of a store whose runs share its instance
    /// (`isolation = "shared"`): WASI reads and output are those of the run
    /// the guest says it runs. `placeholder` gives the store its policy
    /// and answers `durable` calls, which a shared guest must not make
    /// (it replays nothing and writes nothing).
    pub fn shared(placeholder: Arc<Instance>, seed: u64) -> HostState {
        let current = Arc::new(shared::CurrentRun::default());
        Self::with_current(placeholder, current, seed, false)
    }

    fn with_current(
        inst: Arc<Instance>,
        current: Arc<shared::CurrentRun>,
        seed: u64,
        live_monotonic: bool,
    ) -> HostState {
        let mut b = WasiCtx::builder();
        let memory_hit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let budget = output::Budget::new();
        b.stdout(GuestOutput {
            current: current.clone(),
            budget: budget.clone(),
        })
        .stderr(GuestOutput {
            current: current.clone(),
            budget,
        })
        .wall_clock(JournaledClock(current.clone()));
        if !live_monotonic {
            b.monotonic_clock(JournaledMonotonic(current.clone()));
        }
        b.secure_random(InstanceRandom(current.clone()))
            .insecure_random(InstanceRandom(current.clone()))
            .insecure_random_seed(seed as u128 | ((seed as u128) << 64));
        HostState {
            wasi: b.build(),
            table: ResourceTable::new(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks: wasi_http::HttpHooks {
                current: current.clone(),
            },
            limiter: MemoryLimiter {
                max_bytes: inst.policy.limits.memory_bytes,
                hit: memory_hit.clone(),
            },
            durable: DurableCtx {
                inst,
                configs: Vec::new(),
                memory_hit,
                ops: sync::Ops::default(),
                runs: Default::default(),
                current,
            },
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

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// The durable interface's view of the store.
pub struct DurableCtx {
    inst: Arc<Instance>,
    /// Step configs kept for `step-begin-with`, by id.
    configs: Vec<StepConfig>,
    /// Whether the store's memory limiter refused memory.
    memory_hit: Arc<std::sync::atomic::AtomicBool>,
    /// Operations of `durable-sync` in flight.
    ops: sync::Ops,
    /// The runs of a shared store, by `run` resource.
    runs: shared::Runs,
    /// The run the guest runs code of now.
    current: Arc<shared::CurrentRun>,
}

impl Drop for DurableCtx {
    fn drop(&mut self) {
        self.ops_done();
    }
}

impl DurableCtx {
    fn memory_hit(&self) -> bool {
        self.memory_hit.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Most step configs one instance may keep (`register-step-config`).
const MAX_STEP_CONFIGS: usize = 1024;

fn same_config(a: &StepConfig, b: &StepConfig) -> bool {
    a.timeout_ms == b.timeout_ms
        && a.retries.limit == b.retries.limit
        && a.retries.delay_ms == b.retries.delay_ms
        && a.retries.backoff == b.retries.backoff
}

/// [`HasData`] projection for the durable interface.
pub struct Durable;

impl HasData for Durable {
    type Data<'a> = &'a mut DurableCtx;
}

/// Adds `weft:workflow/durable` to a linker.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    durable::add_to_linker::<HostState, Durable>(linker, |s| &mut s.durable)?;
    sync::add_to_linker(linker)?;
    shared::add_to_linker(linker)?;
    Ok(())
}

fn instance_of<T>(accessor: &Accessor<T, Durable>) -> Arc<Instance> {
    accessor.with(|mut a| a.get().inst.clone())
}

/// Longest error detail kept, in bytes.
const MAX_ERROR_DETAIL: usize = 16 << 10;

impl durable::Host for DurableCtx {
    fn error_detail(&mut self, mut detail: String) -> Result<()> {
        if detail.len() > MAX_ERROR_DETAIL {
            let mut end = MAX_ERROR_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
            detail.push_str("\n…");
        }
        self.inst.lock().error_detail = Some(detail);
        Ok(())
    }

    fn panicked(&mut self, step: Option<u64>, mut message: String) -> Result<()> {
        if message.len() > MAX_ERROR_DETAIL {
            let mut end = MAX_ERROR_DETAIL;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self.inst.lock().panic = Some((step, message));
        Ok(())
    }

    fn running_step(&mut self, step: Option<u64>) -> Result<()> {
        let mut st = self.inst.lock();
        st.marks_steps = true;
        st.current = step;
        Ok(())
    }

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

    fn register_step_config(&mut self, config: StepConfig) -> Result<u32> {
        if let Some(id) = self.configs.iter().position(|c| same_config(c, &config)) {
            return Ok(id as u32);
        }
        if self.configs.len() >= MAX_STEP_CONFIGS {
            return Err(self.inst.fatal(ErrorInfo::new(
                "TooManyStepConfigs",
                format!(
                    "the instance registered more than {MAX_STEP_CONFIGS} different step configs"
                ),
            )));
        }
        self.configs.push(config);
        Ok(self.configs.len() as u32 - 1)
    }

    fn step_begin_with(&mut self, name: String, config: u32) -> Result<StepStart> {
        let Some(config) = self.configs.get(config as usize).copied() else {
            return Err(self.inst.fatal(ErrorInfo::new(
                "UnknownStepConfig",
                format!(
                    "step `{name}` was begun with step config {config}, which was not registered"
                ),
            )));
        };
        self.step_begin(name, config)
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
        // With nothing left to replay and no backoff pending, `step-ready`
        // would return at once: start the attempt here and spare the guest
        // that async call.
        // On a shared store, a step whose host must first confirm its lease
        // starts in `step-ready`, which may wait.
        let start_now = not_before.is_none()
            && !st.replay.is_replaying()
            && !inst.dry_run
            && inst.journal.may_run_now(&inst.id);
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
        drop(st);
        if start_now {
            inst.check_pause()?;
            start_attempt(inst, handle);
        }
        Ok(StepStart::Run(StepRun {
            handle,
            attempt,
            started: start_now,
        }))
    }
}

impl<T> durable::HostWithStore<T> for Durable {
    async fn step_ready(accessor: &Accessor<T, Self>, handle: u64) -> Result<()> {
        steps::step_ready(instance_of(accessor), handle).await
    }

    async fn step_end(
        accessor: &Accessor<T, Self>,
        handle: u64,
        outcome: StepOutcome,
    ) -> Result<StepVerdict> {
        let (inst, memory_hit) = accessor.with(|mut a| {
            let d = a.get();
            (d.inst.clone(), d.memory_hit())
        });
        steps::step_end(inst, memory_hit, handle, outcome).await
    }

    async fn run_workflow(
        accessor: &Accessor<T, Self>,
        name: String,
        workflow: String,
        params: String,
    ) -> Result<Result<String, wit::ErrorInfo>> {
        child::run_workflow(instance_of(accessor), name, workflow, params).await
    }

    async fn fetch(
        accessor: &Accessor<T, Self>,
        request: wit::HttpRequest,
    ) -> Result<Result<wit::HttpResponse, wit::FetchError>> {
        let inst = instance_of(accessor);
        Ok(fetch::fetch(&inst, request).await)
    }

    async fn delay(_accessor: &Accessor<T, Self>, duration_ms: u64) -> Result<()> {
        waits::delay(duration_ms).await;
        Ok(())
    }

    async fn sleep(accessor: &Accessor<T, Self>, name: String, duration_ms: u64) -> Result<()> {
        waits::sleep_for(&instance_of(accessor), name, duration_ms).await
    }

    async fn sleep_until(accessor: &Accessor<T, Self>, name: String, unix_ms: u64) -> Result<()> {
        waits::sleep_until(&instance_of(accessor), name, unix_ms).await
    }

    async fn wait_for_event(
        accessor: &Accessor<T, Self>,
        name: String,
        event_type: String,
        timeout_ms: Option<u64>,
    ) -> Result<Result<wit::Event, wit::WaitError>> {
        let inst = instance_of(accessor);
        waits::wait_for_event(&inst, name, event_type, timeout_ms).await
    }
}
