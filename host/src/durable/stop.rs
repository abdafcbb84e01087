//! Stopping one run without its store: a run that shares a component
//! instance with others (`isolation = "shared"`) cannot be dropped with
//! its store, so the host stops it instead. From then on its durable calls
//! return at once without doing anything, and the guest unwinds the run.
//! The runner settles the run only once none of its calls is in flight, so
//! nothing the run does is journaled after that.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// The stop switch of one run, and its durable calls in flight.
pub struct Stop {
    flag: watch::Sender<bool>,
    inflight: AtomicUsize,
    drained: Notify,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            flag: watch::channel(false).0,
            inflight: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }
}

impl Stop {
    /// Stops the run (idempotent).
    pub fn stop(&self) {
        self.flag.send_if_modified(|v| !std::mem::replace(v, true));
    }

    pub fn is_stopped(&self) -> bool {
        *self.flag.borrow()
    }

    /// Returns once the run is stopped.
    pub async fn stopped(&self) {
        let mut rx = self.flag.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Counts a durable call in flight until the guard is dropped.
    pub fn call(&self) -> CallGuard<'_> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        CallGuard(self)
    }

    /// Returns once no durable call of the run is in flight.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A durable call in flight ([`Stop::call`]).
pub struct CallGuard<'a>(&'a Stop);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drained_waits_for_the_last_call_and_stopped_for_the_switch() {
        let stop = std::sync::Arc::new(Stop::default());
        let g = stop.call();
        let s = stop.clone();
        let waiter = tokio::spawn(async move {
            s.stopped().await;
            s.drained().await;
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        stop.stop();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a call is still in flight");
        drop(g);
        waiter.await.unwrap();
        assert!(stop.is_stopped());
    }
}
