//! The embedded journal: the queue of write requests, the writer thread
//! and the read side over redb.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use tokio::sync::oneshot;

use super::writer::{Op, Writer};
use super::*;

/// The embedded journal: redb, with group commit over its own
/// write-ahead log (see the module docs of [`super`]). Cheap to clone.
#[derive(Clone)]
pub struct Embedded {
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

impl Embedded {
    /// Opens (or creates) the journal file. Fails with
    /// [`JournalError::InUse`] when another process has it open.
    pub fn open(path: &Path) -> Result<Embedded, JournalError> {
        Self::open_checkpointing_at(path, wal::CHECKPOINT_BYTES)
    }

    /// [`Journal::open`] with the log size that triggers a checkpoint.
    pub(super) fn open_checkpointing_at(
        path: &Path,
        checkpoint_bytes: u64,
    ) -> Result<Embedded, JournalError> {
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
        Ok(Embedded {
            db,
            _closer: Arc::new(Closer(shared.clone())),
            shared,
        })
    }

    pub(super) fn send(&self, op: Op) -> Result<(), JournalError> {
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

    /// Counts an instance in memory while the guard lives. A durable append
    /// commits on its caller's thread only while one instance is in memory:
    /// with more, the thread has other instances to run.
    pub fn live(&self) -> Live {
        self.shared.live.fetch_add(1, Ordering::Relaxed);
        Live(self.shared.clone())
    }

    /// Queues a durable append (`op`, whose reply is `rx`) and waits until
    /// it is durable.
    pub(super) async fn append(
        &self,
        op: Op,
        rx: oneshot::Receiver<Result<(), JournalError>>,
    ) -> Result<(), JournalError> {
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
