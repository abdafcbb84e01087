//! A linked component of one of the worlds: `workflow` (an async `run`:
//! Rust), `workflow-shared` (`workflow` plus `run-shared`: Python) or
//! `workflow-sync` (a blocking `run` over `durable-sync`: JavaScript), and
//! how one run of it is started. Runs that share an instance are started
//! by [`crate::runner`]'s shared pools.

use anyhow::Result;
use wasmtime::Engine;
use wasmtime::component::{Component, InstancePre};

use crate::bindings::WorkflowPre;
use crate::bindings::shared::WorkflowSharedPre;
use crate::bindings::sync::WorkflowSyncPre;
use crate::bindings::types::{ErrorInfo, WorkflowEvent};
use crate::durable::HostState;

/// A loaded, linked component.
pub struct LoadedComponent {
    pub digest: String,
    /// Linked on the engine (and so the pool) its instances run on.
    pub pre: GuestPre,
}

/// A linked component of one of the two worlds.
pub enum GuestPre {
    /// `workflow`: an async `run` (Rust, Python).
    Async(WorkflowPre<HostState>),
    /// `workflow-sync`: a blocking `run` that drives its own event loop
    /// over `durable-sync` (JavaScript).
    Sync(WorkflowSyncPre<HostState>),
    /// `workflow-shared`: `workflow`, plus `run-shared` for runs that share
    /// an instance (Python).
    Shared(WorkflowSharedPre<HostState>),
}

impl LoadedComponent {
    /// The engine its instances run on.
    pub fn engine(&self) -> &Engine {
        match &self.pre {
            GuestPre::Async(p) => p.engine(),
            GuestPre::Sync(p) => p.engine(),
            GuestPre::Shared(p) => p.engine(),
        }
    }

    /// Whether the component can run shared (`isolation = "shared"`).
    pub fn can_share(&self) -> bool {
        matches!(self.pre, GuestPre::Shared(_))
    }

    /// Whether the guest reads the monotonic clock for its own timers
    /// (its event loop), not for the workflow's logic: such reads are not
    /// journaled. JavaScript's `performance.now()` reads the journaled
    /// wall clock instead (the SDK sees to it).
    pub fn live_monotonic(&self) -> bool {
        matches!(self.pre, GuestPre::Sync(_))
    }

    /// Instantiates the component in `store` and runs its `run` export to
    /// its end.
    pub async fn run(
        &self,
        store: &mut wasmtime::Store<HostState>,
        event: WorkflowEvent,
    ) -> wasmtime::Result<Result<String, ErrorInfo>> {
        match &self.pre {
            GuestPre::Async(pre) => {
                let wf = pre.instantiate_async(&mut *store).await?;
                store
                    .run_concurrent(async |acc| wf.call_run(acc, event).await)
                    .await?
            }
            GuestPre::Sync(pre) => {
                let wf = pre.instantiate_async(&mut *store).await?;
                store
                    .run_concurrent(async |acc| wf.call_run(acc, event).await)
                    .await?
            }
            GuestPre::Shared(pre) => {
                let wf = pre.instantiate_async(&mut *store).await?;
                store
                    .run_concurrent(async |acc| wf.call_run(acc, event).await)
                    .await?
            }
        }
    }
}

impl GuestPre {
    /// Links `pre` as the world `component` is of: `workflow-sync` when it
    /// imports `durable-sync` (its `run` type-checks against either
    /// world's), else `workflow`.
    pub(super) fn link(component: &Component, pre: InstancePre<HostState>) -> Result<GuestPre> {
        let ty = component.component_type();
        let sync = ty
            .imports(pre.engine())
            .any(|(name, _)| name.starts_with("weft:workflow/durable-sync@"));
        let shared = ty
            .exports(pre.engine())
            .any(|(name, _)| name == "run-shared");
        let not_a_workflow = |e: wasmtime::Error, world: &str| {
            anyhow::anyhow!("{e:#}").context(format!(
                "the component is not a weft workflow (it must export `run` of weft:workflow/{world})"
            ))
        };
        Ok(if shared {
            GuestPre::Shared(
                WorkflowSharedPre::new(pre).map_err(|e| not_a_workflow(e, "workflow-shared"))?,
            )
        } else if sync {
            GuestPre::Sync(
                WorkflowSyncPre::new(pre).map_err(|e| not_a_workflow(e, "workflow-sync"))?,
            )
        } else {
            GuestPre::Async(WorkflowPre::new(pre).map_err(|e| not_a_workflow(e, "workflow"))?)
        })
    }
}
