//! Workloads on many `weft serve` processes sharing one PostgreSQL store
//! (`--hosts N` with `--store`): W1, W2 and W4 across hosts, events sent to
//! a host that does not own the instance, and failover after `kill -9`.
//! Times come from the store's records and entries (written by the hosts'
//! clocks; all on this machine), not from polling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::harness::{TestDb, connect};
use crate::report::{Report, percentile};

/// `weft serve` processes on one fresh database.
pub struct Hosts {
    db: Option<TestDb>,
    client: tokio_postgres::Client,
    procs: Vec<Option<Child>>,
    pub urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Hosts {
    pub async fn start(weft: &Path, server: &str, n: usize, extra: &[&str]) -> Result<Hosts> {
        let db = TestDb::create(server).await?;
        let dir = tempfile::tempdir()?;
        let (toml, cache) = rust_config(dir.path())?;
        let mut procs = Vec::new();
        let mut urls = Vec::new();
        for i in 0..n {
            let err = dir.path().join(format!("host{i}.err"));
            let mut args = vec!["serve", "--config", toml.to_str().unwrap()];
            args.extend_from_slice(&["--addr", "127.0.0.1:0"]);
            args.extend_from_slice(extra);
            let child = Command::new(weft)
                .args(&args)
                .env("WEFT_DATA_DIR", dir.path().join(format!("data{i}")))
                .env("WEFT_STORE", &db.url)
                .env("WEFT_CACHE_DIR", &cache)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&err)?)
                .spawn()?;
            let url = served_url(&err).with_context(|| format!("host {i}"))?;
            procs.push(Some(child));
            urls.push(url);
        }
        let client = connect(&db.url).await?;
        Ok(Hosts {
            db: Some(db),
            client,
            procs,
            urls,
            _dir: dir,
        })
    }

    async fn num(&self, sql: &str) -> Result<f64> {
        let row = self.client.query_one(sql, &[]).await?;
        Ok(row.try_get::<_, Option<f64>>(0)?.unwrap_or(0.0))
    }

    /// Waits until `n` instances have `status`.
    async fn wait(&self, status: &str, n: usize, limit: Duration) -> Result<()> {
        let start = Instant::now();
        let q = format!("SELECT count(*)::float8 FROM weft_instances WHERE status = '{status}'");
        while (self.num(&q).await? as usize) < n {
            if start.elapsed() > limit {
                bail!("{n} instances did not become {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Creates instances `prefix0…` in batches of 100, batch `b` on host
    /// `b % hosts` (or all on `only`).
    async fn create(
        &self,
        prefix: &str,
        m: usize,
        params: &Value,
        only: Option<usize>,
    ) -> Result<()> {
        // All batches at once: a batch's creates are made one after the
        // other, each a commit.
        let ids: Vec<usize> = (0..m).collect();
        let mut sends = Vec::new();
        for (b, chunk) in ids.chunks(100).enumerate() {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"id": format!("{prefix}{i}"), "params": params}))
                .collect();
            let host = only.unwrap_or(b % self.urls.len());
            let url = format!("{}/v1/workflows/rs/instances/batch", self.urls[host]);
            let body = json!(batch).to_string();
            sends.push(tokio::spawn(async move { post(&url, &body).await }));
        }
        for s in sends {
            let (code, v) = s.await??;
            if code != 200 {
                bail!("creating a batch: {code} {v}");
            }
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.procs[i].take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(db) = self.db.take() {
            db.drop_now();
        }
    }
}

async fn post(url: &str, body: &str) -> Result<(u16, Value)> {
    let (url, body) = (url.to_owned(), body.to_owned());
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        let mut resp = agent
            .post(&url)
            .send(&body)
            .with_context(|| format!("POST {url}"))?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        Ok((
            resp.status().as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        ))
    })
    .await?
}

/// W1 (one instance of `n` steps), W2 (`m` instances of 10 steps, created
/// round-robin on the hosts) and W4 (`m` evicted waits, each event sent to
/// a host that does not own the instance).
pub async fn workloads(
    weft: &Path,
    server: &str,
    hosts: usize,
    m: usize,
    commit_ms: f64,
    r: &mut Report,
) -> Result<()> {
    let tag = format!("{hosts} hosts");
    // W1: from the record's creation to its end, per step.
    let h = Hosts::start(weft, server, hosts, &[]).await?;
    let n = 1000;
    h.create(
        "w1-",
        1,
        &json!({"scenario": "loop-names", "n": n}),
        Some(0),
    )
    .await?;
    h.wait("complete", 1, Duration::from_secs(600)).await?;
    let ms = h
        .num("SELECT (updated_ms - created_ms)::float8 FROM weft_instances")
        .await?
        / n as f64;
    let w = format!("W1 sequential N={n}, {tag}");
    r.add(&w, "rs", "time per step", ms, "ms", "created to complete");
    r.add(
        &w,
        "rs",
        "time per step / durable commit",
        ms / commit_ms,
        "x",
        "",
    );
    drop(h);

    let h = Hosts::start(weft, server, hosts, &[]).await?;
    h.create("w2-", m, &json!({"scenario": "loop-names", "n": 10}), None)
        .await?;
    h.wait("complete", m, Duration::from_secs(1200)).await?;
    let span = h
        .num("SELECT (max(updated_ms) - min(created_ms))::float8 FROM weft_instances")
        .await?;
    let w = format!("W2 throughput M={m}, {tag}");
    let steps = (m * 10) as f64 / (span / 1000.0);
    r.add(
        &w,
        "rs",
        "steps/s",
        steps,
        "1/s",
        "first create to last complete",
    );
    let hosts_used = h
        .num("SELECT count(DISTINCT owner)::float8 FROM weft_instances")
        .await?;
    r.add(&w, "rs", "hosts that ran instances", hosts_used, "", "");
    drop(h);

    let h = Hosts::start(weft, server, hosts, &["--evict-after", "1s"]).await?;
    let params = json!({"scenario": "event-timeout", "ms": 3_600_000});
    h.create("w4-", m, &params, None).await?;
    h.wait("waiting", m, Duration::from_secs(600)).await?;
    let rows = h
        .client
        .query(
            "SELECT i.id, h.api FROM weft_instances i JOIN weft_hosts h ON h.id = i.owner",
            &[],
        )
        .await?;
    let mut sent = std::collections::HashMap::new();
    for row in &rows {
        let (id, owner): (String, String) = (row.get(0), row.get(1));
        // A host that does not own it.
        let other = h.urls.iter().find(|u| **u != owner).unwrap_or(&owner);
        let url = format!("{other}/v1/instances/{id}/events/approve");
        sent.insert(id, weft::journal::now_ms());
        let (code, v) = post(&url, "1").await?;
        if code != 202 {
            bail!("sending an event: {code} {v}");
        }
    }
    h.wait("complete", m, Duration::from_secs(600)).await?;
    let done = h
        .client
        .query("SELECT id, updated_ms FROM weft_instances", &[])
        .await?;
    let mut lat: Vec<f64> = done
        .iter()
        .map(|row| {
            let id: String = row.get(0);
            (row.get::<_, i64>(1) as u64).saturating_sub(sent[&id]) as f64
        })
        .collect();
    let w = format!("W4 events M={m}, {tag}, sent to a non-owner");
    let note = "evicted waits, replayed on event";
    p50_p99(r, &w, "send-to-complete", &mut lat, note);
    Ok(())
}

/// Failover: `k` instances stepping on host 0; `kill -9` of host 0; for
/// each instance, the time until its next step starts on another host.
pub async fn failover(
    weft: &Path,
    server: &str,
    hosts: usize,
    k: usize,
    r: &mut Report,
) -> Result<()> {
    let mut h = Hosts::start(weft, server, hosts, &[]).await?;
    let params = json!({"scenario": "long", "n": 1_000_000, "ms": 1});
    h.create("f-", k, &params, Some(0)).await?;
    // Every instance has stepped on host 0.
    let stepped = "SELECT count(DISTINCT instance_id)::float8 FROM weft_entries";
    let start = Instant::now();
    while (h.num(stepped).await? as usize) < k {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("failover: the instances did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = weft::journal::now_ms() as f64;
    h.kill(0)?;
    let moved = "SELECT count(DISTINCT instance_id)::float8 FROM weft_entries WHERE epoch > 1";
    let start = Instant::now();
    while (h.num(moved).await? as usize) < k {
        if start.elapsed() > Duration::from_secs(300) {
            bail!("failover: the instances did not move");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = h
        .client
        .query(
            "SELECT min((entry::json->>'startedMs')::bigint)::float8 FROM weft_entries \
             WHERE epoch > 1 GROUP BY instance_id",
            &[],
        )
        .await?;
    let mut lat: Vec<f64> = rows.iter().map(|r| r.get::<_, f64>(0) - killed).collect();
    let w = format!("failover, {hosts} hosts, {k} instances, lease 10 s");
    let note = "kill -9 to the first step on another host";
    p50_p99(r, &w, "failover", &mut lat, note);
    Ok(())
}

/// Adds the p50 and p99 of `lat` (ms) as two figures.
fn p50_p99(r: &mut Report, w: &str, what: &str, lat: &mut [f64], note: &str) {
    let p50 = percentile(lat, 0.5);
    r.add(w, "rs", &format!("{what} p50"), p50, "ms", note);
    let p99 = percentile(lat, 0.99);
    r.add(w, "rs", &format!("{what} p99"), p99, "ms", "");
}

/// Writes `dir/weft.toml`, deploying the Rust test guest as `rs`, for the
/// `weft serve` processes of a workload; returns its path and the compiled
/// component cache they share (`WEFT_CACHE_DIR`, else one in `dir`).
pub fn rust_config(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let toml = dir.join("weft.toml");
    std::fs::write(
        &toml,
        format!(
            "[workflows.rs]\ncomponent = {:?}\n",
            weft_test_artifacts::SCENARIOS
        ),
    )?;
    let cache = std::env::var_os("WEFT_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("cache"));
    Ok((toml, cache))
}

/// The URL a `weft serve` whose stderr goes to `err` says it serves, once
/// it says so (at most 5 minutes).
pub fn served_url(err: &Path) -> Result<String> {
    let start = Instant::now();
    loop {
        let t = std::fs::read_to_string(err).unwrap_or_default();
        if let Some(u) = t.lines().find_map(|l| l.split("Serving ").nth(1)) {
            return Ok(u.trim().to_owned());
        }
        if start.elapsed() > Duration::from_secs(300) {
            bail!("the server did not start: {t}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
