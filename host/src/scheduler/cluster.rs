//! A server among many on one shared store (PostgreSQL): which instances
//! this host runs, and where a request for another host's instance goes.
//!
//! A host runs the instances it created while it had room, and claims the
//! others no live host owns: new ones created without an owner, paused
//! ones resumed elsewhere, and those of a host whose lease ran out. It
//! claims when told there is work (`weft_work`), and every
//! [`poll_period`] to find expired leases. An instance stays with its host
//! while it waits, evicted or not, until it ends, pauses, or the host dies
//! or leaves. An operator request (pause, resume, terminate, restart,
//! delete) for an instance a live host owns goes to that host's API; for an
//! instance no live host owns, this host takes it first.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{Error, Scheduler};
use crate::journal::{Notice, Owner, Postgres};

/// Most instances claimed in one statement.
const CLAIM_BATCH: usize = 256;

/// Where an operator request for an instance is carried out.
pub enum Route {
    /// By this host, which owns the instance (or it needs no owner).
    Here,
    /// By the live host that owns it.
    Owner(Owner),
}

/// How often a host looks for instances whose host's lease ran out.
fn poll_period(lease: Duration) -> Duration {
    (lease / 20).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

impl Scheduler {
    /// The shared store, if the journal is in one.
    pub(super) fn shared(&self) -> Option<&Postgres> {
        self.rt.journal.postgres()
    }

    /// Joins the hosts of the shared store: announces this host's API,
    /// then claims work until the process ends.
    pub async fn join_cluster(self: &Arc<Self>, api: &str) -> Result<(), Error> {
        let Some(pg) = self.shared() else {
            return Ok(());
        };
        pg.set_api(api).await?;
        let lease = pg.host_lease().expect("a serving host has a lease").clone();
        let me = Arc::downgrade(self);
        let mut notices = pg.notices();
        let mut lost = lease.lost();
        let period = poll_period(lease.duration());
        let task = tokio::spawn(async move {
            loop {
                let Some(s) = me.upgrade() else { return };
                if lost.has_changed().unwrap_or(false) {
                    lost.borrow_and_update();
                    // Everything this host owned was dropped: stop the
                    // tasks of before, so that none goes on under a fence
                    // taken since.
                    s.stop_stale_tasks();
                }
                let claimed = s.claim_once().await;
                drop(s);
                if claimed {
                    // Let what was claimed take its places before counting
                    // the free ones again.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let wait = async {
                    loop {
                        match notices.recv().await {
                            Ok(Notice::Event(_)) => continue,
                            Ok(_) | Err(RecvError::Lagged(_)) => return,
                            Err(RecvError::Closed) => std::future::pending::<()>().await,
                        }
                    }
                };
                // A lost lease is handled at the top of the loop.
                let lost_now = async {
                    let mut l = lost.clone();
                    let _ = l.changed().await;
                };
                tokio::select! {
                    _ = wait => {}
                    _ = lost_now => {}
                    _ = tokio::time::sleep(period) => {}
                }
            }
        });
        *self.claimer.lock().unwrap() = Some(task);
        Ok(())
    }

    /// Claims as many instances as this host has room for and starts
    /// them. Whether it claimed any.
    async fn claim_once(self: &Arc<Self>) -> bool {
        let Some(pg) = self.shared() else {
            return false;
        };
        let free = self.gate.pool.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            return false;
        }
        match pg.claim(free).await {
            Ok(ids) => {
                for id in &ids {
                    self.spawn(id);
                }
                !ids.is_empty()
            }
            Err(e) => {
                tracing::warn!("claiming instances: {e}");
                false
            }
        }
    }

    /// Where an operator request for `id` is carried out: here if this
    /// host owns it or could take it (no live host owns it, or it has
    /// ended), else by its owner.
    pub(super) async fn route(&self, id: &str) -> Result<Route, Error> {
        let Some(pg) = self.shared() else {
            return Ok(Route::Here);
        };
        if pg.claim_one(id).await? {
            return Ok(Route::Here);
        }
        Ok(match pg.owner(id).await? {
            Some(owner) => Route::Owner(owner),
            None => Route::Here,
        })
    }

    /// Fails with [`Error::OwnedElsewhere`] unless this host may carry out a
    /// request for `id`.
    pub(super) async fn here(&self, id: &str) -> Result<(), Error> {
        match self.route(id).await? {
            Route::Here => Ok(()),
            Route::Owner(o) => Err(Error::OwnedElsewhere(o)),
        }
    }

    /// After a request left `id` with no task here (paused, ended): gives
    /// it up so that whichever host resumes it may take it.
    pub(super) async fn let_go(&self, id: &str) {
        if let Some(pg) = self.shared()
            && !self.has_task(id)
            && let Err(e) = pg.release(id).await
        {
            tracing::warn!("instance {id}: giving it up: {e}");
        }
    }

    /// Whether a new instance should be left to other hosts: this host has
    /// no room to run it now and another live host may have. (Alone, a host
    /// queues it, first come first served.)
    pub(super) async fn full(&self) -> bool {
        let Some(pg) = self.shared() else {
            return false;
        };
        if self.gate.pool.available_permits() > 0 {
            return false;
        }
        match pg.other_hosts().await {
            Ok(n) => n > 0,
            Err(e) => {
                tracing::warn!("counting the other hosts: {e}");
                false
            }
        }
    }
}
