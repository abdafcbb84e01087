//! `weft:workflow/shared`: runs that share a component instance
//! (`isolation = "shared"`). Each run is a `run` resource whose methods are
//! the durable calls of that run's [`Instance`]; the store's data keeps the
//! instances by resource.
//!
//! A failure of one run must not trap the store, which would take the other
//! runs down with it: where a durable call of the default mode traps (a
//! non-determinism error, a pause, a journal failure), a run's call stops
//! the run instead ([`super::stop`]) and the guest unwinds it. Calls of a
//! stopped run do nothing and return at once.

use std::future::Future;
use std::sync::{Arc, Mutex};

use wasmtime::Result;
use wasmtime::component::{Accessor, Linker, Resource};

use super::{DurableCtx, HostState, Instance, child, fetch, steps, waits};
use crate::bindings::shared::weft::workflow::shared;
use crate::bindings::types::{self as wit, StepConfig, StepOutcome, StepStart, StepVerdict};
use crate::bindings::weft::workflow::durable::Host as Durable;

/// The host side of a `run` resource (its rep keys [`Runs`]).
pub struct SharedRun;

/// The run the guest runs code of now, as it last said (`resume`,
/// `running-step`): WASI's clocks, randomness and output, and the CPU
/// time the store's epoch callback measures, are that run's. A store of
/// one instance has that instance here for good.
#[derive(Default)]
pub struct CurrentRun(Mutex<Option<Arc<Instance>>>);

impl CurrentRun {
    pub fn of(inst: Arc<Instance>) -> Arc<CurrentRun> {
        Arc::new(CurrentRun(Mutex::new(Some(inst))))
    }

    pub fn get(&self) -> Option<Arc<Instance>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, inst: Option<Arc<Instance>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = inst;
    }
}

/// The runs of a shared store, by resource rep.
#[derive(Default)]
pub(super) struct Runs {
    next: u32,
    live: std::collections::HashMap<u32, (Arc<Instance>, crate::metrics::Held)>,
}

/// Adds `weft:workflow/shared` to a linker.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    shared::add_to_linker::<HostState, super::Durable>(linker, |s| &mut s.durable)?;
    Ok(())
}

impl HostState {
    /// Makes the `run` resource of `inst`, to pass to `run-shared`.
    pub fn add_run(&mut self, inst: Arc<Instance>) -> Resource<SharedRun> {
        let runs = &mut self.durable.runs;
        runs.next = runs.next.wrapping_add(1);
        while runs.live.contains_key(&runs.next) {
            runs.next = runs.next.wrapping_add(1);
        }
        let held = crate::metrics::Held::new(&crate::metrics::get().shared_runs);
        runs.live.insert(runs.next, (inst, held));
        Resource::new_own(runs.next)
    }
}

/// What a run's call returns once the run is stopped: never acted on (the
/// guest checks `resume` first) and never journaled.
fn stopped_error() -> wit::ErrorInfo {
    wit::ErrorInfo {
        name: "RunStopped".into(),
        message: "the host stopped this run".into(),
    }
}

/// Runs one durable call of `inst`: at once with `filler` if the run is
/// stopped or stops meanwhile; a failure stops the run (its reason is in
/// the instance's state, as in the default mode) instead of trapping.
async fn call<T>(
    inst: Arc<Instance>,
    filler: impl FnOnce() -> T,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    if inst.stop.is_stopped() {
        return Ok(filler());
    }
    let _call = inst.stop.call();
    // The work first: the stop's future is only made and polled while the
    // work waits.
    let r = tokio::select! {
        biased;
        r = work => r,
        _ = inst.stop.stopped() => return Ok(filler()),
    };
    r.or_else(|e| {
        stop_for(&inst, e);
        Ok(filler())
    })
}

/// Stops `inst` for the error `e` a call failed with. Errors that say
/// nothing of themselves in the instance's state are kept as host errors.
fn stop_for(inst: &Instance, e: wasmtime::Error) {
    tracing::debug!(instance = %inst.id, "a call of the run failed: {e:#}");
    {
        let mut st = inst.lock();
        if st.fatal.is_none() && st.host_error.is_none() && !st.paused && !st.fenced {
            st.host_error = Some(format!("{e:#}"));
        }
    }
    inst.stop.stop();
}

impl DurableCtx {
    fn run_of(&self, run: &Resource<SharedRun>) -> Result<Arc<Instance>> {
        self.runs
            .live
            .get(&run.rep())
            .map(|(i, _)| i.clone())
            .ok_or_else(|| wasmtime::format_err!("unknown run resource {}", run.rep()))
    }

    /// Makes a synchronous durable call of `durable` for the run `run`.
    fn sync_call<T>(
        &mut self,
        run: &Resource<SharedRun>,
        filler: impl FnOnce() -> T,
        f: impl FnOnce(&mut DurableCtx) -> Result<T>,
    ) -> Result<T> {
        let inst = self.run_of(run)?;
        if inst.stop.is_stopped() {
            return Ok(filler());
        }
        // The calls of `durable` act on `self.inst`: point it at the run.
        let own = std::mem::replace(&mut self.inst, inst.clone());
        let r = f(self);
        self.inst = own;
        r.or_else(|e| {
            stop_for(&inst, e);
            Ok(filler())
        })
    }
}

fn stopped_start() -> StepStart {
    StepStart::Cached(Err(stopped_error()))
}

impl shared::Host for DurableCtx {}

impl shared::HostRun for DurableCtx {
    fn step_begin(
        &mut self,
        run: Resource<SharedRun>,
        name: String,
        config: StepConfig,
    ) -> Result<StepStart> {
        self.sync_call(&run, stopped_start, |d| {
            Durable::step_begin(d, name, config)
        })
    }

    fn register_step_config(
        &mut self,
        run: Resource<SharedRun>,
        config: StepConfig,
    ) -> Result<u32> {
        self.sync_call(&run, || 0, |d| Durable::register_step_config(d, config))
    }

    fn step_begin_with(
        &mut self,
        run: Resource<SharedRun>,
        name: String,
        config: u32,
    ) -> Result<StepStart> {
        self.sync_call(&run, stopped_start, |d| {
            Durable::step_begin_with(d, name, config)
        })
    }

    fn secret(
        &mut self,
        run: Resource<SharedRun>,
        name: String,
    ) -> Result<Result<String, wit::ErrorInfo>> {
        self.sync_call(&run, || Err(stopped_error()), |d| Durable::secret(d, name))
    }

    fn error_detail(&mut self, run: Resource<SharedRun>, detail: String) -> Result<()> {
        self.sync_call(&run, || (), |d| Durable::error_detail(d, detail))
    }

    fn panicked(
        &mut self,
        run: Resource<SharedRun>,
        step: Option<u64>,
        message: String,
    ) -> Result<()> {
        // Kept even for a stopped run: the trap that follows is charged by it.
        let inst = self.run_of(&run)?;
        let own = std::mem::replace(&mut self.inst, inst);
        let r = Durable::panicked(self, step, message);
        self.inst = own;
        r
    }

    fn running_step(&mut self, run: Resource<SharedRun>, step: Option<u64>) -> Result<()> {
        let inst = self.run_of(&run)?;
        {
            let mut st = inst.lock();
            st.marks_steps = true;
            st.current = step;
        }
        self.current.set(Some(inst));
        Ok(())
    }

    fn resume(&mut self, run: Resource<SharedRun>) -> Result<bool> {
        let inst = self.run_of(&run)?;
        let stopped = inst.stop.is_stopped();
        self.current.set(Some(inst));
        Ok(stopped)
    }

    fn drop(&mut self, run: Resource<SharedRun>) -> Result<()> {
        if let Some((inst, _)) = self.runs.live.remove(&run.rep()) {
            tracing::debug!(instance = %inst.id, "the guest dropped its run");
            // Whatever of it is still in flight returns at once.
            inst.stop.stop();
            if self.current.get().is_some_and(|c| Arc::ptr_eq(&c, &inst)) {
                self.current.set(None);
            }
        }
        Ok(())
    }
}

fn run_with<T>(
    accessor: &Accessor<T, super::Durable>,
    run: &Resource<SharedRun>,
) -> Result<(Arc<Instance>, bool)> {
    accessor.with(|mut a| {
        let d = a.get();
        Ok((d.run_of(run)?, d.memory_hit()))
    })
}

impl<U> shared::HostRunWithStore<U> for super::Durable {
    async fn step_ready(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        handle: u64,
    ) -> Result<()> {
        let (inst, _) = run_with(accessor, &run)?;
        call(inst.clone(), || (), steps::step_ready(inst, handle)).await
    }

    async fn step_end(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        handle: u64,
        outcome: StepOutcome,
    ) -> Result<StepVerdict> {
        let (inst, memory_hit) = run_with(accessor, &run)?;
        let filler = || StepVerdict::Done(Err(stopped_error()));
        call(
            inst.clone(),
            filler,
            steps::step_end(inst, memory_hit, handle, outcome),
        )
        .await
    }

    async fn sleep(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        name: String,
        duration_ms: u64,
    ) -> Result<()> {
        let (inst, _) = run_with(accessor, &run)?;
        call(inst.clone(), || (), async {
            waits::sleep_for(&inst, name, duration_ms).await
        })
        .await
    }

    async fn sleep_until(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        name: String,
        unix_ms: u64,
    ) -> Result<()> {
        let (inst, _) = run_with(accessor, &run)?;
        call(inst.clone(), || (), async {
            waits::sleep_until(&inst, name, unix_ms).await
        })
        .await
    }

    async fn wait_for_event(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        name: String,
        event_type: String,
        timeout_ms: Option<u64>,
    ) -> Result<Result<wit::Event, wit::WaitError>> {
        let (inst, _) = run_with(accessor, &run)?;
        let filler = || Err(wit::WaitError::Timeout);
        let work = async { waits::wait_for_event(&inst, name, event_type, timeout_ms).await };
        call(inst.clone(), filler, work).await
    }

    async fn run_workflow(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        name: String,
        workflow: String,
        params: String,
    ) -> Result<Result<String, wit::ErrorInfo>> {
        let (inst, _) = run_with(accessor, &run)?;
        let work = child::run_workflow(inst.clone(), name, workflow, params);
        call(inst, || Err(stopped_error()), work).await
    }

    async fn fetch(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        request: wit::HttpRequest,
    ) -> Result<Result<wit::HttpResponse, wit::FetchError>> {
        let (inst, _) = run_with(accessor, &run)?;
        let filler = || Err(wit::FetchError::Failed("the host stopped this run".into()));
        call(inst.clone(), filler, async {
            Ok(fetch::fetch(&inst, request).await)
        })
        .await
    }

    async fn delay(
        accessor: &Accessor<U, Self>,
        run: Resource<SharedRun>,
        duration_ms: u64,
    ) -> Result<()> {
        let (inst, _) = run_with(accessor, &run)?;
        call(inst, || (), async {
            waits::delay(duration_ms).await;
            Ok(())
        })
        .await
    }
}
