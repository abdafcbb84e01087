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
mod recover;
mod types;
mod wal;
mod writer;

pub use check::{Finding, Report, check, discard_log_from};
pub use types::*;
use writer::{Op, Writer};

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

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
#[derive(Clone)]
pub struct Journal {
    db: Arc<Database>,
    shared: Arc<Shared>,
    /// Closes the queue when the last handle goes, which ends the writer
    /// thread (and releases the database file).
    _closer: Arc<Closer>,
}

/// What the handles and the writer thread share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a request is queued or the queue closes.
    queued: Condvar,
    /// Held by whoever writes.
    writer: Mutex<Writer>,
    /// Durable appends waiting for their commit.
    in_flight: AtomicUsize,
    /// Instances in memory (see [`Journal::live`]).
    live: AtomicUsize,
}

struct Queue {
    ops: VecDeque<Op>,
    closed: bool,
    /// The journal thread sleeps on `queued` (else it needs no wake-up).
    sleeping: bool,
}

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Takes up to `max` waiting requests, oldest first. Call with the
    /// writer lock.
    fn take_batch(&self, max: usize) -> Vec<Op> {
        let mut q = lock(&self.queue);
        let n = q.ops.len().min(max);
        q.ops.drain(..n).collect()
    }

    /// The journal thread: writes whatever is queued until the queue closes
    /// and is empty.
    fn run_writer(&self) {
        loop {
            {
                let mut q = lock(&self.queue);
                while q.ops.is_empty() && !q.closed {
                    q.sleeping = true;
                    q = self.queued.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.sleeping = false;
                }
                if q.ops.is_empty() {
                    drop(q);
                    // Leave redb holding everything, and the log empty.
                    if let Err(e) = lock(&self.writer).close() {
                        tracing::error!("journal checkpoint at close failed: {e}");
                    }
                    return;
                }
            }
            let mut writer = lock(&self.writer);
            let batch = self.take_batch(MAX_BATCH);
            if !batch.is_empty() {
                writer.apply(batch);
            }
        }
    }
}

struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        lock(&self.0.queue).closed = true;
        self.0.queued.notify_all();
    }
}

/// Counts a durable append in flight until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts an instance in memory until dropped ([`Journal::live`]).
pub struct Live(Arc<Shared>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Journal {
    /// Opens (or creates) the journal file. Fails with
    /// [`JournalError::InUse`] when another process has it open.
    pub fn open(path: &Path) -> Result<Journal, JournalError> {
        Self::open_checkpointing_at(path, wal::CHECKPOINT_BYTES)
    }

    /// [`Journal::open`] with the log size that triggers a checkpoint.
    fn open_checkpointing_at(path: &Path, checkpoint_bytes: u64) -> Result<Journal, JournalError> {
        let db = Database::create(path)?;
        let (db, wal) = recover::open(db, path)?;
        let db = Arc::new(db);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                ops: VecDeque::new(),
                closed: false,
                sleeping: false,
            }),
            queued: Condvar::new(),
            writer: Mutex::new(Writer::new(db.clone(), wal, checkpoint_bytes)),
            in_flight: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("weft-journal".into())
            .spawn(move || thread_shared.run_writer())
            .map_err(|error| JournalError::Io {
                what: "starting the journal thread".into(),
                error,
            })?;
        Ok(Journal {
            db,
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        })
    }

    fn send(&self, op: Op) -> Result<(), JournalError> {
        let mut q = lock(&self.shared.queue);
        if q.closed {
            return Err(JournalError::Closed);
        }
        q.ops.push_back(op);
        let sleeping = q.sleeping;
        drop(q);
        if sleeping {
            self.shared.queued.notify_one();
        }
        Ok(())
    }

    /// Creates an instance unless one with the same id exists.
    pub async fn create(&self, rec: InstanceRecord) -> Result<Created, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Create(rec, tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Sets an instance's status (and output or error); returns the record
    /// as stored.
    pub async fn update(
        &self,
        id: &str,
        update: StatusUpdate,
    ) -> Result<InstanceRecord, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Update(id.to_owned(), update, Some(tx)))?;
        rx.await.map_err(|_| JournalError::Closed)?
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
        let (tx, rx) = oneshot::channel();
        self.send(Op::Truncate(id.to_owned(), from, tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Removes an instance, its journal and its inbox.
    pub async fn delete(&self, id: &str) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Delete(id.to_owned(), tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Pins an instance to another component version.
    pub async fn set_version(&self, id: &str, digest: &str) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::SetVersion(id.to_owned(), digest.to_owned(), tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Counts an instance in memory while the guard lives. A durable append
    /// commits on its caller's thread only while one instance is in memory:
    /// with more, the thread has other instances to run.
    pub fn live(&self) -> Live {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        Live(self.shared.clone())
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
        let alone = self.shared.in_flight.fetch_add(1, Ordering::Relaxed) == 0
            && self.shared.live.load(Ordering::Relaxed) <= 1;
        let _in_flight = InFlight(&self.shared.in_flight);
        // With no other append waiting and no other instance in memory,
        // commit here when the writer is free: this blocks the calling
        // thread for one commit, but it has nothing else to run, and the
        // step goes on without waking the journal thread and then being
        // woken by it.
        if alone && let Ok(mut writer) = self.shared.writer.try_lock() {
            // All of the queue: it may hold this instance's earlier writes.
            let mut batch = self.shared.take_batch(usize::MAX);
            batch.push(op);
            writer.apply(batch);
        } else {
            self.send(op)?;
        }
        rx.await.map_err(|_| JournalError::Closed)?
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
        let (tx, rx) = oneshot::channel();
        self.send(Op::PushEvent(id.to_owned(), event, tx))?;
        rx.await.map_err(|_| JournalError::Closed)?
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
        let (tx, rx) = oneshot::channel();
        self.send(Op::TakeEvent {
            id: id.to_owned(),
            name: name.to_owned(),
            n,
            event_type: event_type.to_owned(),
            or_timeout,
            reply: tx,
        })?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Reads one instance.
    pub fn instance(&self, id: &str) -> Result<Option<InstanceRecord>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INSTANCES)?;
        match table.get(id)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Lists instances, optionally only those with `status`, ordered by id.
    pub fn list(&self, status: Option<Status>) -> Result<Vec<InstanceRecord>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INSTANCES)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            let rec: InstanceRecord = decode(v.value())?;
            if status.is_none_or(|s| s == rec.status) {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Reads an instance's journal in order.
    pub fn entries(&self, id: &str) -> Result<Vec<(u64, Entry)>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOURNAL)?;
        let mut out = Vec::new();
        for row in table.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, v) = row?;
            out.push((k.value().1, decode(v.value())?));
        }
        Ok(out)
    }

    /// Events buffered for an instance and not yet delivered.
    pub fn inbox(&self, id: &str) -> Result<Vec<EventRecord>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(INBOX)?;
        let mut out = Vec::new();
        for row in table.range((id, 0u64)..=(id, u64::MAX))? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Number of journal entries over all instances.
    pub fn entry_count(&self) -> Result<u64, JournalError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(JOURNAL)?.len()?)
    }
}

#[cfg(test)]
mod tests;
