//! The PostgreSQL store's writer: one connection that applies the write
//! requests of many instances, a batch per transaction sent pipelined
//! (group commit), and connects again when the connection is lost.

use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls, Statement};

use super::super::reply::Reply;
use super::super::writer::Op;
use super::super::*;
use super::{Lease, RECORD, json, migrate, pg_error, record, redact_url, text};
use std::sync::Arc;

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 4096;

/// The writer's connection and its prepared statements.
pub(super) struct Writer {
    client: Client,
    statements: Statements,
    config: tokio_postgres::Config,
    url: String,
    /// The fences of a process that runs instances: its writes of an
    /// instance name the epoch it owns the instance at.
    pub(super) lease: Option<Arc<Lease>>,
}

impl Writer {
    pub(super) async fn connect(
        config: &tokio_postgres::Config,
        url: &str,
        first: bool,
    ) -> Result<Writer, JournalError> {
        let (mut client, connection) = config.connect(NoTls).await.map_err(|e| {
            pg_error(format!(
                "cannot connect to {}: {e}; is PostgreSQL running there?",
                redact_url(url)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::error!("PostgreSQL writer connection: {e}");
            }
        });
        if first {
            migrate(&mut client).await?;
        }
        let statements = Statements::prepare(&client).await.map_err(pg_error)?;
        Ok(Writer {
            client,
            statements,
            config: config.clone(),
            url: url.to_owned(),
            lease: None,
        })
    }

    /// Connects again after the connection was lost (the database
    /// restarted, the connection was killed), waiting with backoff until it
    /// succeeds.
    async fn reconnect(&mut self) {
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match Writer::connect(&self.config, &self.url, false).await {
                Ok(mut w) => {
                    tracing::warn!("journal writer reconnected to the store");
                    w.lease = self.lease.take();
                    *self = w;
                    return;
                }
                Err(e) => {
                    tracing::error!("journal writer: reconnecting: {e}; trying again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }
}

/// The writer task: applies whatever is queued, a batch per transaction,
/// until every handle is gone.
pub(super) async fn run_writer(mut writer: Writer, mut rx: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let w = W {
            c: &writer.client,
            s: &writer.statements,
            lease: writer.lease.as_deref(),
        };
        let (ops, started) = (batch.len(), std::time::Instant::now());
        let applied = apply(w, std::mem::take(&mut batch)).await;
        if applied.is_ok() {
            crate::metrics::get().committed(ops, started.elapsed());
        }
        if let Err(e) = applied {
            // Each request was answered with the error; an instance's
            // task tries again.
            tracing::error!("journal commit failed: {e}");
        }
        if writer.client.is_closed() {
            writer.reconnect().await;
        }
    }
}

pub(super) const FINAL: [&str; 3] = ["errored", "terminated", "complete"];

/// The writer's statements, prepared once on its connection, so that a
/// batch is sent in one go: a statement given as text would wait for its
/// own `prepare` first. Every write of an instance's journal or record
/// names the epoch its writer owns the instance at, and changes nothing
/// once another host has taken it ([`FENCE`]).
struct Statements {
    begin: Statement,
    commit: Statement,
    insert_instance: Statement,
    select_instance: Statement,
    update: Statement,
    append: Statement,
    truncate: Statement,
    delete_instance: Statement,
    delete_entries: Statement,
    delete_inbox: Statement,
    set_version: Statement,
    push_event: Statement,
    status: Statement,
    take_event: Statement,
}

/// True while instance `$1` is still at epoch `$3`. The row is locked in
/// share mode until the transaction ends, so a host taking the instance
/// meanwhile (which raises the epoch) waits for this transaction, and a
/// write checked against the old epoch can never land after the new
/// owner's reads.
const FENCE: &str = "EXISTS (SELECT 1 FROM weft_instances WHERE id = $1 AND epoch = $3 FOR SHARE)";

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        let select = format!("SELECT {RECORD} FROM weft_instances WHERE id = $1");
        let update = format!(
            "UPDATE weft_instances SET status = $2, output = $3, error = $4, updated_ms = $5 \
             WHERE id = $1 AND epoch = $6 RETURNING {RECORD}"
        );
        Ok(Statements {
            begin: c.prepare("BEGIN").await?,
            commit: c.prepare("COMMIT").await?,
            insert_instance: c
                .prepare(
                    "INSERT INTO weft_instances (id, workflow, digest, input, status, output, \
                     error, created_ms, updated_ms, parent, seed, owner, traceparent, epoch) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .await?,
            select_instance: c.prepare(&select).await?,
            update: c.prepare(&update).await?,
            append: c
                .prepare(&format!(
                    "INSERT INTO weft_entries (instance_id, seq, entry, epoch) \
                     SELECT $1, coalesce((SELECT max(seq) + 1 FROM weft_entries \
                                          WHERE instance_id = $1), 0) + t.i - 1, t.e, $3 \
                     FROM unnest($2::text[]) WITH ORDINALITY AS t(e, i) WHERE {FENCE}"
                ))
                .await?,
            truncate: c
                .prepare(&format!(
                    "WITH d AS (DELETE FROM weft_entries WHERE instance_id = $1 AND seq >= $2 \
                     AND {FENCE}) SELECT {FENCE}"
                ))
                .await?,
            delete_instance: c
                .prepare("DELETE FROM weft_instances WHERE id = $1 AND epoch = $2")
                .await?,
            delete_entries: c
                .prepare(
                    "DELETE FROM weft_entries WHERE instance_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM weft_instances WHERE id = $1)",
                )
                .await?,
            delete_inbox: c
                .prepare(
                    "DELETE FROM weft_inbox WHERE instance_id = $1 \
                     AND NOT EXISTS (SELECT 1 FROM weft_instances WHERE id = $1)",
                )
                .await?,
            set_version: c
                .prepare(
                    "UPDATE weft_instances SET digest = $2, updated_ms = $3 \
                     WHERE id = $1 AND epoch = $4",
                )
                .await?,
            // The owner, on whatever host, hears of the event when this
            // transaction commits.
            push_event: c
                .prepare(
                    "WITH e AS (INSERT INTO weft_inbox (instance_id, event_type, event) \
                     SELECT id, $2, $3 FROM weft_instances WHERE id = $1 AND status <> ALL($4) \
                     RETURNING instance_id) \
                     SELECT pg_notify('weft_event', instance_id) FROM e",
                )
                .await?,
            status: c
                .prepare("SELECT status FROM weft_instances WHERE id = $1")
                .await?,
            // Whether the instance is still this host's, and the event
            // taken (only then).
            take_event: c
                .prepare(
                    "WITH f AS (SELECT 1 FROM weft_instances WHERE id = $1 AND epoch = $3 \
                     FOR SHARE), \
                     d AS (DELETE FROM weft_inbox WHERE seq = \
                     (SELECT seq FROM weft_inbox WHERE instance_id = $1 AND event_type = $2 \
                      ORDER BY seq LIMIT 1 FOR UPDATE) AND EXISTS (SELECT 1 FROM f) \
                     RETURNING event) \
                     SELECT EXISTS (SELECT 1 FROM f), (SELECT event FROM d)",
                )
                .await?,
        })
    }
}

/// The writer's connection and statements.
#[derive(Clone, Copy)]
struct W<'a> {
    c: &'a Client,
    s: &'a Statements,
    lease: Option<&'a Lease>,
}

impl W<'_> {
    /// The epoch this host owns `id` at; a process that does not own it
    /// may not write it.
    fn epoch(&self, id: &str) -> Result<i64, JournalError> {
        self.lease
            .and_then(|l| l.epoch(id))
            .ok_or_else(|| JournalError::Fenced(id.to_owned()))
    }
}

/// Applies a batch in one transaction, sent pipelined: `BEGIN`, every
/// request's statements and `COMMIT` go out together and the batch costs one
/// round trip, except that a `take_event` waits for its event before its
/// entry is written. Should a statement fail, PostgreSQL aborts the
/// transaction and `COMMIT` rolls it back: no reply says it is durable.
async fn apply(w: W<'_>, mut batch: Vec<Op>) -> Result<(), JournalError> {
    // One request of one write statement (a lone step's result, as with
    // `weft run`) needs no transaction around it: its statement commits by
    // itself, one message instead of three.
    if batch.len() == 1 && matches!(batch[0], Op::Append { .. } | Op::Update(..)) {
        let reply = stage(w, batch.pop().expect("one")).await;
        if let Some(e) = reply.database_error() {
            return fail(vec![reply], pg_error(e));
        }
        reply.send();
        return Ok(());
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut segments: Vec<Vec<Op>> = vec![Vec::new()];
    for op in batch {
        let take = matches!(op, Op::TakeEvent { .. });
        if take {
            segments.push(Vec::new());
        }
        segments.last_mut().expect("one at least").push(op);
    }
    let last = segments.len() - 1;
    for (i, segment) in segments.into_iter().enumerate() {
        let begin = async {
            if i == 0 {
                w.c.execute(&w.s.begin, &[]).await.map(drop)
            } else {
                Ok(())
            }
        };
        // A segment that starts with a `take_event` sends that request's
        // entry only once the event is taken: `COMMIT` waits for it, or the
        // entry would run after the commit, outside the transaction (and an
        // event taken by a host that dies just then would be lost). Every
        // other request sends all its statements at once, so `COMMIT` is
        // pipelined behind them.
        let take = matches!(segment.first(), Some(Op::TakeEvent { .. }));
        let pipelined_commit = i == last && !take;
        let commit = async {
            if pipelined_commit {
                w.c.execute(&w.s.commit, &[]).await.map(drop)
            } else {
                Ok(())
            }
        };
        let (b, staged, c) = futures_util::join!(
            begin,
            join_all(segment.into_iter().map(|op| stage(w, op))),
            commit
        );
        replies.extend(staged);
        let c = match c {
            Ok(()) if i == last && take => w.c.execute(&w.s.commit, &[]).await.map(drop),
            c => c,
        };
        if let Err(e) = b.and(c) {
            return fail(replies, pg_error(e));
        }
    }
    // A statement the database refused aborted the transaction, and its
    // `COMMIT` rolled back every request of the batch, whatever each one's
    // own statements returned: none may be answered as done.
    if let Some(e) = replies.iter().find_map(Reply::database_error) {
        return fail(replies, pg_error(format!("the batch was rolled back: {e}")));
    }
    replies.into_iter().for_each(Reply::send);
    Ok(())
}

/// Answers every request of a failed batch with its error (nothing of it
/// is durable).
fn fail(replies: Vec<Reply>, e: JournalError) -> Result<(), JournalError> {
    let text = e.to_string();
    for r in replies {
        r.fail(&text);
    }
    Err(e)
}

async fn stage(w: W<'_>, op: Op) -> Reply {
    match op {
        Op::Create(rec, reply) => Reply::Created(reply, create(w, rec).await),
        Op::Update(id, u, reply) => Reply::Record(reply, update(w, &id, u).await),
        Op::Append {
            id, entries, reply, ..
        } => Reply::Unit(reply, append(w, &id, &entries).await),
        Op::Truncate(id, from, reply) => Reply::Unit(Some(reply), truncate(w, &id, from).await),
        Op::Delete(id, reply) => Reply::Unit(Some(reply), delete(w, &id).await),
        Op::SetVersion(id, digest, reply) => {
            Reply::Unit(Some(reply), set_version(w, &id, &digest).await)
        }
        Op::PushEvent(id, event, reply) => {
            Reply::Unit(Some(reply), push_event(w, &id, event).await)
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
            take_event(w, &id, &name, n, &event_type, or_timeout).await,
        ),
    }
}

/// No row changed by a fenced write: another host has the instance now.
fn fenced(rows: u64, id: &str) -> Result<(), JournalError> {
    if rows == 0 {
        Err(JournalError::Fenced(id.to_owned()))
    } else {
        Ok(())
    }
}

async fn truncate(w: W<'_>, id: &str, from: u64) -> Result<(), JournalError> {
    let epoch = w.epoch(id)?;
    let row =
        w.c.query_one(&w.s.truncate, &[&id, &(from as i64), &epoch])
            .await
            .map_err(pg_error)?;
    fenced(row.get::<_, bool>(0) as u64, id)
}

async fn set_version(w: W<'_>, id: &str, digest: &str) -> Result<(), JournalError> {
    let epoch = w.epoch(id)?;
    let n =
        w.c.execute(
            &w.s.set_version,
            &[&id, &digest, &(now_ms() as i64), &epoch],
        )
        .await
        .map_err(pg_error)?;
    fenced(n, id)
}

async fn create(w: W<'_>, rec: InstanceRecord) -> Result<Created, JournalError> {
    let (input, status) = (rec.input.get(), rec.status.as_str());
    let output = rec.output.as_ref().map(|o| o.get());
    let error = rec.error.as_ref().map(text);
    let (created, updated, seed) = (
        rec.created_ms as i64,
        rec.updated_ms as i64,
        rec.seed as i64,
    );
    let owner = w.lease.map(Lease::host);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 13] = [
        &rec.id,
        &rec.workflow,
        &rec.digest,
        &input,
        &status,
        &output,
        &error,
        &created,
        &updated,
        &rec.parent,
        &seed,
        &owner,
        &rec.traceparent,
    ];
    let insert = w.c.execute(&w.s.insert_instance, &params);
    // Pipelined with the insert: the row as it stands after it.
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&rec.id];
    let select = w.c.query_one(&w.s.select_instance, &key);
    let (inserted, row) = futures_util::future::join(insert, select).await;
    if inserted.map_err(pg_error)? == 1 {
        // Taken by this host at the first epoch. (Should the batch roll
        // back, the fence names an instance that does not exist: no
        // write of it can land.)
        if let Some(l) = w.lease {
            l.own(&rec.id, 1);
        }
        return Ok(Created::New(rec));
    }
    Ok(Created::Existing(record(&row.map_err(pg_error)?)?))
}

async fn update(w: W<'_>, id: &str, u: StatusUpdate) -> Result<InstanceRecord, JournalError> {
    let epoch = w.epoch(id)?;
    let row =
        w.c.query_opt(
            &w.s.update,
            &[
                &id,
                &u.status.as_str(),
                &u.output.as_ref().map(|o| o.get()),
                &u.error.as_ref().map(text),
                &(now_ms() as i64),
                &epoch,
            ],
        )
        .await
        .map_err(pg_error)?;
    match row {
        Some(row) => record(&row),
        None => Err(JournalError::Fenced(id.to_owned())),
    }
}

async fn append(w: W<'_>, id: &str, entries: &[Entry]) -> Result<(), JournalError> {
    let epoch = w.epoch(id)?;
    let texts: Vec<String> = entries.iter().map(text).collect();
    let n =
        w.c.execute(&w.s.append, &[&id, &texts, &epoch])
            .await
            .map_err(pg_error)?;
    if entries.is_empty() {
        return Ok(());
    }
    fenced(n, id)
}

async fn delete(w: W<'_>, id: &str) -> Result<(), JournalError> {
    let epoch = w.epoch(id)?;
    let (rows, entries, inbox) = futures_util::future::join3(
        w.c.execute(&w.s.delete_instance, &[&id, &epoch]),
        w.c.execute(&w.s.delete_entries, &[&id]),
        w.c.execute(&w.s.delete_inbox, &[&id]),
    )
    .await;
    entries.map_err(pg_error)?;
    inbox.map_err(pg_error)?;
    fenced(rows.map_err(pg_error)?, id)?;
    if let Some(l) = w.lease {
        l.disown(id);
    }
    Ok(())
}

async fn push_event(w: W<'_>, id: &str, event: EventRecord) -> Result<(), JournalError> {
    let (body, finals) = (text(&event), &FINAL[..]);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&id, &event.event_type, &body, &finals];
    let insert = w.c.query(&w.s.push_event, &params);
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let status = w.c.query_opt(&w.s.status, &key);
    let (inserted, status) = futures_util::future::join(insert, status).await;
    if inserted.map_err(pg_error)?.len() == 1 {
        return Ok(());
    }
    match status.map_err(pg_error)? {
        None => Err(JournalError::UnknownInstance(id.to_owned())),
        Some(row) => {
            let s: &str = row.get(0);
            let status = s
                .parse::<Status>()
                .map_err(|_| JournalError::Format(format!("unknown status `{s}`")))?;
            Err(JournalError::Finished {
                id: id.to_owned(),
                status: status.as_str(),
            })
        }
    }
}

async fn take_event(
    w: W<'_>,
    id: &str,
    name: &str,
    n: u32,
    event_type: &str,
    or_timeout: bool,
) -> Result<Option<WaitResult>, JournalError> {
    let epoch = w.epoch(id)?;
    let row =
        w.c.query_one(&w.s.take_event, &[&id, &event_type, &epoch])
            .await
            .map_err(pg_error)?;
    if !row.get::<_, bool>(0) {
        return Err(JournalError::Fenced(id.to_owned()));
    }
    let result = match row.get::<_, Option<&str>>(1) {
        Some(event) => WaitResult::Delivered {
            event: json(event)?,
        },
        None if or_timeout => WaitResult::TimedOut,
        None => return Ok(None),
    };
    let entry = Entry::WaitEnd {
        name: name.to_owned(),
        n,
        ended_ms: now_ms(),
        result: result.clone(),
    };
    append(w, id, &[entry]).await?;
    Ok(Some(result))
}
