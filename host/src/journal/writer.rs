//! The journal's write side: the requests, the writer that applies a batch
//! of them in one transaction and logs it (see [`super::wal`]), and the
//! tables it opens.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::reply::Reply;
use super::wal::{Change, Changes, PUT, REMOVE, REMOVE_FROM, TableId, Wal};
use super::*;

/// `meta` key: the last log batch redb holds.
pub(super) const WAL_BATCH: &str = "wal_batch";

pub(super) enum Op {
    Truncate(String, u64, oneshot::Sender<Result<(), JournalError>>),
    Delete(String, oneshot::Sender<Result<(), JournalError>>),
    SetVersion(String, String, oneshot::Sender<Result<(), JournalError>>),
    Create(
        InstanceRecord,
        oneshot::Sender<Result<Created, JournalError>>,
    ),
    /// Without a reply the update is not durable by itself: it becomes
    /// durable with the next durable write.
    Update(
        String,
        StatusUpdate,
        Option<oneshot::Sender<Result<InstanceRecord, JournalError>>>,
    ),
    Append {
        id: String,
        entries: Vec<Entry>,
        durable: bool,
        reply: Option<oneshot::Sender<Result<(), JournalError>>>,
    },
    PushEvent(
        String,
        EventRecord,
        oneshot::Sender<Result<(), JournalError>>,
    ),
    TakeEvent {
        id: String,
        name: String,
        n: u32,
        event_type: String,
        or_timeout: bool,
        reply: oneshot::Sender<Result<Option<WaitResult>, JournalError>>,
    },
}

impl Op {
    pub(super) fn durable(&self) -> bool {
        match self {
            Op::Append { durable, .. } => *durable,
            Op::Update(_, _, reply) => reply.is_some(),
            _ => true,
        }
    }
}

pub(super) struct Writer {
    db: Arc<Database>,
    wal: Wal,
    /// The log record being staged (kept for its buffer).
    changes: Changes,
    /// Log size past which a batch is followed by a checkpoint.
    checkpoint_bytes: u64,
    next_seq: HashMap<String, u64>,
    next_event: Option<u64>,
}

impl Writer {
    pub(super) fn new(db: Arc<Database>, wal: Wal, checkpoint_bytes: u64) -> Self {
        Writer {
            db,
            wal,
            changes: Changes::default(),
            checkpoint_bytes,
            next_seq: HashMap::new(),
            next_event: None,
        }
    }

    /// Applies a batch in one transaction. Each op's effects are staged and
    /// logged; the log record is written (and synced if any op is durable)
    /// before the transaction commits, so whatever a reader sees of a
    /// durable op is durable. On a failure every op gets the error, and the
    /// sequence caches are dropped so they are reloaded from the database.
    pub(super) fn apply(&mut self, batch: Vec<Op>) {
        let durable = batch.iter().any(Op::durable);
        let (ops, started) = (batch.len(), std::time::Instant::now());
        match self.commit(batch, durable) {
            Ok(replies) => {
                crate::metrics::get().committed(ops, started.elapsed());
                replies.into_iter().for_each(Reply::send);
                if self.wal.len() >= self.checkpoint_bytes
                    && let Err(e) = self.checkpoint()
                {
                    tracing::error!("journal checkpoint failed: {e}");
                }
            }
            Err(e) => {
                tracing::error!("journal commit failed: {e}");
                self.next_seq.clear();
                self.next_event = None;
                // The ops were consumed by staging; their senders were moved
                // into replies that are dropped here, which the callers see
                // as `Closed`. A failed commit is fatal to those calls.
            }
        }
    }

    fn commit(&mut self, batch: Vec<Op>, durable: bool) -> Result<Vec<Reply>, JournalError> {
        let mut txn = self.db.begin_write()?;
        // redb keeps the pages in memory; the log makes the batch durable.
        txn.set_durability(Durability::None)?;
        // Taken for the batch (the tables borrow it) and put back after, so
        // that its buffer is reused.
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        let mut replies = Vec::with_capacity(batch.len());
        {
            let mut t = Tables::new(&txn, Some(&mut changes));
            for op in batch {
                replies.push(self.stage(&mut t, op));
            }
            if t.log.as_ref().is_some_and(|c| !c.is_empty()) {
                t.meta()?.insert(WAL_BATCH, self.wal.next_batch())?;
            }
        }
        let written = if changes.is_empty() {
            if durable {
                // Lazy writes of earlier batches may be unsynced.
                self.wal.sync()?;
            }
            None
        } else {
            self.wal.write(&mut changes, durable)?;
            Some(changes.record_len())
        };
        self.changes = changes;
        if let Err(e) = txn.commit() {
            if let Some(len) = written {
                self.wal.unwrite(len);
            }
            return Err(e.into());
        }
        Ok(replies)
    }

    /// Commits redb durably, so that it holds every batch, and starts the
    /// log over.
    pub(super) fn checkpoint(&mut self) -> Result<(), JournalError> {
        if self.wal.len() == 0 {
            return Ok(());
        }
        self.commit_durably(None)
    }

    /// The last checkpoint, which also marks the journal closed.
    pub(super) fn close(&mut self) -> Result<(), JournalError> {
        self.commit_durably(Some(FORMAT_CLOSED))
    }

    fn commit_durably(&mut self, format: Option<u64>) -> Result<(), JournalError> {
        let t0 = std::time::Instant::now();
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert(WAL_BATCH, self.wal.batch())?;
            if let Some(f) = format {
                meta.insert(FORMAT, f)?;
            }
        }
        txn.commit()?;
        tracing::debug!(
            "checkpoint of {} log bytes took {:?}",
            self.wal.len(),
            t0.elapsed()
        );
        self.wal.restart();
        Ok(())
    }

    fn stage(&mut self, t: &mut Tables<'_, '_>, op: Op) -> Reply {
        match op {
            Op::Create(rec, reply) => Reply::Created(reply, self.create(t, rec)),
            Op::Truncate(id, from, reply) => Reply::Unit(Some(reply), self.truncate(t, &id, from)),
            Op::Delete(id, reply) => Reply::Unit(Some(reply), self.delete(t, &id)),
            Op::SetVersion(id, digest, reply) => Reply::Unit(
                Some(reply),
                self.modify(t, &id, |rec| rec.digest = digest).map(drop),
            ),
            Op::Update(id, update, reply) => Reply::Record(reply, self.update(t, &id, update)),
            Op::Append {
                id, entries, reply, ..
            } => Reply::Unit(reply, self.append(t, &id, &entries)),
            Op::PushEvent(id, event, reply) => {
                Reply::Unit(Some(reply), self.push_event(t, &id, event))
            }
            Op::TakeEvent {
                id,
                name,
                n,
                event_type,
                or_timeout,
                reply,
            } => Reply::Wait(
                reply,
                self.take_event(t, &id, &name, n, &event_type, or_timeout),
            ),
        }
    }

    fn create(
        &mut self,
        t: &mut Tables<'_, '_>,
        rec: InstanceRecord,
    ) -> Result<Created, JournalError> {
        if let Some(existing) = t.instances()?.get(rec.id.as_str())? {
            return Ok(Created::Existing(decode(existing.value())?));
        }
        t.put_instance(rec.id.as_str(), &encode(&rec))?;
        Ok(Created::New(rec))
    }

    fn update(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        u: StatusUpdate,
    ) -> Result<InstanceRecord, JournalError> {
        if u.status.is_final() {
            // Reloaded from the table should the instance be restarted.
            self.next_seq.remove(id);
        }
        self.modify(t, id, |rec| {
            rec.status = u.status;
            rec.output = u.output;
            rec.error = u.error;
        })
    }

    fn modify(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        f: impl FnOnce(&mut InstanceRecord),
    ) -> Result<InstanceRecord, JournalError> {
        let mut rec: InstanceRecord = match t.instances()?.get(id)? {
            Some(v) => decode(v.value())?,
            None => return Err(JournalError::UnknownInstance(id.to_owned())),
        };
        f(&mut rec);
        rec.updated_ms = now_ms();
        t.put_instance(id, &encode(&rec))?;
        Ok(rec)
    }

    fn seq(&mut self, t: &mut Tables<'_, '_>, id: &str) -> Result<u64, JournalError> {
        if let Some(s) = self.next_seq.get(id) {
            return Ok(*s);
        }
        let next = match t.journal()?.range((id, 0u64)..=(id, u64::MAX))?.next_back() {
            Some(row) => row?.0.value().1 + 1,
            None => 0,
        };
        Ok(next)
    }

    fn append(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        entries: &[Entry],
    ) -> Result<(), JournalError> {
        let mut seq = self.seq(t, id)?;
        for e in entries {
            t.put_seq(TableId::Journal, id, seq, &encode(e))?;
            seq += 1;
        }
        match self.next_seq.get_mut(id) {
            Some(s) => *s = seq,
            None => {
                self.next_seq.insert(id.to_owned(), seq);
            }
        }
        Ok(())
    }

    fn truncate(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        from: u64,
    ) -> Result<(), JournalError> {
        t.remove_from(TableId::Journal, id, from)?;
        self.next_seq.remove(id);
        Ok(())
    }

    fn delete(&mut self, t: &mut Tables<'_, '_>, id: &str) -> Result<(), JournalError> {
        if !t.remove_instance(id)? {
            return Err(JournalError::UnknownInstance(id.to_owned()));
        }
        self.truncate(t, id, 0)?;
        t.remove_from(TableId::Inbox, id, 0)?;
        Ok(())
    }

    fn push_event(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        event: EventRecord,
    ) -> Result<(), JournalError> {
        let rec: InstanceRecord = match t.instances()?.get(id)? {
            Some(v) => decode(v.value())?,
            None => return Err(JournalError::UnknownInstance(id.to_owned())),
        };
        if rec.status.is_final() {
            return Err(JournalError::Finished {
                id: id.to_owned(),
                status: rec.status.as_str(),
            });
        }
        let seq = match self.next_event {
            Some(s) => s,
            None => t.meta()?.get("next_event")?.map(|v| v.value()).unwrap_or(0),
        };
        t.put_seq(TableId::Inbox, id, seq, &encode(&event))?;
        t.put_meta("next_event", seq + 1)?;
        self.next_event = Some(seq + 1);
        Ok(())
    }

    fn take_event(
        &mut self,
        t: &mut Tables<'_, '_>,
        id: &str,
        name: &str,
        n: u32,
        event_type: &str,
        or_timeout: bool,
    ) -> Result<Option<WaitResult>, JournalError> {
        let mut found = None;
        for row in t.inbox()?.range((id, 0u64)..=(id, u64::MAX))? {
            let (k, v) = row?;
            let event: EventRecord = decode(v.value())?;
            if event.event_type == event_type {
                found = Some((k.value().1, event));
                break;
            }
        }
        let result = match found {
            Some((seq, event)) => {
                t.remove_seq(TableId::Inbox, id, seq)?;
                WaitResult::Delivered { event }
            }
            None if or_timeout => WaitResult::TimedOut,
            None => return Ok(None),
        };
        self.append(
            t,
            id,
            &[Entry::WaitEnd {
                name: name.to_owned(),
                n,
                ended_ms: now_ms(),
                result: result.clone(),
            }],
        )?;
        Ok(Some(result))
    }
}

type SeqTable<'txn> = redb::Table<'txn, (&'static str, u64), &'static [u8]>;

/// The tables of one write transaction, each opened once per batch, when
/// first used. Changes go through the `put_*` and `remove_*` methods, which
/// record them in the batch's log record.
pub(super) struct Tables<'txn, 'c> {
    txn: &'txn redb::WriteTransaction,
    instances: Option<redb::Table<'txn, &'static str, &'static [u8]>>,
    journal: Option<SeqTable<'txn>>,
    inbox: Option<SeqTable<'txn>>,
    meta: Option<redb::Table<'txn, &'static str, u64>>,
    /// Where changes are logged (none while replaying the log).
    log: Option<&'c mut Changes>,
}

macro_rules! table_accessor {
    ($name:ident, $def:ident, $k:ty, $v:ty) => {
        pub(super) fn $name(&mut self) -> Result<&mut redb::Table<'txn, $k, $v>, JournalError> {
            if self.$name.is_none() {
                self.$name = Some(self.txn.open_table($def)?);
            }
            Ok(self.$name.as_mut().expect("opened above"))
        }
    };
}

impl<'txn, 'c> Tables<'txn, 'c> {
    pub(super) fn new(txn: &'txn redb::WriteTransaction, log: Option<&'c mut Changes>) -> Self {
        Tables {
            txn,
            instances: None,
            journal: None,
            inbox: None,
            meta: None,
            log,
        }
    }

    table_accessor!(instances, INSTANCES, &'static str, &'static [u8]);
    table_accessor!(journal, JOURNAL, (&'static str, u64), &'static [u8]);
    table_accessor!(inbox, INBOX, (&'static str, u64), &'static [u8]);
    table_accessor!(meta, META, &'static str, u64);

    fn seq_table(&mut self, table: TableId) -> Result<&mut SeqTable<'txn>, JournalError> {
        match table {
            TableId::Journal => self.journal(),
            TableId::Inbox => self.inbox(),
            other => Err(JournalError::Format(format!(
                "{other:?} is not keyed by sequence"
            ))),
        }
    }

    fn note(&mut self, kind: u8, table: TableId, id: &str, seq: u64, value: &[u8]) {
        if let Some(log) = self.log.as_deref_mut() {
            log.record(kind, table, id, seq, value);
        }
    }

    fn put_instance(&mut self, id: &str, value: &[u8]) -> Result<(), JournalError> {
        self.instances()?.insert(id, value)?;
        self.note(PUT, TableId::Instances, id, 0, value);
        Ok(())
    }

    /// Whether there was an instance to remove.
    fn remove_instance(&mut self, id: &str) -> Result<bool, JournalError> {
        let found = self.instances()?.remove(id)?.is_some();
        self.note(REMOVE, TableId::Instances, id, 0, &[]);
        Ok(found)
    }

    fn put_seq(
        &mut self,
        table: TableId,
        id: &str,
        seq: u64,
        value: &[u8],
    ) -> Result<(), JournalError> {
        self.seq_table(table)?.insert((id, seq), value)?;
        self.note(PUT, table, id, seq, value);
        Ok(())
    }

    fn remove_seq(&mut self, table: TableId, id: &str, seq: u64) -> Result<(), JournalError> {
        self.seq_table(table)?.remove((id, seq))?;
        self.note(REMOVE, table, id, seq, &[]);
        Ok(())
    }

    /// Removes the keys `(id, from..)`.
    fn remove_from(&mut self, table: TableId, id: &str, from: u64) -> Result<(), JournalError> {
        self.seq_table(table)?
            .retain_in((id, from)..=(id, u64::MAX), |_, _| false)?;
        self.note(REMOVE_FROM, table, id, from, &[]);
        Ok(())
    }

    fn put_meta(&mut self, key: &str, value: u64) -> Result<(), JournalError> {
        self.meta()?.insert(key, value)?;
        self.note(PUT, TableId::Meta, key, 0, &value.to_le_bytes());
        Ok(())
    }

    /// Applies a change read from the log.
    pub(super) fn replay(&mut self, c: &Change<'_>) -> Result<(), JournalError> {
        match (c.kind, c.table) {
            (PUT, TableId::Instances) => self.put_instance(c.id, c.value),
            (REMOVE, TableId::Instances) => self.remove_instance(c.id).map(drop),
            (PUT, TableId::Meta) => {
                let v = c.value.try_into().map_err(|_| {
                    JournalError::Format("a counter in the log is not 8 bytes".into())
                })?;
                self.put_meta(c.id, u64::from_le_bytes(v))
            }
            (PUT, t) if t.sequenced() => self.put_seq(t, c.id, c.seq, c.value),
            (REMOVE, t) if t.sequenced() => self.remove_seq(t, c.id, c.seq),
            (REMOVE_FROM, t) if t.sequenced() => self.remove_from(t, c.id, c.seq),
            _ => Err(JournalError::Format(format!(
                "a change the log cannot hold: {c:?}"
            ))),
        }
    }
}
