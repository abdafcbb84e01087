//! Sharing a store's instances among hosts: claims, releases, owners and
//! the notifications that tell hosts about work and events at once.
//!
//! Channels (`LISTEN`/`NOTIFY`, sent in the writing transaction, so that a
//! notice arrives only once what it announces is committed):
//! - `weft_work`: an instance may be claimed (created without an owner,
//!   released, its host left);
//! - `weft_event`, payload the instance id: an event was buffered for it.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, NoTls};

use super::lease::DB_NOW_MS;
use super::*;

/// What another host (or this one) announced.
#[derive(Clone, Debug)]
pub enum Notice {
    /// Instances may be waiting for a host.
    Work,
    /// An event was buffered for the instance.
    Event(String),
    /// The listening connection was lost and made again: notices may have
    /// been missed.
    Reconnected,
}

/// The statuses a host runs (and so claims).
const RUNNABLE: [&str; 3] = ["queued", "running", "waiting"];

/// An owner is gone once its lease has run out, by the database's clock.
fn owner_gone(owner: &str) -> String {
    format!(
        "({owner} IS NULL OR NOT EXISTS (SELECT 1 FROM weft_hosts h \
         WHERE h.id = {owner} AND h.lease_until_ms > {DB_NOW_MS}))"
    )
}

impl Postgres {
    fn lease(&self) -> Result<&Arc<Lease>, JournalError> {
        self.lease
            .as_ref()
            .ok_or_else(|| JournalError::Storage("this process runs no instances".into()))
    }

    /// This host's id on the store.
    pub fn host(&self) -> Option<String> {
        self.lease.as_ref().map(|l| l.host())
    }

    /// This host's lease.
    pub fn host_lease(&self) -> Option<&Arc<Lease>> {
        self.lease.as_ref()
    }

    /// Tells other hosts where this one's API is.
    pub async fn set_api(&self, url: &str) -> Result<(), JournalError> {
        self.lease()?.set_api(&self.pool, url).await
    }

    /// Takes up to `limit` runnable instances that no live host owns
    /// (new, released, or left by a host whose lease ran out), skipping
    /// those another host is taking at the same moment. Returns their ids.
    pub async fn claim(&self, limit: usize) -> Result<Vec<String>, JournalError> {
        let lease = self.lease()?;
        let c = self.client().await?;
        let q = format!(
            "UPDATE weft_instances i SET owner = $1, epoch = i.epoch + 1 \
             WHERE i.id IN (SELECT c.id FROM weft_instances c \
               WHERE c.status = ANY($2) AND {} \
               ORDER BY c.updated_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING i.id, i.epoch",
            owner_gone("c.owner")
        );
        let runnable = &RUNNABLE[..];
        let rows = c
            .query(&q, &[&lease.host(), &runnable, &(limit as i64)])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                lease.own(&id, r.get(1));
                id
            })
            .collect())
    }

    /// Takes one instance (a paused or finished one too) unless a live host
    /// owns it and it has not ended. `Ok(false)`: a live host runs it, or
    /// there is no such instance.
    pub async fn claim_one(&self, id: &str) -> Result<bool, JournalError> {
        let lease = self.lease()?;
        if lease.epoch(id).is_some() {
            return Ok(true);
        }
        let c = self.client().await?;
        let q = format!(
            "UPDATE weft_instances SET owner = $1, epoch = epoch + 1 \
             WHERE id = $2 AND (status = ANY($3) OR {}) RETURNING epoch",
            owner_gone("owner")
        );
        let finals = &writer::FINAL[..];
        let row = c
            .query_opt(&q, &[&lease.host(), &id, &finals])
            .await
            .map_err(pg_error)?;
        Ok(match row {
            Some(r) => {
                lease.own(id, r.get(0));
                true
            }
            None => false,
        })
    }

    /// The live host other than this one that owns `id`, with its API
    /// address (none for `weft run`), and when its lease runs out (Unix ms,
    /// the database's clock).
    pub async fn owner(&self, id: &str) -> Result<Option<Owner>, JournalError> {
        let c = self.client().await?;
        let q = format!(
            "SELECT h.id, h.api, h.lease_until_ms FROM weft_instances i \
             JOIN weft_hosts h ON h.id = i.owner \
             WHERE i.id = $1 AND h.lease_until_ms > {DB_NOW_MS}"
        );
        let row = c.query_opt(&q, &[&id]).await.map_err(pg_error)?;
        let me = self.host();
        Ok(row
            .map(|r| Owner {
                host: r.get(0),
                api: r.get(1),
                lease_until_ms: r.get::<_, i64>(2) as u64,
            })
            .filter(|o| Some(&o.host) != me.as_ref()))
    }

    /// How many other hosts hold a lease now.
    pub async fn other_hosts(&self) -> Result<u64, JournalError> {
        let c = self.client().await?;
        let q = format!(
            "SELECT count(*) FROM weft_hosts WHERE id <> $1 AND lease_until_ms > {DB_NOW_MS}"
        );
        let row = c
            .query_one(&q, &[&self.host().unwrap_or_default()])
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Forgets an instance this host lost (another host took it).
    pub fn disown(&self, id: &str) {
        if let Some(l) = &self.lease {
            l.disown(id);
        }
    }

    /// Gives an instance up, so that any host may take it (paused, or this
    /// host has no room for it), and tells the hosts.
    pub async fn release(&self, id: &str) -> Result<(), JournalError> {
        let Some(epoch) = self.lease.as_ref().and_then(|l| l.disown(id)) else {
            return Ok(());
        };
        self.then_work(&[(
            "UPDATE weft_instances SET owner = NULL WHERE id = $1 AND epoch = $2",
            &[&id, &epoch],
        )])
        .await
    }

    /// Leaves the store: gives up every instance this host owns, so that
    /// other hosts take them at once rather than when the lease runs out.
    pub async fn leave(&self) -> Result<(), JournalError> {
        let host = self.lease()?.host();
        self.then_work(&[
            (
                "UPDATE weft_instances SET owner = NULL WHERE owner = $1",
                &[&host],
            ),
            ("DELETE FROM weft_hosts WHERE id = $1", &[&host]),
        ])
        .await
    }

    /// Runs `statements` in one transaction that also tells the hosts
    /// there is work (instances were let go).
    async fn then_work(
        &self,
        statements: &[(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)])],
    ) -> Result<(), JournalError> {
        let c = self.client().await?;
        c.batch_execute("BEGIN").await.map_err(pg_error)?;
        for (sql, params) in statements {
            if let Err(e) = c.execute(*sql, params).await {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(pg_error(e));
            }
        }
        c.batch_execute("NOTIFY weft_work; COMMIT")
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Tells the host that runs `id` to look at it (a child of it ended).
    pub async fn announce_event(&self, id: &str) -> Result<(), JournalError> {
        let c = self.client().await?;
        c.execute("SELECT pg_notify('weft_event', $1)", &[&id])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// Notices from every host, on a connection of their own (made again
    /// when lost).
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }
}

/// The live host that owns an instance.
#[derive(Debug, Clone)]
pub struct Owner {
    pub host: String,
    pub api: Option<String>,
    pub lease_until_ms: u64,
}

/// Listens on the store's channels and passes what arrives to `tx`, for as
/// long as the process runs.
pub(super) async fn listen(config: tokio_postgres::Config, tx: broadcast::Sender<Notice>) {
    let mut delay = Duration::from_millis(100);
    let mut first = true;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening = async {
                    client
                        .batch_execute("LISTEN weft_work; LISTEN weft_event")
                        .await
                };
                // The connection makes progress only while it is polled.
                let mut listening = std::pin::pin!(listening);
                let ok = loop {
                    tokio::select! {
                        r = &mut listening => break r.is_ok(),
                        m = messages.next() => if m.is_none() { break false },
                    }
                };
                if ok {
                    delay = Duration::from_millis(100);
                    if !first {
                        tracing::warn!("listening on the store again");
                        let _ = tx.send(Notice::Reconnected);
                    }
                    first = false;
                    while let Some(m) = messages.next().await {
                        if let Ok(AsyncMessage::Notification(n)) = m {
                            let notice = match n.channel() {
                                "weft_event" => Notice::Event(n.payload().to_owned()),
                                _ => Notice::Work,
                            };
                            // No receiver yet is no reason to stop.
                            let _ = tx.send(notice);
                        }
                    }
                }
                tracing::warn!("the store's notification connection was lost");
            }
            Err(e) => tracing::warn!("listening on the store: {e}"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
