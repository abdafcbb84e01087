//! What the workloads share: the disk's physical limits, and a runtime
//! with its scheduler on a fresh data dir.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use weft::journal::Status;
use weft::runner::Runtime;
use weft::scheduler::Scheduler;

use crate::report::{Report, percentile};

/// The disk's limits: one durable redb commit, commits/s, writes/s with 100
/// writes per durable commit.
pub fn physical_limits(dir: &Path, r: &mut Report) -> Result<f64> {
    let db = redb::Database::create(dir.join("limits.redb"))?;
    const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("t");
    let payload = vec![7u8; 200];
    let n = 500;
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        let txn = db.begin_write()?;
        txn.open_table(T)?.insert(i, payload.as_slice())?;
        txn.commit()?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let commits_per_s = n as f64 / start.elapsed().as_secs_f64();
    let p50 = percentile(&mut lat, 0.5);
    r.add(
        "limit",
        "-",
        "durable commit latency p50",
        p50,
        "ms",
        "redb, 1 write per commit",
    );
    r.add(
        "limit",
        "-",
        "durable commit latency p99",
        percentile(&mut lat, 0.99),
        "ms",
        "",
    );
    r.add("limit", "-", "durable commits/s", commits_per_s, "1/s", "");
    let start = Instant::now();
    let batches = 200u64;
    for b in 0..batches {
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(T)?;
            for i in 0..100 {
                t.insert(1_000_000 + b * 100 + i, payload.as_slice())?;
            }
        }
        txn.commit()?;
    }
    r.add(
        "limit",
        "-",
        "durable writes/s, 100 per commit",
        (batches * 100) as f64 / start.elapsed().as_secs_f64(),
        "1/s",
        "",
    );
    Ok(p50)
}

pub struct Bench {
    pub rt: Arc<Runtime>,
    pub sched: Arc<Scheduler>,
    pub dir: tempfile::TempDir,
    /// The database of this workload, with `--store`.
    db: Option<TestDb>,
}

/// The PostgreSQL server of `--store` (each workload gets a fresh database
/// on it), or none for the embedded journal.
pub static STORE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

fn store() -> Option<&'static str> {
    STORE.get().and_then(|s| s.as_deref())
}

/// The JavaScript guest (`--js PATH`), deployed as `js` beside `rs` and
/// `py` when given.
pub static JS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// The Python guest built `--isolation shared` (`--python-shared PATH`),
/// deployed as `pysh` with `isolation = "shared"`.
pub static PYTHON_SHARED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub async fn setup(
    evict_after: Duration,
    max_running: usize,
    python: Option<&str>,
) -> Result<Bench> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (rt, db) = match store() {
        Some(server) => {
            let db = TestDb::create(server).await?;
            (
                Runtime::connect(&data, &db.url, evict_after, weft::defaults::LEASE).await?,
                Some(db),
            )
        }
        None => (Runtime::open(&data, evict_after)?, None),
    };
    let mut workflows = Vec::new();
    let rs = std::fs::read(weft_test_artifacts::SCENARIOS)?;
    let d = rt.store_component(&rs).await?;
    rt.components.load(&d)?;
    workflows.push(("rs".to_owned(), d, None));
    let js = JS.get().and_then(|p| p.as_deref());
    let shared = PYTHON_SHARED.get().and_then(|p| p.as_deref());
    for (name, path) in [("py", python), ("pysh", shared), ("js", js)] {
        if let Some(p) = path {
            let bytes = std::fs::read(p).with_context(|| format!("reading {p}"))?;
            let d = rt.store_component(&bytes).await?;
            rt.components.load(&d)?;
            rt.set_policy(name, policy(name));
            // As `weft serve` does at deploy.
            rt.warm_shared(name, &d)?;
            workflows.push((name.to_owned(), d, None));
        }
    }
    let sched = Scheduler::new(rt.clone(), workflows, max_running);
    sched.install_children();
    Ok(Bench { rt, sched, dir, db })
}

impl Drop for Bench {
    /// Stops the instance tasks so that the runtime and its engine (and the
    /// pooling allocator's address space) are released.
    fn drop(&mut self) {
        self.sched.stop_tasks();
        if let Some(db) = self.db.take() {
            db.drop_now();
        }
    }
}

pub(crate) async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// A database created for one workload.
pub(crate) struct TestDb {
    pub(crate) url: String,
    server: String,
    name: String,
}

impl TestDb {
    pub(crate) async fn create(server: &str) -> Result<TestDb> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "weft_bench_{}_{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let admin = connect(server).await?;
        // Two statements: a multi-statement string runs as one transaction.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await?;
        let base = server.split('?').next().unwrap_or(server);
        let at = base.rfind('/').context("a database URL ends in /DBNAME")?;
        Ok(TestDb {
            url: format!("{}/{name}", &base[..at]),
            server: server.to_owned(),
            name,
        })
    }

    /// Drops the database (from a thread of its own: this runs in `Drop`).
    pub(crate) fn drop_now(self) {
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                connect(&self.server)
                    .await?
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        self.name
                    ))
                    .await?;
                anyhow::Ok(())
            })
        })
        .join();
    }
}

/// One durable PostgreSQL commit (a one-row insert, `synchronous_commit`
/// on): the physical limit of a journal in that database.
pub async fn postgres_limits(server: &str, r: &mut Report) -> Result<f64> {
    let db = TestDb::create(server).await?;
    let c = connect(&db.url).await?;
    c.batch_execute("CREATE TABLE t (k bigint PRIMARY KEY, v bytea NOT NULL)")
        .await?;
    let payload = vec![7u8; 200];
    let insert = c.prepare("INSERT INTO t (k, v) VALUES ($1, $2)").await?;
    let n = 500i64;
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..n {
        let t0 = Instant::now();
        c.execute(&insert, &[&i, &payload]).await?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let commits_per_s = n as f64 / start.elapsed().as_secs_f64();
    let p50 = percentile(&mut lat, 0.5);
    let note = "PostgreSQL, 1 row per commit";
    r.add("limit", "pg", "durable commit latency p50", p50, "ms", note);
    let p99 = percentile(&mut lat, 0.99);
    r.add("limit", "pg", "durable commit latency p99", p99, "ms", "");
    r.add("limit", "pg", "durable commits/s", commits_per_s, "1/s", "");
    drop(c);
    db.drop_now();
    Ok(p50)
}

impl Bench {
    /// Creates `m` instances concurrently, as clients of the API would (the
    /// journal group-commits the creations).
    pub async fn create_many(
        &self,
        wf: &str,
        prefix: &str,
        m: usize,
        params: &Value,
    ) -> Result<Vec<String>> {
        let text = Arc::new(params.to_string());
        let ids: Vec<String> = (0..m).map(|i| format!("{prefix}{i}")).collect();
        let mut set = tokio::task::JoinSet::new();
        for chunk in ids.chunks(m.div_ceil(64).max(1)) {
            let sched = self.sched.clone();
            let (wf, text, chunk) = (wf.to_owned(), text.clone(), chunk.to_vec());
            set.spawn(async move {
                for id in chunk {
                    sched.create(&wf, Some(id), &text, None).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(ids)
    }

    pub async fn wait_all(&self, status: Status, m: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last_check = Instant::now();
        loop {
            // Finished instances are counted by the runtime; other states
            // need a scan of the instance table (slower, so less often).
            let n = if status == Status::Complete {
                self.rt.finished.load(std::sync::atomic::Ordering::Relaxed)
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.rt.journal.list(Some(status)).await?.len()
            };
            if n >= m {
                return Ok(());
            }
            if status == Status::Complete && start.elapsed() <= limit {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            if last_check.elapsed() > Duration::from_secs(2) || start.elapsed() > limit {
                last_check = Instant::now();
                let errored = self.rt.journal.list(Some(Status::Errored)).await?;
                if let Some(e) = errored.first() {
                    bail!("instance {} errored: {:?}", e.id, e.error);
                }
            }
            if start.elapsed() > limit {
                bail!("only {n} of {m} instances reached {status:?} in {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The journal's files: redb and its write-ahead log.
    pub fn disk_bytes(&self) -> u64 {
        ["journal.redb", "journal.wal"]
            .iter()
            .map(|f| {
                std::fs::metadata(self.dir.path().join("data").join(f))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// The Python and JavaScript guests' name for a scenario.
/// The default policy of a guest's workflow: `pysh` runs shared.
pub fn policy(guest: &str) -> weft::durable::policy::Policy {
    let mut p = weft::durable::policy::Policy::default();
    if guest == "pysh" {
        p.isolation = weft::durable::policy::Isolation::Shared;
    }
    p
}

/// Whether the guest is the Python one, in either isolation mode.
pub fn is_py(guest: &str) -> bool {
    guest == "py" || guest == "pysh"
}

pub fn scenario(guest: &str, name: &str) -> String {
    let guest = if is_py(guest) { "py" } else { guest };
    match (guest, name) {
        ("py" | "js", "loop-names") => "loop".into(),
        ("py" | "js", "steps-then-wait") => "steps_then_wait".into(),
        ("js", "event-timeout") => "event_timeout".into(),
        ("py", "event-timeout") => "events".into(),
        _ => name.into(),
    }
}
