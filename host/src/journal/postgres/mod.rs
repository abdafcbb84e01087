//! The journal on PostgreSQL, for many hosts over one database.
//!
//! Writes go through the same requests ([`Op`]) as the embedded journal's,
//! to one writer task with its own connection. It takes every request
//! waiting, sends their statements pipelined in one transaction and commits
//! (`synchronous_commit` on), and only then answers each: one durable
//! commit for many instances' steps (group commit). Reads use pooled
//! connections. The schema is in `host/migrations/`, applied on start under
//! an advisory lock so that hosts starting together migrate once.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{NoTls, Row};

use super::writer::Op;
use super::*;

mod cluster;
mod lease;
mod writer;

pub use cluster::{Notice, Owner};
pub use lease::Lease;
use writer::{Writer, run_writer};

mod embedded_migrations {
    refinery::embed_migrations!("migrations");
}

/// Connections to the database (the writer's is its own).
const POOL_SIZE: usize = 16;

/// The columns of `weft_instances` that make an [`InstanceRecord`], in the
/// order [`record`] reads them.
const RECORD: &str = "id, workflow, digest, input, status, output, error, created_ms, updated_ms, parent, seed, traceparent";

/// A handle to the journal in PostgreSQL. Cheap to clone. The writer task
/// ends by itself once the last handle (the last sender of `ops`) is gone
/// and it has written what was queued.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    ops: mpsc::UnboundedSender<Op>,
    /// This host's lease, in a process that runs instances.
    lease: Option<Arc<Lease>>,
    notices: broadcast::Sender<Notice>,
}

fn pg_error(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(format!("PostgreSQL: {e}"))
}

impl Postgres {
    /// Connects to `url` (`postgres://…`), applies the schema's migrations
    /// and starts the writer. With a `lease`, this process runs instances:
    /// it registers as a host with a lease of that length, renews it, and
    /// listens for other hosts' notices.
    pub async fn open(url: &str, lease: Option<Duration>) -> Result<Postgres, JournalError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| pg_error(format!("the store URL `{}`: {e}", redact_url(url))))?;
        let pool = new_pool(&config, POOL_SIZE)?;
        let mut writer = Writer::connect(&config, url, true).await?;
        let lease = match lease {
            Some(d) => {
                // The lease's own connections.
                let own = new_pool(&config, 2)?;
                let lease = Lease::register(&own, d).await?;
                tokio::spawn(lease.clone().keep(own));
                Some(lease)
            }
            None => None,
        };
        writer.lease = lease.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_writer(writer, rx));
        let notices = broadcast::channel(4096).0;
        if lease.is_some() {
            tokio::spawn(cluster::listen(config, notices.clone()));
        }
        Ok(Postgres {
            pool,
            ops: tx,
            lease,
            notices,
        })
    }

    /// Whether a step of `id` may start now (see [`Lease`]).
    pub(super) fn may_run_now(&self, id: &str) -> bool {
        self.lease.as_ref().is_none_or(|l| l.may_run_now(id))
    }

    /// Waits until a step of `id` may start (see [`Lease`]).
    pub(super) async fn may_run(&self, id: &str) -> Result<(), JournalError> {
        match &self.lease {
            Some(l) => l.may_run(id).await,
            None => Ok(()),
        }
    }

    pub(super) fn send(&self, op: Op) -> Result<(), JournalError> {
        self.ops.send(op).map_err(|_| JournalError::Closed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        self.pool.get().await.map_err(pg_error)
    }

    pub(super) async fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, JournalError> {
        let c = self.client().await?;
        let q = format!("SELECT {RECORD} FROM weft_instances WHERE id = $1");
        match c.query_opt(&q, &[&id]).await.map_err(pg_error)? {
            Some(row) => Ok(Some(record(&row)?)),
            None => Ok(None),
        }
    }

    pub(super) async fn list(
        &self,
        status: Option<Status>,
    ) -> Result<Vec<InstanceRecord>, JournalError> {
        let c = self.client().await?;
        let rows = match status {
            Some(s) => {
                let q =
                    format!("SELECT {RECORD} FROM weft_instances WHERE status = $1 ORDER BY id");
                c.query(&q, &[&s.as_str()]).await
            }
            None => {
                let q = format!("SELECT {RECORD} FROM weft_instances ORDER BY id");
                c.query(&q, &[]).await
            }
        }
        .map_err(pg_error)?;
        rows.iter().map(record).collect()
    }

    pub(super) async fn counts(&self) -> Result<Vec<(String, String, u64)>, JournalError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT workflow, status, count(*) FROM weft_instances GROUP BY workflow, status",
                &[],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get::<_, i64>(2) as u64))
            .collect())
    }

    pub(super) async fn entries(&self, id: &str) -> Result<Vec<(u64, Entry)>, JournalError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT seq, entry FROM weft_entries WHERE instance_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter()
            .map(|r| Ok((r.get::<_, i64>(0) as u64, json(r.get(1))?)))
            .collect()
    }

    pub(super) async fn inbox(&self, id: &str) -> Result<Vec<EventRecord>, JournalError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT event FROM weft_inbox WHERE instance_id = $1 ORDER BY seq",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(|r| json(r.get(0))).collect()
    }

    pub(super) async fn entry_count(&self) -> Result<u64, JournalError> {
        let c = self.client().await?;
        let row = c
            .query_one("SELECT count(*) FROM weft_entries", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Stores a component's bytes under its digest (once).
    pub async fn put_component(&self, digest: &str, bytes: &[u8]) -> Result<(), JournalError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO weft_components (digest, bytes, created_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO NOTHING",
            &[&digest, &bytes, &(now_ms() as i64)],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// The bytes of a stored component.
    pub async fn component(&self, digest: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT bytes FROM weft_components WHERE digest = $1",
                &[&digest],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.map(|r| r.get(0)))
    }
}

/// A pool of up to `size` connections.
fn new_pool(config: &tokio_postgres::Config, size: usize) -> Result<Pool, JournalError> {
    let manager = Manager::from_config(
        config.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(pg_error)
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Applies the schema's migrations, one host at a time.
async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), JournalError> {
    // Any fixed key: hosts starting together wait for the first one.
    const LOCK: i64 = 0x0077_6566_746d_6967; // "weftmig"
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK])
        .await
        .map_err(pg_error)?;
    let result = embedded_migrations::migrations::runner()
        .set_migration_table_name("weft_schema_history")
        .run_async(client)
        .await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK])
        .await;
    result.map_err(|e| pg_error(format!("applying the schema: {e}")))?;
    unlocked.map_err(pg_error)?;
    Ok(())
}

fn json<T: for<'de> serde::Deserialize<'de>>(text: &str) -> Result<T, JournalError> {
    serde_json::from_str(text).map_err(|e| JournalError::Format(e.to_string()))
}

fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("journal records serialize")
}

fn record(row: &Row) -> Result<InstanceRecord, JournalError> {
    let raw = |s: String| {
        serde_json::value::RawValue::from_string(s).map_err(|e| JournalError::Format(e.to_string()))
    };
    let status: &str = row.get(4);
    Ok(InstanceRecord {
        id: row.get(0),
        workflow: row.get(1),
        digest: row.get(2),
        input: raw(row.get(3))?,
        status: status
            .parse()
            .map_err(|_| JournalError::Format(format!("unknown status `{status}`")))?,
        output: row.get::<_, Option<String>>(5).map(raw).transpose()?,
        error: row
            .get::<_, Option<&str>>(6)
            .map(json::<ErrorInfo>)
            .transpose()?,
        created_ms: row.get::<_, i64>(7) as u64,
        updated_ms: row.get::<_, i64>(8) as u64,
        parent: row.get(9),
        seed: row.get::<_, i64>(10) as u64,
        traceparent: row.get(11),
    })
}
