//! Admission: how many instances run at once.

use std::sync::{Arc, Mutex};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// The permits an instance needs to run: one of the server's pool and, when
/// its workflow has a concurrency limit, one of the workflow's.
///
/// They are held while the instance works and given back while it only
/// waits in memory (a short sleep, an event, a retry delay), so waiting
/// instances do not count against `max_running` or a workflow's
/// `concurrency`, as with Cloudflare Workflows. The instance takes them again
/// when its wait ends, before the guest goes on.
pub struct Admission {
    pool: Arc<Semaphore>,
    workflow: Option<Arc<Semaphore>>,
    held: Mutex<Option<Permits>>,
}

struct Permits {
    _workflow: Option<OwnedSemaphorePermit>,
    _pool: OwnedSemaphorePermit,
    _counted: crate::metrics::Held,
}

impl Admission {
    pub fn new(pool: Arc<Semaphore>, workflow: Option<Arc<Semaphore>>) -> Arc<Admission> {
        Arc::new(Admission {
            pool,
            workflow,
            held: Mutex::new(None),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<Permits>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the permits are held.
    pub fn holds(&self) -> bool {
        self.held().is_some()
    }

    /// Takes the permits if they are free now.
    pub fn try_acquire(&self) -> bool {
        if self.holds() {
            return true;
        }
        let workflow = match &self.workflow {
            Some(w) => match w.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return false,
            },
            None => None,
        };
        let Ok(pool) = self.pool.clone().try_acquire_owned() else {
            return false;
        };
        self.held().get_or_insert(Permits {
            _workflow: workflow,
            _pool: pool,
            _counted: crate::metrics::Held::new(&crate::metrics::get().slots_in_use),
        });
        true
    }

    /// Waits for the permits (in FIFO order with other instances): the
    /// workflow's first, so that a workflow at its limit holds no pool slot.
    pub async fn acquire(&self) -> Result<(), AcquireError> {
        if self.holds() {
            return Ok(());
        }
        let _queued = crate::metrics::Held::new(&crate::metrics::get().queue_depth);
        let workflow = match &self.workflow {
            Some(w) => Some(w.clone().acquire_owned().await?),
            None => None,
        };
        let pool = self.pool.clone().acquire_owned().await?;
        // A concurrent call may have taken them meanwhile; then these drop.
        self.held().get_or_insert(Permits {
            _workflow: workflow,
            _pool: pool,
            _counted: crate::metrics::Held::new(&crate::metrics::get().slots_in_use),
        });
        Ok(())
    }

    /// Gives the permits back.
    pub fn release(&self) {
        self.held().take();
    }
}

impl crate::durable::RunPermits for Admission {
    fn release(&self) {
        Admission::release(self);
    }

    fn reacquire(&self) -> crate::durable::BoxFuture<'_, ()> {
        Box::pin(async move {
            // The semaphores are never closed while instances run.
            let _ = self.acquire().await;
        })
    }
}
