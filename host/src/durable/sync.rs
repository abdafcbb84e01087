//! `weft:workflow/durable-sync`: the durable calls for guests that cannot
//! call `async` imports (JavaScript on componentize-js).
//!
//! A call that can wait starts an operation, kept here as a future, and
//! returns its id; `wait` polls every operation in flight until at least
//! one has finished. The futures are the ones behind `durable`'s async
//! calls, so both interfaces journal, replay and wait alike; they are
//! dropped with the store, as a guest's pending async calls are.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;

use wasmtime::Result;
use wasmtime::component::Linker;

use super::{BoxFuture, DurableCtx, HostState, Instance, child, fetch, steps, waits};
use crate::bindings::sync::weft::workflow::durable_sync::{self, Op, OpResult};
use crate::bindings::types::{self as wit, StepConfig, StepOutcome, StepStart};
use crate::journal::ErrorInfo;

/// Most operations one run may have in flight.
const MAX_OPS: usize = 100_000;

/// The operations in flight of one run.
#[derive(Default)]
pub(super) struct Ops {
    next: Op,
    pending: Vec<(Op, BoxFuture<'static, Result<OpResult>>)>,
    /// Set while the guest runs on results `wait` gave it: the instance
    /// counts as busy until the guest waits again, so that the watchdog
    /// does not evict it in between (with async calls the guest is resumed
    /// in the same poll that finishes the call; here it runs after `wait`
    /// returns).
    running: bool,
}

/// Adds `weft:workflow/durable-sync` to a linker.
pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    durable_sync::add_to_linker::<HostState, super::Durable>(linker, |s| &mut s.durable)?;
    Ok(())
}

impl DurableCtx {
    fn start(&mut self, op: impl Future<Output = Result<OpResult>> + Send + 'static) -> Result<Op> {
        if self.ops.pending.len() >= MAX_OPS {
            return Err(self.inst.fatal(ErrorInfo::new(
                "TooManyOperations",
                format!("the instance has more than {MAX_OPS} durable calls in flight"),
            )));
        }
        // Polled once now, as wasmtime polls the host future of an async
        // call when the guest makes it: the call takes its place in the
        // journal in the order the guest made it.
        let mut op: BoxFuture<'static, Result<OpResult>> = Box::pin(op);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let Poll::Ready(r) = op.as_mut().poll(&mut cx) {
            op = Box::pin(std::future::ready(Ok(r?)));
        }
        self.ops.next = self.ops.next.wrapping_add(1);
        let id = self.ops.next;
        self.ops.pending.push((id, op));
        Ok(id)
    }

    fn inst(&self) -> Arc<Instance> {
        self.inst.clone()
    }

    /// The guest runs on what `wait` returned: busy until it waits again.
    fn ops_running(&mut self) {
        if !self.ops.running {
            self.ops.running = true;
            self.inst.lock().busy += 1;
        }
    }

    /// The guest waits again, or its run ended.
    pub(super) fn ops_done(&mut self) {
        if self.ops.running {
            self.ops.running = false;
            self.inst.lock().busy -= 1;
            self.inst.changed.notify_one();
        }
    }
}

impl durable_sync::Host for DurableCtx {
    fn step_begin(&mut self, name: String, config: StepConfig) -> Result<StepStart> {
        super::durable::Host::step_begin(self, name, config)
    }

    fn register_step_config(&mut self, config: StepConfig) -> Result<u32> {
        super::durable::Host::register_step_config(self, config)
    }

    fn step_begin_with(&mut self, name: String, config: u32) -> Result<StepStart> {
        super::durable::Host::step_begin_with(self, name, config)
    }

    fn secret(&mut self, name: String) -> Result<Result<String, wit::ErrorInfo>> {
        super::durable::Host::secret(self, name)
    }

    fn error_detail(&mut self, detail: String) -> Result<()> {
        super::durable::Host::error_detail(self, detail)
    }

    fn panicked(&mut self, step: Option<u64>, message: String) -> Result<()> {
        super::durable::Host::panicked(self, step, message)
    }

    fn running_step(&mut self, step: Option<u64>) -> Result<()> {
        super::durable::Host::running_step(self, step)
    }

    fn step_ready(&mut self, handle: u64) -> Result<Op> {
        let inst = self.inst();
        self.start(async move {
            steps::step_ready(inst, handle).await?;
            Ok(OpResult::Done)
        })
    }

    fn step_end(&mut self, handle: u64, outcome: StepOutcome) -> Result<Op> {
        let (inst, memory_hit) = (self.inst(), self.memory_hit());
        self.start(async move {
            Ok(OpResult::Verdict(
                steps::step_end(inst, memory_hit, handle, outcome).await?,
            ))
        })
    }

    fn sleep(&mut self, name: String, duration_ms: u64) -> Result<Op> {
        let inst = self.inst();
        self.start(async move {
            waits::sleep_for(&inst, name, duration_ms).await?;
            Ok(OpResult::Done)
        })
    }

    fn sleep_until(&mut self, name: String, unix_ms: u64) -> Result<Op> {
        let inst = self.inst();
        self.start(async move {
            waits::sleep_until(&inst, name, unix_ms).await?;
            Ok(OpResult::Done)
        })
    }

    fn wait_for_event(
        &mut self,
        name: String,
        event_type: String,
        timeout_ms: Option<u64>,
    ) -> Result<Op> {
        let inst = self.inst();
        self.start(async move {
            Ok(OpResult::Event(
                waits::wait_for_event(&inst, name, event_type, timeout_ms).await?,
            ))
        })
    }

    fn run_workflow(&mut self, name: String, workflow: String, params: String) -> Result<Op> {
        let inst = self.inst();
        self.start(async move {
            Ok(OpResult::Child(
                child::run_workflow(inst, name, workflow, params).await?,
            ))
        })
    }

    fn fetch(&mut self, request: wit::HttpRequest) -> Result<Op> {
        let inst = self.inst();
        self.start(async move { Ok(OpResult::Response(fetch::fetch(&inst, request).await)) })
    }

    fn delay(&mut self, duration_ms: u64) -> Result<Op> {
        self.start(async move {
            waits::delay(duration_ms).await;
            Ok(OpResult::Done)
        })
    }

    async fn wait(&mut self) -> Result<Vec<(Op, OpResult)>> {
        if self.ops.pending.is_empty() {
            return Err(self.inst.fatal(ErrorInfo::new(
                "NothingToWaitFor",
                "the guest waited with no durable call in flight (an SDK bug)",
            )));
        }
        self.ops_done();
        let pending = &mut self.ops.pending;
        let done = std::future::poll_fn(|cx| {
            let mut done = Vec::new();
            let mut failed = None;
            pending.retain_mut(|(id, op)| match op.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready(Ok(r)) => {
                    done.push((*id, r));
                    false
                }
                Poll::Ready(Err(e)) => {
                    failed.get_or_insert(e);
                    false
                }
            });
            match failed {
                Some(e) => Poll::Ready(Err(e)),
                None if done.is_empty() => Poll::Pending,
                None => Poll::Ready(Ok(done)),
            }
        })
        .await?;
        self.ops_running();
        Ok(done)
    }
}
