//! The journal: weft's only access to redb.
//!
//! Callers queue write requests; a writer takes all requests waiting at that
//! moment, applies them in one transaction, appends the transaction's
//! changes to the write-ahead log and syncs it once (group commit; see
//! [`wal`]: redb itself commits without syncing and is checkpointed now and
//! then), and only then answers each request, so a result is durable before
//! anyone acts on it. The writer is the journal's own thread, except that a durable
//! append of the only instance in memory (as with `weft run`), with no other
//! append in flight, commits on its caller's thread when the writer is free,
//! sparing two thread hand-offs per step. Whoever writes holds the writer
//! lock and takes the queue in order, so requests are applied in the order
//! they were queued. Reads use their own read transactions and may run on
//! any thread.
//!
//! Tables:
//! - `instances`: id → [`InstanceRecord`]
//! - `journal`: (id, seq) → [`Entry`], the ordered history of an instance
//! - `inbox`: (id, seq) → [`EventRecord`], events not yet delivered
//! - `meta`: format (1 closed, 3 open or crashed: see `FORMAT_OPEN`) and
//!   counters
//!
//! Wake times live in the entries themselves (a sleep's `wake_ms`, a wait's
//! `deadline_ms`, a failed attempt's `retry_ms`): a server resumes every
//! unfinished instance at start and each one's task keeps its own timer.
//! (Journals written before this have a `timers` table, which is unused.)

mod check;
mod embedded;
mod postgres;
mod recover;
mod reply;
mod types;
mod wal;
mod writer;

pub use check::{Finding, Report, check, discard_log_from};
pub use embedded::{Embedded, Live};
pub use postgres::{Lease, Notice, Owner, Postgres};
use tokio::sync::oneshot;
pub use types::*;
use writer::Op;

use std::path::Path;
use std::time::Duration;

use redb::TableDefinition;

const INSTANCES: TableDefinition<&str, &[u8]> = TableDefinition::new("instances");
const JOURNAL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("journal");
const INBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("inbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key: the journal's format.
const FORMAT: &str = "format";
/// Format of a journal that was closed: redb holds every batch.
const FORMAT_CLOSED: u64 = 1;
/// Format while a journal with a log without its file header was open
/// (weft before the log's header): opened after a crash, its log is read as
/// that weft wrote it.
const FORMAT_OPEN_LEGACY: u64 = 2;
/// Format while the journal is open, and so after a crash: the batches
/// since redb's last checkpoint may be in the write-ahead log only. A weft
/// from before reads formats 1 and 2 only, so it refuses such a data dir
/// instead of opening it without them.
const FORMAT_OPEN: u64 = 3;

/// Largest step result or event payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// What a user can do about a damaged journal.
const DAMAGED_HINT: &str = "weft refuses to open it rather than lose or change what it holds. \
Keep a copy of the data dir, run `weft check` for a report, and restore the data dir from a backup";

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("the data dir is in use by another weft process")]
    InUse,
    /// redb failed (I/O, a full disk); its error is kept.
    #[error("journal storage error: {0}")]
    Database(redb::Error),
    /// A journal file could not be read or written; the I/O error is kept.
    #[error("journal storage error: {what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("journal format error: {0}")]
    Format(String),
    /// The database file fails redb's checks.
    #[error("the journal is damaged: {0}. {DAMAGED_HINT}")]
    Damaged(String),
    /// The write-ahead log cannot be trusted from `offset` on.
    #[error(
        "the journal is damaged: its write-ahead log {} cannot be trusted from byte {offset} on: {what}. \
{DAMAGED_HINT}, or run `weft check --repair` to give up the results logged from that byte on",
        path.display()
    )]
    LogDamaged {
        path: std::path::PathBuf,
        offset: u64,
        what: String,
    },
    #[error("no instance with id `{0}`")]
    UnknownInstance(String),
    #[error("instance `{id}` is {status}; it accepts no more events")]
    Finished { id: String, status: &'static str },
    #[error("the journal writer has stopped")]
    Closed,
    /// Another host took the instance (this one's lease ran out, or it
    /// never owned it): this host may not write it any more.
    #[error(
        "instance `{0}` is not this host's any more: another host took it (or this host never \
         owned it), so this host writes nothing more of it"
    )]
    Fenced(String),
}

impl From<redb::Error> for JournalError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::DatabaseAlreadyOpen => JournalError::InUse,
            redb::Error::Corrupted(m) => JournalError::Damaged(m),
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                JournalError::Damaged(io.to_string())
            }
            e @ (redb::Error::TableTypeMismatch { .. }
            | redb::Error::TableIsMultimap(_)
            | redb::Error::TableIsNotMultimap(_)
            | redb::Error::TypeDefinitionChanged { .. }) => JournalError::Damaged(e.to_string()),
            other => JournalError::Database(other),
        }
    }
}

macro_rules! redb_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for JournalError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
redb_error_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::DatabaseError
);

/// What creating an instance did.
#[derive(Debug)]
pub enum Created {
    New(InstanceRecord),
    /// An instance with that id already existed; it is returned unchanged.
    Existing(InstanceRecord),
}

/// A change of an instance's state.
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub status: Status,
    pub output: Option<Box<serde_json::value::RawValue>>,
    pub error: Option<ErrorInfo>,
}

/// A handle to the journal. Cheap to clone.
///
/// The journal is the store seam: everything durable goes through it, to
/// the embedded redb journal (the default, [`Embedded`]) or to PostgreSQL
/// ([`Postgres`]), which many hosts can share.
#[derive(Clone)]
pub struct Journal {
    store: Store,
}

#[derive(Clone)]
enum Store {
    Embedded(Embedded),
    Postgres(Postgres),
}

impl Journal {
    /// Opens (or creates) the embedded journal file. Fails with
    /// [`JournalError::InUse`] when another process has it open.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Ok(Journal {
            store: Store::Embedded(Embedded::open(path)?),
        })
    }

    /// Connects to the journal in PostgreSQL at `url`, applying the
    /// schema's migrations. With a `lease`, this process runs instances
    /// (see [`Postgres::open`]).
    pub async fn connect(url: &str, lease: Option<Duration>) -> Result<Journal, JournalError> {
        Ok(Journal {
            store: Store::Postgres(Postgres::open(url, lease).await?),
        })
    }

    /// Whether a new step of `id` may start now: always on the embedded
    /// journal; on a shared store, while this host owns the instance and
    /// its lease surely holds.
    pub fn may_run_now(&self, id: &str) -> bool {
        match &self.store {
            Store::Embedded(_) => true,
            Store::Postgres(p) => p.may_run_now(id),
        }
    }

    /// Waits until a new step of `id` may start (see
    /// [`Journal::may_run_now`]); fails once another host has it.
    pub async fn may_run(&self, id: &str) -> Result<(), JournalError> {
        match &self.store {
            Store::Embedded(_) => Ok(()),
            Store::Postgres(p) => p.may_run(id).await,
        }
    }

    /// The shared database, when the journal is in one.
    pub fn postgres(&self) -> Option<&Postgres> {
        match &self.store {
            Store::Postgres(p) => Some(p),
            Store::Embedded(_) => None,
        }
    }

    #[cfg(test)]
    fn open_checkpointing_at(path: &Path, checkpoint_bytes: u64) -> Result<Journal, JournalError> {
        Ok(Journal {
            store: Store::Embedded(Embedded::open_checkpointing_at(path, checkpoint_bytes)?),
        })
    }

    /// Queues a write request for the store's writer.
    fn send(&self, op: Op) -> Result<(), JournalError> {
        match &self.store {
            Store::Embedded(s) => s.send(op),
            Store::Postgres(s) => s.send(op),
        }
    }

    /// Queues a request made with a reply channel and waits for the reply.
    async fn request<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, JournalError>>) -> Op,
    ) -> Result<T, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(op(tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Creates an instance unless one with the same id exists.
    pub async fn create(&self, rec: InstanceRecord) -> Result<Created, JournalError> {
        self.request(|tx| Op::Create(rec, tx)).await
    }

    /// Sets an instance's status (and output or error); returns the record
    /// as stored.
    pub async fn update(
        &self,
        id: &str,
        update: StatusUpdate,
    ) -> Result<InstanceRecord, JournalError> {
        self.request(|tx| Op::Update(id.to_owned(), update, Some(tx)))
            .await
    }

    /// Sets an instance's status without waiting: it is visible at once to
    /// readers after the writer's next commit and durable with the next
    /// durable write. For states a crash may lose (`running`: an instance
    /// found `queued` after a restart is simply run).
    pub fn update_lazy(&self, id: &str, update: StatusUpdate) {
        let _ = self.send(Op::Update(id.to_owned(), update, None));
    }

    /// Removes an instance's journal entries from sequence number `from` on.
    pub async fn truncate(&self, id: &str, from: u64) -> Result<(), JournalError> {
        self.request(|tx| Op::Truncate(id.to_owned(), from, tx))
            .await
    }

    /// Removes an instance, its journal and its inbox.
    pub async fn delete(&self, id: &str) -> Result<(), JournalError> {
        self.request(|tx| Op::Delete(id.to_owned(), tx)).await
    }

    /// Pins an instance to another component version.
    pub async fn set_version(&self, id: &str, digest: &str) -> Result<(), JournalError> {
        self.request(|tx| Op::SetVersion(id.to_owned(), digest.to_owned(), tx))
            .await
    }

    /// Counts an instance in memory while the guard lives (the embedded
    /// journal commits on its caller's thread only while there is one).
    pub fn live(&self) -> Option<Live> {
        match &self.store {
            Store::Embedded(s) => Some(s.live()),
            Store::Postgres(_) => None,
        }
    }

    /// Appends entries and waits until they are durable.
    pub async fn append(&self, id: &str, entries: Vec<Entry>) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        let op = Op::Append {
            id: id.to_owned(),
            entries,
            durable: true,
            reply: Some(tx),
        };
        match &self.store {
            Store::Embedded(s) => s.append(op, rx).await,
            Store::Postgres(s) => {
                s.send(op)?;
                rx.await.map_err(|_| JournalError::Closed)?
            }
        }
    }

    /// Appends entries without waiting. They become durable with the next
    /// durable write (the writer keeps order), which is enough for values
    /// that only matter once a later durable call depends on them.
    pub fn append_lazy(&self, id: &str, entries: Vec<Entry>) {
        let _ = self.send(Op::Append {
            id: id.to_owned(),
            entries,
            durable: false,
            reply: None,
        });
    }

    /// Buffers an event in the instance's inbox.
    pub async fn push_event(&self, id: &str, event: EventRecord) -> Result<(), JournalError> {
        self.request(|tx| Op::PushEvent(id.to_owned(), event, tx))
            .await
    }

    /// Atomically takes the oldest buffered event of `event_type` and
    /// journals its delivery to wait (`name`, `n`). Without such an event it
    /// returns `None`, or, with `or_timeout`, journals a timeout instead.
    pub async fn take_event(
        &self,
        id: &str,
        name: &str,
        n: u32,
        event_type: &str,
        or_timeout: bool,
    ) -> Result<Option<WaitResult>, JournalError> {
        self.request(|reply| Op::TakeEvent {
            id: id.to_owned(),
            name: name.to_owned(),
            n,
            event_type: event_type.to_owned(),
            or_timeout,
            reply,
        })
        .await
    }

    /// Reads one instance.
    pub async fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, JournalError> {
        match &self.store {
            Store::Embedded(s) => s.instance(id),
            Store::Postgres(s) => s.instance(id).await,
        }
    }

    /// Lists instances, optionally only those with `status`, ordered by id.
    pub async fn list(&self, status: Option<Status>) -> Result<Vec<InstanceRecord>, JournalError> {
        match &self.store {
            Store::Embedded(s) => s.list(status),
            Store::Postgres(s) => s.list(status).await,
        }
    }

    /// How many instances each workflow has in each status:
    /// `(workflow, status, count)`.
    pub async fn counts(&self) -> Result<Vec<(String, String, u64)>, JournalError> {
        match &self.store {
            Store::Embedded(s) => {
                let mut by = std::collections::BTreeMap::new();
                for r in s.list(None)? {
                    *by.entry((r.workflow, r.status.as_str().to_owned()))
                        .or_insert(0) += 1;
                }
                Ok(by.into_iter().map(|((w, s), n)| (w, s, n)).collect())
            }
            Store::Postgres(s) => s.counts().await,
        }
    }

    /// Reads an instance's journal in order.
    pub async fn entries(&self, id: &str) -> Result<Vec<(u64, Entry)>, JournalError> {
        match &self.store {
            Store::Embedded(s) => s.entries(id),
            Store::Postgres(s) => s.entries(id).await,
        }
    }

    /// Events buffered for an instance and not yet delivered.
    pub async fn inbox(&self, id: &str) -> Result<Vec<EventRecord>, JournalError> {
        match &self.store {
            Store::Embedded(s) => s.inbox(id),
            Store::Postgres(s) => s.inbox(id).await,
        }
    }

    /// Number of journal entries over all instances.
    pub async fn entry_count(&self) -> Result<u64, JournalError> {
        match &self.store {
            Store::Embedded(s) => s.entry_count(),
            Store::Postgres(s) => s.entry_count().await,
        }
    }
}

#[cfg(test)]
mod tests;
