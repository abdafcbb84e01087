//! weft's benchmark. Runs workloads W1–W7 in-process on a fresh data dir,
//! next to the physical limits of the disk measured in the same run, and
//! prints one JSON object per figure, then a markdown table.
//!
//! Run with `bash bench/run.sh` (release build). `--quick` runs smaller
//! sizes; `--python PATH`, `--python-shared PATH` and `--js PATH` add the
//! Python guest in both isolation modes and the JavaScript guest (built by
//! run.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::json;
use weft::journal::Status;

#[macro_use]
mod report;
mod harness;
mod hosts;
mod ui;

use harness::{is_py, physical_limits, scenario, setup};
use report::{Report, cpu_seconds, percentile, rss_kib, status_field};

async fn w1(
    guest: &str,
    n: u64,
    python: Option<&str>,
    commit_ms: f64,
    r: &mut Report,
) -> Result<()> {
    let b = setup(Duration::from_secs(5), 500, python).await?;
    let params = json!({"scenario": scenario(guest, "loop-names"), "n": n});
    let start = Instant::now();
    b.create_many(guest, "w1-", 1, &params).await?;
    b.wait_all(Status::Complete, 1, Duration::from_secs(600))
        .await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0 / n as f64;
    let w = format!("W1 sequential N={n}");
    r.add(&w, guest, "time per step", ms, "ms", "");
    r.add(
        &w,
        guest,
        "time per step / durable commit",
        ms / commit_ms,
        "x",
        "commit latency p50 of this run's limits",
    );
    Ok(())
}

async fn w2(guest: &str, m: usize, python: Option<&str>, r: &mut Report) -> Result<()> {
    let b = setup(Duration::from_secs(5), 500, python).await?;
    let params = json!({"scenario": scenario(guest, "loop-names"), "n": 10});
    // The peak is this workload's: VmHWM is the process's high-water mark
    // since the last reset, and earlier workloads (Python W3 starts 2000
    // interpreters) would otherwise stand in for it.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss0 = rss_kib();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    b.create_many(guest, "w2-", m, &params).await?;
    b.wait_all(Status::Complete, m, Duration::from_secs(1200))
        .await?;
    let s = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let w = format!("W2 throughput M={m}");
    r.add(
        &w,
        guest,
        "workflows/s",
        m as f64 / s,
        "1/s",
        "10 steps each, create to complete",
    );
    r.add(&w, guest, "steps/s", (m * 10) as f64 / s, "1/s", "");
    r.add(
        &w,
        guest,
        "CPU time per step",
        cpu * 1e6 / (m * 10) as f64,
        "µs",
        "user + system, all threads",
    );
    r.add(
        &w,
        guest,
        "peak RSS",
        status_field("VmHWM:") as f64 / 1024.0,
        "MiB",
        &format!("process; {:.0} MiB before", rss0 as f64 / 1024.0),
    );
    // The data dir's journal files; on PostgreSQL the journal is elsewhere.
    if harness::STORE.get().is_none_or(Option::is_none) {
        r.add(
            &w,
            guest,
            "journal bytes per step",
            b.disk_bytes() as f64 / (m * 10) as f64,
            "B",
            "journal.redb + journal.wal size / steps",
        );
    }
    Ok(())
}

async fn w3(
    guest: &str,
    m: usize,
    in_memory: bool,
    python: Option<&str>,
    r: &mut Report,
) -> Result<()> {
    // Sleeps of 2 s are evicted (evict_after 1 s) and woken by timers, or,
    // with the default evict_after of 5 s, sleep in memory.
    let evict_after = if in_memory {
        weft::defaults::EVICT_AFTER
    } else {
        Duration::from_secs(1)
    };
    let b = setup(evict_after, 500, python).await?;
    let params = json!({"scenario": "sleep", "ms": 2000, "duration": 2});
    b.create_many(guest, "w3-", m, &params).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_sleeping = rss_kib();
    b.wait_all(Status::Complete, m, Duration::from_secs(600))
        .await?;
    let mut late = Vec::new();
    for rec in b.rt.journal.list(Some(Status::Complete)).await? {
        let e = b.rt.journal.entries(&rec.id).await?;
        let wake = e.iter().find_map(|(_, e)| match e {
            weft::journal::Entry::Sleep { wake_ms, .. } => Some(*wake_ms),
            _ => None,
        });
        let after = e.iter().rev().find_map(|(_, e)| match e {
            weft::journal::Entry::Step { started_ms, .. } => Some(*started_ms),
            _ => None,
        });
        if let (Some(w), Some(a)) = (wake, after) {
            late.push(a.saturating_sub(w) as f64);
        }
    }
    let (w, how) = if in_memory {
        (
            format!("W3 sleep M={m} in memory"),
            "default evict_after 5 s",
        )
    } else {
        (format!("W3 sleep M={m}"), "evicted: evict_after 1 s")
    };
    r.add(
        &w,
        guest,
        "wake lateness p50",
        percentile(&mut late, 0.5),
        "ms",
        &format!("next step start - wake time; {how}"),
    );
    r.add(
        &w,
        guest,
        "wake lateness p99",
        percentile(&mut late, 0.99),
        "ms",
        "",
    );
    r.add(
        &w,
        guest,
        "RSS while all sleep",
        rss_sleeping as f64 / 1024.0,
        "MiB",
        "process",
    );
    Ok(())
}

async fn w4(guest: &str, m: usize, python: Option<&str>, r: &mut Report) -> Result<()> {
    let b = setup(Duration::from_secs(1), 500, python).await?;
    let params = if is_py(guest) {
        json!({"scenario": "events"})
    } else {
        json!({"scenario": "event-timeout", "ms": 3_600_000})
    };
    let ids = b.create_many(guest, "w4-", m, &params).await?;
    b.wait_all(Status::Waiting, m, Duration::from_secs(600))
        .await?;
    let mut sent = std::collections::HashMap::new();
    for id in &ids {
        if is_py(guest) {
            b.rt.send_event(id, "first", r#"{"by":"bench"}"#).await?;
            sent.insert(id.clone(), weft::journal::now_ms());
            b.rt.send_event(id, "second", "1").await?;
        } else {
            sent.insert(id.clone(), weft::journal::now_ms());
            b.rt.send_event(id, "approve", "1").await?;
        }
    }
    b.wait_all(Status::Complete, m, Duration::from_secs(600))
        .await?;
    let mut lat: Vec<f64> =
        b.rt.journal
            .list(Some(Status::Complete))
            .await?
            .iter()
            .map(|rec| rec.updated_ms.saturating_sub(sent[&rec.id]) as f64)
            .collect();
    let w = format!("W4 events M={m}");
    r.add(
        &w,
        guest,
        "send-to-complete p50",
        percentile(&mut lat, 0.5),
        "ms",
        "evicted waits, replayed on event",
    );
    r.add(
        &w,
        guest,
        "send-to-complete p99",
        percentile(&mut lat, 0.99),
        "ms",
        "",
    );
    Ok(())
}

async fn w6(guest: &str, n: u64, python: Option<&str>, r: &mut Report) -> Result<()> {
    // K instances journal n steps each and wait, evicted, for an event; then
    // each is resumed alone. Its "last" step returns the wall clock (µs) at
    // which it started: the first step that runs once the replay is done.
    const K: usize = 5;
    let b = setup(Duration::from_millis(200), 500, python).await?;
    // n steps and the last one: above the default limit of 10,000.
    let mut policy = harness::policy(guest);
    policy.limits.max_steps = n + 10;
    b.rt.set_policy(guest, policy);
    let params = json!({"scenario": scenario(guest, "steps-then-wait"), "n": n});
    let ids = b.create_many(guest, "w6-", K, &params).await?;
    b.wait_all(Status::Waiting, K, Duration::from_secs(600))
        .await?;
    let (mut to_step, mut to_done) = (Vec::new(), Vec::new());
    for (i, id) in ids.iter().enumerate() {
        let sent_us = unix_us();
        let t0 = Instant::now();
        b.rt.send_event(id, "go", "1").await?;
        b.wait_all(Status::Complete, i + 1, Duration::from_secs(600))
            .await?;
        to_done.push(t0.elapsed().as_secs_f64() * 1000.0);
        let rec = b.rt.journal.instance(id).await?.expect("instance");
        let Some(out) = rec.output else {
            bail!(
                "W6: {id} is {:?}, without output: {:?}",
                rec.status,
                rec.error
            );
        };
        let out: serde_json::Value = serde_json::from_str(out.get())?;
        let Some(started_us) = out["last"].as_u64() else {
            bail!("W6: {id} returned no start time: {out}");
        };
        to_step.push(started_us.saturating_sub(sent_us) as f64 / 1000.0);
    }
    let ms = percentile(&mut to_step, 0.5);
    let w = format!("W6 replay {n} steps");
    r.add(
        &w,
        guest,
        "resume time",
        ms,
        "ms",
        &format!("event sent -> next step running; median of {K}"),
    );
    r.add(
        &w,
        guest,
        "journaled steps replayed/s",
        n as f64 / (ms / 1000.0),
        "1/s",
        "",
    );
    r.add(
        &w,
        guest,
        "resume to complete",
        percentile(&mut to_done, 0.5),
        "ms",
        "also: the last step's commit and the completion",
    );
    Ok(())
}

/// The value given after `name` on the command line.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn w7(
    guest: &str,
    m_evicted: usize,
    m_hot: usize,
    python: Option<&str>,
    r: &mut Report,
) -> Result<()> {
    let params = if is_py(guest) {
        json!({"scenario": "events"})
    } else {
        json!({"scenario": "event-timeout", "ms": 3_600_000})
    };
    // Evicted: everything waits an hour, evict at once.
    let b = setup(Duration::from_millis(100), 500, python).await?;
    // From a settled start: without this, heap the workloads before freed
    // (and the allocator kept) is given back during W7 and hides its cost.
    weft::engine::trim_heap();
    let rss0 = rss_kib();
    let anon0 = status_field("RssAnon:");
    b.create_many(guest, "e-", m_evicted, &params).await?;
    b.wait_all(Status::Waiting, m_evicted, Duration::from_secs(900))
        .await?;
    // Settled: the host gives the heap the burst freed back to the system
    // within a second of the burst's end (engine.rs, `trim_after_burst`).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss1 = rss_kib();
    let w = "W7 density";
    r.add(
        w,
        guest,
        &format!("RSS of {m_evicted} evicted instances"),
        (rss1.saturating_sub(rss0)) as f64 / 1024.0,
        "MiB",
        &format!(
            "process total {:.0} MiB; 1.5 s after the last was evicted",
            rss1 as f64 / 1024.0
        ),
    );
    r.add(
        w,
        guest,
        &format!("private memory of {m_evicted} evicted instances"),
        (status_field("RssAnon:").saturating_sub(anon0)) as f64 / 1024.0,
        "MiB",
        "RssAnon: the host's records of them, the journal's cache",
    );
    drop(b);
    // Hot: instances waiting in memory (evict_after longer than any wait).
    let b = setup(Duration::from_secs(3 * 86_400), m_hot, python).await?;
    weft::engine::trim_heap();
    let rss0 = rss_kib();
    let anon0 = status_field("RssAnon:");
    b.create_many(guest, "h-", m_hot, &params).await?;
    b.wait_all(Status::Running, m_hot, Duration::from_secs(900))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_kib();
    let anon1 = status_field("RssAnon:");
    r.add(
        w,
        guest,
        &format!("RSS per hot instance ({m_hot} hot)"),
        (rss1.saturating_sub(rss0)) as f64 / m_hot as f64,
        "KiB",
        "guest memory held while waiting",
    );
    // The image's pages an instance only read are mapped from the page
    // cache, shared by every instance; what each one wrote is its own.
    r.add(
        w,
        guest,
        &format!("private memory per hot instance ({m_hot} hot)"),
        (anon1.saturating_sub(anon0)) as f64 / m_hot as f64,
        "KiB",
        "RssAnon: written pages, host and guest",
    );
    b.sched.stop_tasks();
    // Start-up cost per instance: create to complete of an empty run.
    let b = setup(Duration::from_secs(5), 500, python).await?;
    let n = if guest == "py" { 50 } else { 500 };
    let params = json!({"scenario": scenario(guest, "loop-names"), "n": 0});
    let t0 = Instant::now();
    b.create_many(guest, "i-", n, &params).await?;
    b.wait_all(Status::Complete, n, Duration::from_secs(600))
        .await?;
    r.add(
        w,
        guest,
        "instantiate+run of an empty workflow",
        t0.elapsed().as_secs_f64() * 1000.0 / n as f64,
        "ms",
        "amortised, 2 cores",
    );
    Ok(())
}

/// W5: a 50-step workflow in the weft binary, killed with kill -9 midway,
/// then resumed.
fn w5(weft: &Path, r: &mut Report) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let input = r#"{"scenario":"long","n":50,"ms":20}"#;
    let err = dir.path().join("run.err");
    let mut child = std::process::Command::new(weft)
        .args([
            "run",
            weft_test_artifacts::SCENARIOS,
            "--id",
            "w5",
            "--input",
            input,
        ])
        .env("WEFT_DATA_DIR", dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let start = Instant::now();
    loop {
        let t = std::fs::read_to_string(&err).unwrap_or_default();
        if t.matches("Step work-").count() >= 25 {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("W5: the run did not reach 25 steps");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill()?;
    child.wait()?;
    let first = std::fs::read_to_string(&err)?;
    let t0 = Instant::now();
    let out = std::process::Command::new(weft)
        .args(["resume", "w5"])
        .env("WEFT_DATA_DIR", dir.path().join("data"))
        .output()?;
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!("W5 resume failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let second = String::from_utf8_lossy(&out.stderr);
    let execs = first.matches("EXEC work-").count() + second.matches("EXEC work-").count();
    r.add(
        "W5 crash",
        "rs",
        "restart-to-done",
        took,
        "ms",
        "process start, replay of ~25 steps, 25 new steps of 20 ms",
    );
    r.add(
        "W5 crash",
        "rs",
        "step executions for 50 steps",
        execs as f64,
        "",
        "counted from step output outside the journal",
    );
    Ok(())
}

// One worker per core, as the `weft` CLI.
#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let python = flag(&args, "--python").cloned();
    let js = flag(&args, "--js").cloned();
    harness::JS.set(js.clone()).expect("set once");
    // `--python-shared PATH`: the Python guest built `--isolation shared`,
    // deployed as `pysh` with `isolation = "shared"`.
    let python_shared = flag(&args, "--python-shared").cloned();
    harness::PYTHON_SHARED
        .set(python_shared.clone())
        .expect("set once");
    let weft = flag(&args, "--weft")
        .cloned()
        .unwrap_or_else(|| "target/release/weft".into());
    let mut r = Report::new(true);
    // `--repeat N`: W1-W4 run N times; each figure is the median.
    let repeat: usize = flag(&args, "--repeat")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    // `--store postgres://…`: the journal in PostgreSQL, a fresh database
    // per workload on that server; the limit is then one PostgreSQL commit.
    let store = flag(&args, "--store").cloned();
    harness::STORE.set(store.clone()).expect("set once");
    let tmp = tempfile::tempdir()?;
    let mut commit_ms = physical_limits(tmp.path(), &mut r)?;
    if let Some(server) = &store {
        commit_ms = harness::postgres_limits(server, &mut r).await?;
    }
    // `--only W2` (repeatable) runs only the workloads named.
    let only: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| *i > 0 && args[i - 1] == "--only" && !a.starts_with("--"))
        .map(|(_, a)| a.clone())
        .collect();
    let run = |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    let mut guests = vec!["rs"];
    if python.is_some() {
        guests.push("py");
    }
    if python_shared.is_some() {
        guests.push("pysh");
    }
    if js.is_some() {
        guests.push("js");
    }
    // `--guest py` (or `rs`, `js`) runs one guest language only.
    if let Some(i) = args.iter().position(|a| a == "--guest") {
        let g = args.get(i + 1).map(String::as_str).unwrap_or("");
        guests.retain(|x| *x == g);
    }
    let py = python.as_deref();
    for g in &guests {
        // The issue's sizes for both languages; `--quick` runs smaller ones.
        let big = !quick;
        if run("W1") {
            for n in if big { vec![100, 1000] } else { vec![100] } {
                repeated!(r, repeat, |run| w1(g, n, py, commit_ms, &mut run));
            }
        }
        if run("W2") {
            let sizes = match (big, *g) {
                (true, _) => vec![200, 2000, 20000],
                (false, "rs") => vec![200, 2000],
                (false, _) => vec![200],
            };
            for m in sizes {
                repeated!(r, repeat, |run| w2(g, m, py, &mut run));
            }
        }
        let m = if big { 2000 } else { 200 };
        if run("W3") {
            for in_memory in [false, true] {
                repeated!(r, repeat, |run| w3(g, m, in_memory, py, &mut run));
            }
        }
        if run("W4") {
            repeated!(r, repeat, |run| w4(g, m, py, &mut run));
        }
        if run("W6") {
            for n in if big { vec![1000, 10000] } else { vec![1000] } {
                w6(g, n, py, &mut r).await?;
            }
        }
        if run("W7") {
            let (ev, hot) = match (big, *g) {
                (true, _) => (10000, 500),
                (false, "rs") => (1000, 500),
                (false, _) => (200, 50),
            };
            w7(g, ev, hot, py, &mut r).await?;
        }
    }
    if run("W5") {
        w5(Path::new(&weft), &mut r)?;
    }
    // What the web UI asks of a server with many instances.
    if only.iter().any(|o| o == "ui") {
        ui::ui(Path::new(&weft), if quick { 1000 } else { 10000 }, &mut r)?;
    }
    // `--hosts N` with `--store`: the workloads on N `weft serve` processes
    // sharing the store, and failover after `kill -9` of one.
    let hosts: usize = flag(&args, "--hosts")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if let (Some(server), true) = (&store, hosts > 0) {
        let weft = Path::new(&weft);
        let m = if quick { 200 } else { 2000 };
        if run("hosts") {
            hosts::workloads(weft, server, hosts, m, commit_ms, &mut r).await?;
        }
        if run("failover") {
            hosts::failover(weft, server, hosts.max(2), 100, &mut r).await?;
        }
    }
    r.table();
    Ok(())
}
