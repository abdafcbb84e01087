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

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::writer::Op;
use super::*;

mod embedded_migrations {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock of the one process that runs a store's instances.
const HOST_LOCK: i64 = 0x0077_6566_7468_6f73; // "wefthos"

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 4096;

/// Connections to the database (the writer's is its own).
const POOL_SIZE: usize = 16;

/// The columns of `weft_instances` that make an [`InstanceRecord`], in the
/// order [`record`] reads them.
const RECORD: &str =
    "id, workflow, digest, input, status, output, error, created_ms, updated_ms, parent, seed";

/// A handle to the journal in PostgreSQL. Cheap to clone.
#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    ops: mpsc::UnboundedSender<Op>,
    _writer: Arc<WriterTask>,
}

/// Stops the writer task when the last handle goes.
struct WriterTask(tokio::task::JoinHandle<()>);

impl Drop for WriterTask {
    fn drop(&mut self) {
        // The queue closes with the last sender; the task then ends by
        // itself once it has written what was queued.
        let _ = &self.0;
    }
}

fn pg_error(e: impl std::fmt::Display) -> JournalError {
    JournalError::Storage(format!("PostgreSQL: {e}"))
}

impl Postgres {
    /// Connects to `url` (`postgres://…`), applies the schema's migrations
    /// and starts the writer. With `execute`, this process will run
    /// instances: it takes the store's host lock, which one process at a
    /// time may hold until leases let many hosts share the work.
    pub async fn open(url: &str, execute: bool) -> Result<Postgres, JournalError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| pg_error(format!("the store URL `{}`: {e}", redact_url(url))))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(pg_error)?;
        let writer = Writer::connect(&config, url, execute, true).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run_writer(writer, rx));
        Ok(Postgres {
            pool,
            ops: tx,
            _writer: Arc::new(WriterTask(task)),
        })
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
    })
}

/// The writer task: applies whatever is queued, a batch per transaction,
/// until every handle is gone.
/// The writer's connection: its prepared statements and, for a process
/// that runs instances, the host lock.
struct Writer {
    client: Client,
    statements: Statements,
    config: tokio_postgres::Config,
    url: String,
    execute: bool,
}

impl Writer {
    async fn connect(
        config: &tokio_postgres::Config,
        url: &str,
        execute: bool,
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
        if execute {
            // Held by the writer's connection: released when this process
            // ends, however it ends.
            let row = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&HOST_LOCK])
                .await
                .map_err(pg_error)?;
            if !row.get::<_, bool>(0) {
                return Err(JournalError::Storage(format!(
                    "the store {} is in use by another weft process that runs instances; \
                     until hosts share a store through leases, one process at a time may run \
                     its instances (the others can still read it and send events)",
                    redact_url(url)
                )));
            }
        }
        let statements = Statements::prepare(&client).await.map_err(pg_error)?;
        Ok(Writer {
            client,
            statements,
            config: config.clone(),
            url: url.to_owned(),
            execute,
        })
    }

    /// Connects again after the connection was lost (the database
    /// restarted, the connection was killed), waiting with backoff until it
    /// succeeds.
    async fn reconnect(&mut self) {
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            match Writer::connect(&self.config, &self.url, self.execute, false).await {
                Ok(w) => {
                    tracing::warn!("journal writer reconnected to the store");
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
async fn run_writer(mut writer: Writer, mut rx: mpsc::UnboundedReceiver<Op>) {
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
        };
        if let Err(e) = apply(w, std::mem::take(&mut batch)).await {
            // Each request was answered with the error; an instance's
            // task tries again.
            tracing::error!("journal commit failed: {e}");
        }
        if writer.client.is_closed() {
            writer.reconnect().await;
        }
    }
}

/// What one request gets back, held until the transaction commits.
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
    /// The error of a statement the database refused (not a request's own
    /// answer, such as an unknown instance).
    fn database_error(&self) -> Option<String> {
        let e = match self {
            Reply::Created(_, Err(e)) | Reply::Unit(_, Err(e)) => e,
            Reply::Wait(_, Err(e)) | Reply::Record(_, Err(e)) => e,
            _ => return None,
        };
        matches!(e, JournalError::Storage(_) | JournalError::Format(_)).then(|| e.to_string())
    }

    /// Answers with `error` instead of what the request did.
    fn fail(self, error: &str) {
        let e = || JournalError::Storage(error.to_owned());
        match self {
            Reply::Created(tx, _) => drop(tx.send(Err(e()))),
            Reply::Unit(Some(tx), _) => drop(tx.send(Err(e()))),
            Reply::Wait(tx, _) => drop(tx.send(Err(e()))),
            Reply::Record(Some(tx), _) => drop(tx.send(Err(e()))),
            Reply::Unit(None, _) | Reply::Record(None, _) => {}
        }
    }

    fn send(self) {
        let logged = |r: Result<(), JournalError>| {
            if let Err(e) = r {
                tracing::error!("journal write failed: {e}");
            }
        };
        match self {
            Reply::Created(tx, r) => drop(tx.send(r)),
            Reply::Unit(Some(tx), r) => drop(tx.send(r)),
            Reply::Unit(None, r) => logged(r),
            Reply::Wait(tx, r) => drop(tx.send(r)),
            Reply::Record(Some(tx), r) => drop(tx.send(r)),
            Reply::Record(None, r) => logged(r.map(drop)),
        }
    }
}

const FINAL: [&str; 3] = ["errored", "terminated", "complete"];

/// The writer's statements, prepared once on its connection, so that a
/// batch is sent in one go: a statement given as text would wait for its
/// own `prepare` first.
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

impl Statements {
    async fn prepare(c: &Client) -> Result<Statements, tokio_postgres::Error> {
        let select = format!("SELECT {RECORD} FROM weft_instances WHERE id = $1");
        let update = format!(
            "UPDATE weft_instances SET status = $2, output = $3, error = $4, updated_ms = $5 \
             WHERE id = $1 RETURNING {RECORD}"
        );
        Ok(Statements {
            begin: c.prepare("BEGIN").await?,
            commit: c.prepare("COMMIT").await?,
            insert_instance: c
                .prepare(
                    "INSERT INTO weft_instances (id, workflow, digest, input, status, output, \
                     error, created_ms, updated_ms, parent, seed) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .await?,
            select_instance: c.prepare(&select).await?,
            update: c.prepare(&update).await?,
            append: c
                .prepare(
                    "INSERT INTO weft_entries (instance_id, seq, entry) \
                     SELECT $1, coalesce((SELECT max(seq) + 1 FROM weft_entries \
                                          WHERE instance_id = $1), 0) + t.i - 1, t.e \
                     FROM unnest($2::text[]) WITH ORDINALITY AS t(e, i)",
                )
                .await?,
            truncate: c
                .prepare("DELETE FROM weft_entries WHERE instance_id = $1 AND seq >= $2")
                .await?,
            delete_instance: c
                .prepare("DELETE FROM weft_instances WHERE id = $1")
                .await?,
            delete_entries: c
                .prepare("DELETE FROM weft_entries WHERE instance_id = $1")
                .await?,
            delete_inbox: c
                .prepare("DELETE FROM weft_inbox WHERE instance_id = $1")
                .await?,
            set_version: c
                .prepare("UPDATE weft_instances SET digest = $2, updated_ms = $3 WHERE id = $1")
                .await?,
            push_event: c
                .prepare(
                    "INSERT INTO weft_inbox (instance_id, event_type, event) \
                     SELECT id, $2, $3 FROM weft_instances WHERE id = $1 AND status <> ALL($4)",
                )
                .await?,
            status: c
                .prepare("SELECT status FROM weft_instances WHERE id = $1")
                .await?,
            take_event: c
                .prepare(
                    "DELETE FROM weft_inbox WHERE seq = \
                     (SELECT seq FROM weft_inbox WHERE instance_id = $1 AND event_type = $2 \
                      ORDER BY seq LIMIT 1 FOR UPDATE) \
                     RETURNING event",
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
        let commit = async {
            if i == last {
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
        Op::Truncate(id, from, reply) => {
            let r =
                w.c.execute(&w.s.truncate, &[&id, &(from as i64)])
                    .await
                    .map(drop)
                    .map_err(pg_error);
            Reply::Unit(Some(reply), r)
        }
        Op::Delete(id, reply) => Reply::Unit(Some(reply), delete(w, &id).await),
        Op::SetVersion(id, digest, reply) => {
            let r =
                w.c.execute(&w.s.set_version, &[&id, &digest, &(now_ms() as i64)])
                    .await
                    .map_err(pg_error)
                    .and_then(|n| found(n, &id));
            Reply::Unit(Some(reply), r)
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

fn found(rows: u64, id: &str) -> Result<(), JournalError> {
    if rows == 0 {
        Err(JournalError::UnknownInstance(id.to_owned()))
    } else {
        Ok(())
    }
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
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
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
    ];
    let insert = w.c.execute(&w.s.insert_instance, &params);
    // Pipelined with the insert: the row as it stands after it.
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&rec.id];
    let select = w.c.query_one(&w.s.select_instance, &key);
    let (inserted, row) = futures_util::future::join(insert, select).await;
    if inserted.map_err(pg_error)? == 1 {
        return Ok(Created::New(rec));
    }
    Ok(Created::Existing(record(&row.map_err(pg_error)?)?))
}

async fn update(w: W<'_>, id: &str, u: StatusUpdate) -> Result<InstanceRecord, JournalError> {
    let row =
        w.c.query_opt(
            &w.s.update,
            &[
                &id,
                &u.status.as_str(),
                &u.output.as_ref().map(|o| o.get()),
                &u.error.as_ref().map(text),
                &(now_ms() as i64),
            ],
        )
        .await
        .map_err(pg_error)?;
    match row {
        Some(row) => record(&row),
        None => Err(JournalError::UnknownInstance(id.to_owned())),
    }
}

async fn append(w: W<'_>, id: &str, entries: &[Entry]) -> Result<(), JournalError> {
    let texts: Vec<String> = entries.iter().map(text).collect();
    w.c.execute(&w.s.append, &[&id, &texts])
        .await
        .map_err(pg_error)?;
    Ok(())
}

async fn delete(w: W<'_>, id: &str) -> Result<(), JournalError> {
    let (rows, entries, inbox) = futures_util::future::join3(
        w.c.execute(&w.s.delete_instance, &[&id]),
        w.c.execute(&w.s.delete_entries, &[&id]),
        w.c.execute(&w.s.delete_inbox, &[&id]),
    )
    .await;
    entries.map_err(pg_error)?;
    inbox.map_err(pg_error)?;
    found(rows.map_err(pg_error)?, id)
}

async fn push_event(w: W<'_>, id: &str, event: EventRecord) -> Result<(), JournalError> {
    let (body, finals) = (text(&event), &FINAL[..]);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&id, &event.event_type, &body, &finals];
    let insert = w.c.execute(&w.s.push_event, &params);
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let status = w.c.query_opt(&w.s.status, &key);
    let (inserted, status) = futures_util::future::join(insert, status).await;
    if inserted.map_err(pg_error)? == 1 {
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
    let row =
        w.c.query_opt(&w.s.take_event, &[&id, &event_type])
            .await
            .map_err(pg_error)?;
    let result = match row {
        Some(row) => WaitResult::Delivered {
            event: json(row.get(0))?,
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
