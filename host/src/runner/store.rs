//! The store of one instance run and the argument of its `run` export.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, UpdateDeadline};

use super::Runtime;
use crate::bindings::types::WorkflowEvent;
use crate::durable::{Charged, HostState, Instance, cpu};
use crate::engine::LoadedComponent;
use crate::journal::{ErrorInfo, InstanceRecord};

impl Runtime {
    /// A store for one run of `inst`: memory limit, and an epoch callback
    /// that charges the guest's CPU time to the step body or workflow body
    /// it runs ([`crate::durable::cpu`]), ends an attempt or run past its
    /// CPU limit, and otherwise yields to the executor every tick.
    pub(super) fn new_store(
        &self,
        component: &LoadedComponent,
        inst: &Arc<Instance>,
        seed: u64,
    ) -> Store<HostState> {
        let state = HostState::new(inst.clone(), seed, component.live_monotonic());
        self.store_for(component, state)
    }

    /// A store with `state`, limited and charged as [`Runtime::new_store`]
    /// says; in a shared store, CPU time is the run's the guest runs.
    pub(super) fn store_for(
        &self,
        component: &LoadedComponent,
        state: HostState,
    ) -> Store<HostState> {
        let mut store = Store::new(component.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            let Some(inst) = ctx.data().current() else {
                return Ok(UpdateDeadline::Yield(1));
            };
            let limits = &inst.policy.limits;
            let mut st = inst.lock();
            let spent = st.cpu.tick();
            // A stopped run (in a shared store) that keeps running instead
            // of unwinding: only dropping the store stops it.
            if inst.stop.is_stopped() {
                st.stopped_cpu += spent;
                if st.stopped_cpu > STOPPED_CPU {
                    return Err(wasmtime::format_err!(
                        "a stopped run kept running for {} ms of CPU",
                        st.stopped_cpu.as_millis()
                    ));
                }
            }
            match st.charged() {
                Charged::Step(h) => {
                    let step = st.running.get_mut(&h).expect("charged() saw it running");
                    step.cpu += spent;
                    if step.cpu > Duration::from_millis(limits.step_cpu_ms) {
                        st.cpu_exceeded = Some(h);
                        return Err(wasmtime::format_err!("step CPU limit exceeded"));
                    }
                }
                Charged::Body => {
                    st.body_cpu += spent;
                    if st.body_cpu > Duration::from_millis(limits.body_cpu_ms) {
                        let e = ErrorInfo::new(
                            "CpuLimitExceeded",
                            format!(
                                "the workflow body used more than {} ms of CPU outside step bodies in one run (limit `cpu_ms`); is there an infinite loop?",
                                limits.body_cpu_ms
                            ),
                        );
                        st.fatal.get_or_insert(e);
                        return Err(wasmtime::format_err!("CPU limit exceeded"));
                    }
                }
                Charged::Unknown => {}
            }
            drop(st);
            Ok(UpdateDeadline::YieldCustom(1, cpu::yield_then_mark(inst)))
        });
        store
    }
}

/// CPU time a stopped run may spend unwinding.
const STOPPED_CPU: Duration = Duration::from_millis(200);

/// The `run` argument of an instance.
pub(super) fn workflow_event(rec: &InstanceRecord) -> WorkflowEvent {
    WorkflowEvent {
        payload: rec.input.get().to_owned(),
        timestamp_ms: rec.created_ms,
        instance_id: rec.id.clone(),
        workflow_name: rec.workflow.clone(),
    }
}
