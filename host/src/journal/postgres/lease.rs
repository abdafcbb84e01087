//! A host's lease on a shared store, and the fences of the instances it
//! owns.
//!
//! Every process that runs instances on the store registers in
//! `weft_hosts` and renews its lease a few times per lease period. Other
//! hosts take its instances only once the lease has run out by the
//! database's clock, so clocks of hosts never need to agree. Each instance
//! this host took is fenced by the epoch it took it at: every write of the
//! instance names that epoch, and the database refuses it once another host
//! has taken the instance (raising the epoch). Before a step starts, the
//! host checks that its lease surely still holds by its own monotonic clock,
//! counted from when it *sent* the last renewal the database confirmed.
//!
//! A host that finds its lease expired (it was paused, partitioned, or the
//! database was away for longer than the lease) drops every instance it
//! owned and registers again under a new id, so that what nobody took yet
//! can be taken again, by any host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::watch;

use super::{JournalError, pg_error};

/// The database's clock in Unix milliseconds, in SQL.
pub(super) const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// A host's lease and what it owns.
pub struct Lease {
    /// This host's id in `weft_hosts` (a new one after a lost lease).
    host: Mutex<String>,
    /// Where other hosts reach this one's API (`weft serve`).
    api: Mutex<Option<String>>,
    pub(super) duration: Duration,
    /// The instances this host owns, with the epoch it took each at.
    fences: Mutex<HashMap<String, i64>>,
    /// Until when the lease surely holds, by this host's monotonic clock;
    /// watched by steps waiting for a renewal.
    valid_until: watch::Sender<Instant>,
    /// Counts the times the lease was found lost (each dropped everything
    /// this host owned).
    lost: watch::Sender<u64>,
}

fn new_host_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{name}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Lease {
    /// Registers a new host on the store, with a lease of `duration`.
    pub(super) async fn register(
        pool: &Pool,
        duration: Duration,
    ) -> Result<Arc<Lease>, JournalError> {
        let lease = Arc::new(Lease {
            host: Mutex::new(new_host_id()),
            api: Mutex::new(None),
            duration,
            fences: Mutex::new(HashMap::new()),
            valid_until: watch::channel(Instant::now()).0,
            lost: watch::channel(0).0,
        });
        lease.insert(pool).await?;
        Ok(lease)
    }

    /// How long the lease lasts unrenewed.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn host(&self) -> String {
        self.host.lock().unwrap().clone()
    }

    /// Writes this host's row with a fresh lease.
    async fn insert(&self, pool: &Pool) -> Result<(), JournalError> {
        let sent = Instant::now();
        let c = pool.get().await.map_err(pg_error)?;
        let q = format!(
            "INSERT INTO weft_hosts (id, api, started_ms, lease_until_ms) \
             VALUES ($1, $2, {DB_NOW_MS}, {DB_NOW_MS} + $3) \
             ON CONFLICT (id) DO UPDATE SET api = excluded.api, \
             lease_until_ms = excluded.lease_until_ms"
        );
        let (host, api) = (self.host(), self.api.lock().unwrap().clone());
        c.execute(&q, &[&host, &api, &(self.duration.as_millis() as i64)])
            .await
            .map_err(pg_error)?;
        self.valid_until.send_replace(sent + self.duration);
        Ok(())
    }

    /// Sets the API address other hosts forward requests to.
    pub(super) async fn set_api(&self, pool: &Pool, api: &str) -> Result<(), JournalError> {
        *self.api.lock().unwrap() = Some(api.to_owned());
        let c = pool.get().await.map_err(pg_error)?;
        c.execute(
            "UPDATE weft_hosts SET api = $2 WHERE id = $1",
            &[&self.host(), &api],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Renews the lease. `Ok(false)`: it had run out, and everything this
    /// host owned was dropped (see the module docs).
    async fn renew(&self, pool: &Pool) -> Result<bool, JournalError> {
        let sent = Instant::now();
        let q = format!(
            "UPDATE weft_hosts SET lease_until_ms = {DB_NOW_MS} + $2 \
             WHERE id = $1 AND lease_until_ms > {DB_NOW_MS}"
        );
        let host = self.host();
        let update = async {
            let c = pool.get().await.map_err(pg_error)?;
            c.execute(&q, &[&host, &(self.duration.as_millis() as i64)])
                .await
                .map_err(pg_error)
        };
        // An answer after the lease could have run out is no renewal.
        let n = tokio::time::timeout(self.duration, update)
            .await
            .map_err(|_| JournalError::Storage("no answer within the lease".into()))??;
        if n == 1 {
            self.valid_until.send_replace(sent + self.duration);
            return Ok(true);
        }
        self.fences.lock().unwrap().clear();
        *self.host.lock().unwrap() = new_host_id();
        self.lost.send_modify(|n| *n += 1);
        tracing::error!(
            "this host's lease on the store ran out (was the process paused, or the database \
             away, for longer than the lease of {:?}?); it dropped the instances it owned as \
             {host} and goes on as {}",
            self.duration,
            self.host()
        );
        // Registered again (until that succeeds, renewals find no row and
        // come here again, under yet another id).
        let c = pool.get().await.map_err(pg_error)?;
        let _ = c
            .execute("DELETE FROM weft_hosts WHERE id = $1", &[&host])
            .await;
        drop(c);
        self.insert(pool).await?;
        Ok(false)
    }

    /// Renews the lease three times per lease period, on connections of
    /// its own (a busy pool of reads cannot hold a renewal up), for as long
    /// as the process runs.
    pub(super) async fn keep(self: Arc<Self>, pool: Pool) {
        let period = self.duration / 3;
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = self.renew(&pool).await {
                tracing::warn!("renewing this host's lease: {e}");
            }
        }
    }

    /// How many times the lease was lost.
    pub fn generation(&self) -> u64 {
        *self.lost.borrow()
    }

    /// Counts lost leases; changes each time one is lost.
    pub fn lost(&self) -> watch::Receiver<u64> {
        self.lost.subscribe()
    }

    /// Records that this host took `id` at `epoch`.
    pub(super) fn own(&self, id: &str, epoch: i64) {
        self.fences.lock().unwrap().insert(id.to_owned(), epoch);
    }

    /// Forgets `id`; returns the epoch it was owned at.
    pub(super) fn disown(&self, id: &str) -> Option<i64> {
        self.fences.lock().unwrap().remove(id)
    }

    /// The epoch this host owns `id` at.
    pub(super) fn epoch(&self, id: &str) -> Option<i64> {
        self.fences.lock().unwrap().get(id).copied()
    }

    /// Whether a step of `id` may start now: the instance is this host's
    /// and the lease surely holds.
    pub(super) fn may_run_now(&self, id: &str) -> bool {
        self.epoch(id).is_some() && Instant::now() < *self.valid_until.borrow()
    }

    /// Waits until a step of `id` may start: at once while the lease
    /// surely holds, else until a renewal confirms it. Fails once the
    /// instance is not this host's.
    pub(super) async fn may_run(&self, id: &str) -> Result<(), JournalError> {
        let mut valid = self.valid_until.subscribe();
        loop {
            if self.epoch(id).is_none() {
                return Err(JournalError::Fenced(id.to_owned()));
            }
            let until = *valid.borrow_and_update();
            if Instant::now() < until {
                return Ok(());
            }
            // A renewal, or a lost lease (which empties the fences), comes
            // within a renewal period.
            let _ = tokio::time::timeout(self.duration / 3, valid.changed()).await;
        }
    }
}
