//! What the durable interface needs from the layers above it, defined here
//! so that those layers depend on this one and not the other way round
//! (as wasmtime's `crates/wasi` takes what it needs through `WasiView`):
//! operator requests to a live instance, the starting of child workflows,
//! and the run permits a waiting instance gives back.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::journal::ErrorInfo;

/// Operator requests to a live instance.
#[derive(Default)]
pub struct Control {
    pause: AtomicBool,
    /// Signalled when `pause` changes.
    pub changed: tokio::sync::Notify,
}

impl Control {
    pub fn pause_requested(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    pub fn set_pause(&self, pause: bool) {
        self.pause.store(pause, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// A boxed future, for the object-safe traits below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts child workflows for a running instance: a server's scheduler
/// (workflows by name) or `weft run`'s runtime.
pub trait Children: Send + Sync {
    /// Creates (unless it exists) and starts instance `id` of `workflow`
    /// with `params`, as a child of `parent`.
    fn start_child(
        &self,
        workflow: String,
        id: String,
        params: String,
        parent: String,
    ) -> BoxFuture<'_, Result<(), ErrorInfo>>;
}

/// The permits an instance holds while it works (a place among a server's
/// running instances, and in its workflow's concurrency): given back while
/// it only waits, taken again before the guest goes on.
pub trait RunPermits: Send + Sync {
    /// Gives the permits back.
    fn release(&self);
    /// Takes the permits again, waiting for them.
    fn reacquire(&self) -> BoxFuture<'_, ()>;
}
