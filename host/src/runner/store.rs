//! The store of one instance run and the argument of its `run` export.

use std::sync::Arc;

use wasmtime::{Store, UpdateDeadline};

use super::Runtime;
use crate::bindings::types::WorkflowEvent;
use crate::durable::{HostState, Instance};
use crate::journal::{ErrorInfo, InstanceRecord};

impl Runtime {
    /// A store for one run of `inst`: memory limit, and an epoch callback
    /// that yields to the host every tick and ends a workflow body that
    /// spins past its CPU limit outside step bodies.
    pub(super) fn new_store(
        &self,
        engine: &wasmtime::Engine,
        inst: &Arc<Instance>,
        seed: u64,
    ) -> Store<HostState> {
        let mut store = Store::new(engine, HostState::new(inst.clone(), seed));
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        let max_ticks =
            (inst.policy.limits.body_cpu_ms / crate::engine::EPOCH_TICK.as_millis() as u64).max(1);
        store.epoch_deadline_callback(move |ctx| {
            let inst = ctx.data().instance();
            let mut st = inst.lock();
            if st.running.is_empty() {
                st.body_ticks += 1;
                if st.body_ticks > max_ticks {
                    let e = ErrorInfo::new(
                        "CpuLimitExceeded",
                        format!(
                            "the workflow body ran for more than {} ms of CPU outside step bodies in one run (limit `cpu_ms`); is there an infinite loop?",
                            inst.policy.limits.body_cpu_ms
                        ),
                    );
                    st.fatal.get_or_insert(e);
                    return Err(wasmtime::format_err!("CPU limit exceeded"));
                }
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store
    }
}

/// The `run` argument of an instance.
pub(super) fn workflow_event(rec: &InstanceRecord) -> WorkflowEvent {
    WorkflowEvent {
        payload: rec.input.get().to_owned(),
        timestamp_ms: rec.created_ms,
        instance_id: rec.id.clone(),
        workflow_name: rec.workflow.clone(),
    }
}
