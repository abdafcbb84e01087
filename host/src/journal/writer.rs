//! The journal's write side: the requests, the writer that applies a batch
//! of them in one transaction, and the tables it opens.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::*;

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
    next_seq: HashMap<String, u64>,
    next_event: Option<u64>,
}

impl Writer {
    pub(super) fn new(db: Arc<Database>) -> Self {
        Writer {
            db,
            next_seq: HashMap::new(),
            next_event: None,
        }
    }

    /// Applies a batch in one transaction. Each op's effects are staged; on
    /// a failed commit every op gets the error, and the sequence caches are
    /// dropped so they are reloaded from the database.
    pub(super) fn apply(&mut self, batch: Vec<Op>) {
        let durable = batch.iter().any(Op::durable);
        let result = (|| -> Result<Vec<Reply>, JournalError> {
            let mut txn = self.db.begin_write()?;
            if !durable {
                txn.set_durability(Durability::None)?;
            }
            let mut replies = Vec::with_capacity(batch.len());
            {
                let mut t = Tables::new(&txn);
                for op in batch {
                    replies.push(self.stage(&mut t, op));
                }
            }
            txn.commit()?;
            Ok(replies)
        })();
        match result {
            Ok(replies) => replies.into_iter().for_each(Reply::send),
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

    fn stage(&mut self, t: &mut Tables<'_>, op: Op) -> Reply {
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

    fn create(&mut self, t: &mut Tables<'_>, rec: InstanceRecord) -> Result<Created, JournalError> {
        if let Some(existing) = t.instances()?.get(rec.id.as_str())? {
            return Ok(Created::Existing(decode(existing.value())?));
        }
        t.instances()?
            .insert(rec.id.as_str(), encode(&rec).as_slice())?;
        Ok(Created::New(rec))
    }

    fn update(
        &mut self,
        t: &mut Tables<'_>,
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
        t: &mut Tables<'_>,
        id: &str,
        f: impl FnOnce(&mut InstanceRecord),
    ) -> Result<InstanceRecord, JournalError> {
        let mut rec: InstanceRecord = match t.instances()?.get(id)? {
            Some(v) => decode(v.value())?,
            None => return Err(JournalError::UnknownInstance(id.to_owned())),
        };
        f(&mut rec);
        rec.updated_ms = now_ms();
        t.instances()?.insert(id, encode(&rec).as_slice())?;
        Ok(rec)
    }

    fn seq(&mut self, t: &mut Tables<'_>, id: &str) -> Result<u64, JournalError> {
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
        t: &mut Tables<'_>,
        id: &str,
        entries: &[Entry],
    ) -> Result<(), JournalError> {
        let mut seq = self.seq(t, id)?;
        for e in entries {
            t.journal()?.insert((id, seq), encode(e).as_slice())?;
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

    fn truncate(&mut self, t: &mut Tables<'_>, id: &str, from: u64) -> Result<(), JournalError> {
        t.journal()?
            .retain_in((id, from)..=(id, u64::MAX), |_, _| false)?;
        self.next_seq.remove(id);
        Ok(())
    }

    fn delete(&mut self, t: &mut Tables<'_>, id: &str) -> Result<(), JournalError> {
        if t.instances()?.remove(id)?.is_none() {
            return Err(JournalError::UnknownInstance(id.to_owned()));
        }
        self.truncate(t, id, 0)?;
        t.inbox()?
            .retain_in((id, 0u64)..=(id, u64::MAX), |_, _| false)?;
        Ok(())
    }

    fn push_event(
        &mut self,
        t: &mut Tables<'_>,
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
        t.inbox()?.insert((id, seq), encode(&event).as_slice())?;
        t.meta()?.insert("next_event", seq + 1)?;
        self.next_event = Some(seq + 1);
        Ok(())
    }

    fn take_event(
        &mut self,
        t: &mut Tables<'_>,
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
                t.inbox()?.remove((id, seq))?;
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

/// The tables of one write transaction, each opened once per batch, when
/// first used.
struct Tables<'txn> {
    txn: &'txn redb::WriteTransaction,
    instances: Option<redb::Table<'txn, &'static str, &'static [u8]>>,
    journal: Option<redb::Table<'txn, (&'static str, u64), &'static [u8]>>,
    inbox: Option<redb::Table<'txn, (&'static str, u64), &'static [u8]>>,
    meta: Option<redb::Table<'txn, &'static str, u64>>,
}

macro_rules! table_accessor {
    ($name:ident, $def:ident, $k:ty, $v:ty) => {
        fn $name(&mut self) -> Result<&mut redb::Table<'txn, $k, $v>, JournalError> {
            if self.$name.is_none() {
                self.$name = Some(self.txn.open_table($def)?);
            }
            Ok(self.$name.as_mut().expect("opened above"))
        }
    };
}

impl<'txn> Tables<'txn> {
    fn new(txn: &'txn redb::WriteTransaction) -> Self {
        Tables {
            txn,
            instances: None,
            journal: None,
            inbox: None,
            meta: None,
        }
    }

    table_accessor!(instances, INSTANCES, &'static str, &'static [u8]);
    table_accessor!(journal, JOURNAL, (&'static str, u64), &'static [u8]);
    table_accessor!(inbox, INBOX, (&'static str, u64), &'static [u8]);
    table_accessor!(meta, META, &'static str, u64);
}

enum Reply {
    Created(
        oneshot::Sender<Result<Created, JournalError>>,
        Result<Created, JournalError>,
    ),
    Unit(
        Option<oneshot::Sender<Result<(), JournalError>>>,
        Result<(), JournalError>,
    ),
    Wait(
        oneshot::Sender<Result<Option<WaitResult>, JournalError>>,
        Result<Option<WaitResult>, JournalError>,
    ),
    Record(
        Option<oneshot::Sender<Result<InstanceRecord, JournalError>>>,
        Result<InstanceRecord, JournalError>,
    ),
}

impl Reply {
    fn send(self) {
        match self {
            Reply::Created(tx, r) => drop(tx.send(r)),
            Reply::Unit(Some(tx), r) => drop(tx.send(r)),
            Reply::Unit(None, r) => {
                if let Err(e) = r {
                    tracing::error!("journal write failed: {e}");
                }
            }
            Reply::Wait(tx, r) => drop(tx.send(r)),
            Reply::Record(Some(tx), r) => drop(tx.send(r)),
            Reply::Record(None, r) => {
                if let Err(e) = r {
                    tracing::error!("journal write failed: {e}");
                }
            }
        }
    }
}
