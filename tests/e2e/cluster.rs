//! Many `weft serve` hosts on one PostgreSQL store: hosts killed with
//! `kill -9` and restarted under load lose nothing and run no completed
//! step again (counted by a loopback service, not by weft); a host stopped
//! past its lease writes nothing once it goes on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::pg::TestDb;
use crate::common::python::py_component;
use crate::common::server::Server;
use crate::common::*;

/// A loopback HTTP service that counts the requests for each path and
/// answers with the count: `GET /<instance>/<step>` → `3` the third time.
struct Counter {
    url: String,
    counts: Arc<Mutex<HashMap<String, u64>>>,
}

impl Counter {
    fn start() -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let c = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let c = c.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || !line.ends_with(" HTTP/1.1\r\n") {
                        return;
                    }
                    // The rest of the head. A request cut short (its host
                    // was killed while sending it) was not made: not counted.
                    let mut h = String::new();
                    loop {
                        h.clear();
                        match reader.read_line(&mut h) {
                            Ok(_) if h == "\r\n" => break,
                            Ok(n) if n > 0 && h.ends_with('\n') => continue,
                            _ => return,
                        }
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let n = {
                        let mut m = c.lock().unwrap();
                        let n = m
                            .entry(path.trim_start_matches('/').to_owned())
                            .or_default();
                        *n += 1;
                        *n
                    };
                    let body = n.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Counter { url, counts }
    }

    fn counts(&self) -> HashMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }
}

/// A small deterministic generator, so that a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One request that may fail (the host was just killed): the status, or
/// `None` when nothing answered.
fn try_http(method: &str, url: &str, body: &str) -> Option<(u16, Value)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let resp = match method {
        "GET" => agent.get(url).call(),
        _ => agent.post(url).send(body),
    };
    let mut resp = resp.ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// The hosts of a test: each its own data dir, all on one store.
struct Cluster {
    db: TestDb,
    dirs: Vec<Weft>,
    hosts: Vec<Option<Server>>,
    toml: String,
    starts: usize,
}

impl Cluster {
    fn start(n: usize, toml: String) -> Cluster {
        let db = TestDb::new();
        let dirs: Vec<Weft> = (0..n).map(|_| Weft::on(&db)).collect();
        let mut c = Cluster {
            db,
            dirs,
            hosts: Vec::new(),
            toml,
            starts: 0,
        };
        for i in 0..n {
            let s = c.boot(i);
            c.hosts.push(Some(s));
        }
        c
    }

    fn boot(&mut self, i: usize) -> Server {
        self.starts += 1;
        let name = format!("host{i}-{}", self.starts);
        self.dirs[i].serve(&name, &self.toml, &[])
    }

    /// The URL of a live host, chosen by `rng`.
    fn any_url(&self, rng: &mut Lcg) -> String {
        let live: Vec<&Server> = self.hosts.iter().flatten().collect();
        live[rng.below(live.len() as u64) as usize].url.clone()
    }

    /// Sends a request to random live hosts until one answers.
    fn send(&self, rng: &mut Lcg, method: &str, path: &str, body: &str) -> (u16, Value) {
        let start = Instant::now();
        loop {
            let url = format!("{}{path}", self.any_url(rng));
            if let Some(r) = try_http(method, &url, body)
                && r.0 < 500
            {
                return r;
            }
            assert!(start.elapsed() < PATIENCE, "no host took {method} {path}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, sql: &str) -> u64 {
        self.db.query(sql)[0].parse().unwrap()
    }

    /// Waits until `n` instances are complete, failing on an errored one.
    fn wait_complete(&self, n: u64) {
        let start = Instant::now();
        loop {
            let done = self.count("SELECT count(*) FROM weft_instances WHERE status = 'complete'");
            let bad = self.db.query(
                "SELECT id || ': ' || coalesce(error, '') FROM weft_instances \
                 WHERE status IN ('errored', 'terminated')",
            );
            assert!(bad.is_empty(), "instances failed: {bad:?}");
            if done == n {
                return;
            }
            if start.elapsed() > Duration::from_secs(600) {
                let stuck = self.db.query(
                    "SELECT i.id || ' ' || i.status || ' owner=' || coalesce(i.owner, '-') || \
                     ' epoch=' || i.epoch || ' live=' || coalesce((h.lease_until_ms > \
                     (extract(epoch from clock_timestamp()) * 1000)::bigint)::text, '-') \
                     FROM weft_instances i LEFT JOIN weft_hosts h ON h.id = i.owner \
                     WHERE i.status <> 'complete' ORDER BY i.id LIMIT 10",
                );
                let hosts = self
                    .db
                    .query("SELECT id || ' ' || coalesce(api, '-') FROM weft_hosts");
                let logs: Vec<String> = self
                    .hosts
                    .iter()
                    .flatten()
                    .map(|s| {
                        let t = s.run.stderr_text();
                        let mut from = t.len().saturating_sub(3000);
                        while !t.is_char_boundary(from) {
                            from += 1;
                        }
                        t[from..].to_owned()
                    })
                    .collect();
                panic!(
                    "{done} of {n} instances complete; stuck: {stuck:#?}; hosts: {hosts:#?}; \
                     host logs (ends): {logs:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every instance `cNNNN` has the output of a crash-free run with
    /// `steps` steps and event `{"i": NNNN}`.
    fn check_outputs(&self, steps: u64) {
        let rows = self
            .db
            .query("SELECT id || ' ' || output FROM weft_instances ORDER BY id");
        for row in &rows {
            let (id, out) = row.split_once(' ').unwrap();
            let i: usize = id[1..].parse().unwrap();
            let out: Value = serde_json::from_str(out).unwrap();
            assert_eq!(out, expected(steps, i), "instance {id}");
        }
    }

    /// Each step's result as journaled: `(instance/step) → value`.
    fn journaled_steps(&self) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for row in self.db.query(
            "SELECT instance_id || ' ' || entry FROM weft_entries WHERE entry LIKE '{\"kind\":\"step\"%'",
        ) {
            let (id, entry) = row.split_once(' ').unwrap();
            let e: Value = serde_json::from_str(entry).unwrap();
            if e["result"] == "ok" {
                let key = format!("{id}/{}", e["name"].as_str().unwrap());
                let old = out.insert(key.clone(), e["value"].as_u64().unwrap());
                assert!(old.is_none(), "{key} journaled twice");
            }
        }
        out
    }
}

fn config(counter: &Counter) -> String {
    let _ = counter;
    let py = py_component("scenarios", None);
    format!(
        "[workflows.rs]\ncomponent = {SCENARIOS:?}\nallow_hosts = [\"127.0.0.1\"]\n\
         [workflows.py]\ncomponent = {py:?}\nallow_hosts = [\"127.0.0.1\"]\n"
    )
}

fn params(counter: &Counter, n: u64, ms: u64) -> Value {
    json!({"scenario": "cluster", "url": counter.url, "n": n, "ms": ms})
}

/// The output of a `cluster` instance with `n` steps and event `i`, the
/// same with or without crashes.
fn expected(n: u64, i: usize) -> Value {
    let sum: u64 = (0..n).map(|k| k * k + 1).sum();
    json!({"steps": n, "sum": sum, "event": {"i": i}, "after": 1})
}

/// Creates instances `c0000…` (every fifth in Python) in batches of 100,
/// each batch on a random host (again on another if that host died).
fn create_all(c: &Cluster, rng: &mut Lcg, total: usize, params: &Value) {
    for wf in ["rs", "py"] {
        let ids: Vec<usize> = (0..total)
            .filter(|i| (i % 5 == 0) == (wf == "py"))
            .collect();
        for chunk in ids.chunks(100) {
            let batch: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"id": format!("c{i:04}"), "params": params}))
                .collect();
            let path = format!("/v1/workflows/{wf}/instances/batch");
            let (code, v) = c.send(rng, "POST", &path, &json!(batch).to_string());
            assert_eq!(code, 200, "{v}");
        }
    }
}

#[test]
fn hosts_killed_under_load_lose_nothing_and_run_no_completed_step_again() {
    let total: usize = std::env::var("WEFT_CLUSTER_INSTANCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let steps = 3;
    let counter = Counter::start();
    let mut c = Cluster::start(3, config(&counter));
    let mut rng = Lcg(0x5eed);
    create_all(&c, &mut rng, total, &params(&counter, steps, 300));

    // Events to random hosts while hosts die and come back; at least 3
    // kills, also when the events are all sent before the third.
    let mut kills: u64 = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(500);
    let kill_one = |c: &mut Cluster, rng: &mut Lcg, kills: &mut u64| {
        let h = rng.below(3) as usize;
        if let Some(s) = c.hosts[h].take() {
            s.run.kill9();
            *kills += 1;
            // Back after a while, or at once.
            if rng.below(2) == 0 {
                std::thread::sleep(Duration::from_millis(rng.below(1500)));
            }
            let s = c.boot(h);
            c.hosts[h] = Some(s);
        }
        Instant::now() + Duration::from_millis(300 + rng.below(1500))
    };
    for i in 0..total {
        if Instant::now() >= next_kill && kills < 6 {
            next_kill = kill_one(&mut c, &mut rng, &mut kills);
        }
        let path = format!("/v1/instances/c{i:04}/events/go");
        let (code, v) = c.send(&mut rng, "POST", &path, &json!({"i": i}).to_string());
        assert_eq!(code, 202, "{v}");
    }
    while kills < 3 {
        std::thread::sleep(next_kill.saturating_duration_since(Instant::now()));
        next_kill = kill_one(&mut c, &mut rng, &mut kills);
    }
    assert!(kills >= 3, "only {kills} hosts were killed");
    c.wait_complete(total as u64);

    // Every instance has the output of a run without crashes.
    c.check_outputs(steps);
    // No step ran after the run whose result was journaled: the service
    // counted each step exactly as often as the journaled count says.
    let journaled = c.journaled_steps();
    let counts = counter.counts();
    assert_eq!(journaled.len(), total * (steps as usize + 1));
    let mut again = 0;
    for (key, value) in &journaled {
        let n = counts.get(key).copied().unwrap_or(0);
        assert_eq!(
            n, *value,
            "{key}: the service counted {n} runs, the journal kept run {value}"
        );
        if n > 1 {
            again += 1;
        }
    }
    let never: Vec<&String> = counts
        .keys()
        .filter(|k| !journaled.contains_key(*k))
        .collect();
    assert!(
        never.is_empty(),
        "steps ran that were never journaled: {never:?}"
    );
    // Only steps in flight when a host died ran once more.
    assert!(
        counts.values().all(|n| *n <= 1 + kills),
        "a step ran more than once per kill"
    );
    eprintln!(
        "{total} instances, {kills} hosts killed, {} host starts, {again} steps in flight at a kill ran again",
        c.starts
    );
}

#[test]
fn a_host_stopped_past_its_lease_writes_nothing_when_it_goes_on() {
    let counter = Counter::start();
    let toml =
        format!("[workflows.rs]\ncomponent = {SCENARIOS:?}\nallow_hosts = [\"127.0.0.1\"]\n");
    let c = Cluster::start(3, toml);
    let mut rng = Lcg(0x570b);
    let total = 150;
    // Long sleeps keep the instances in memory, owned, while host 0 stops.
    let p = params(&counter, 4, 1500);
    for chunk in (0..total).collect::<Vec<usize>>().chunks(50) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"id": format!("c{i:04}"), "params": p}))
            .collect();
        let (code, v) = c.send(
            &mut rng,
            "POST",
            "/v1/workflows/rs/instances/batch",
            &json!(batch).to_string(),
        );
        assert_eq!(code, 200, "{v}");
    }
    let stopped = c.hosts[0].as_ref().unwrap();
    let host = c.db.query(&format!(
        "SELECT id FROM weft_hosts WHERE api = '{}'",
        stopped.url
    ));
    assert_eq!(host.len(), 1, "host 0 is registered with its API");
    let host = &host[0];
    let owned_sql = format!("SELECT id || ' ' || epoch FROM weft_instances WHERE owner = '{host}'");
    let start = Instant::now();
    while c.db.query(&owned_sql).is_empty() {
        assert!(start.elapsed() < PATIENCE, "host 0 took no instance");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(stopped, "STOP");
    let owned = c.db.query(&owned_sql);
    // The others take its instances once its lease (3 s) runs out.
    let start = Instant::now();
    while !c.db.query(&owned_sql).is_empty() {
        assert!(
            start.elapsed() < PATIENCE,
            "host 0's instances were not taken"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let pairs: Vec<String> = owned
        .iter()
        .map(|r| {
            let (id, epoch) = r.split_once(' ').unwrap();
            format!("('{id}', {epoch})")
        })
        .collect();
    let stale = format!(
        "SELECT count(*) FROM weft_entries WHERE (instance_id, epoch) IN ({})",
        pairs.join(", ")
    );
    let before = c.count(&stale);
    signal(stopped, "CONT");
    // It goes on: whatever it was doing meets the fence.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        c.count(&stale),
        before,
        "the stopped host wrote after its lease ran out"
    );
    let log = stopped.run.stderr_text();
    assert!(log.contains("lease on the store ran out"), "{log}");
    for i in 0..total {
        let path = format!("/v1/instances/c{i:04}/events/go");
        let (code, v) = c.send(&mut rng, "POST", &path, &json!({"i": i}).to_string());
        assert_eq!(code, 202, "{v}");
    }
    c.wait_complete(total as u64);
    c.check_outputs(4);
}

fn signal(s: &Server, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &s.run.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

/// A pause, resume, terminate or delete sent to a host that does not run
/// the instance reaches the host that does; an event sent anywhere wakes
/// the instance on its host.
#[test]
fn requests_for_another_hosts_instance_reach_it() {
    let toml = format!("[workflows.rs]\ncomponent = {SCENARIOS:?}\n");
    let c = Cluster::start(2, toml);
    let started = |v: &Value| v["status"] == "running" || v["status"] == "waiting";
    let (a, b) = (c.hosts[0].as_ref().unwrap(), c.hosts[1].as_ref().unwrap());
    let owner = |id: &str| {
        c.db.query(&format!(
            "SELECT coalesce(h.api, '-') FROM weft_instances i \
             LEFT JOIN weft_hosts h ON h.id = i.owner WHERE i.id = '{id}'"
        ))
    };
    for id in ["p", "t", "d"] {
        let body = format!(r#"{{"id":"{id}","params":{{"scenario":"events"}}}}"#);
        let (code, v) = a.post("/v1/workflows/rs/instances", &body);
        assert_eq!(code, 201, "{v}");
        a.wait_instance("rs", id, "started", started);
        assert_eq!(
            owner(id),
            [a.url.as_str()],
            "the host that created {id} runs it"
        );
    }
    // Paused through b: a, which runs it, pauses it and lets it go.
    let path = "/v1/workflows/rs/instances/p/status";
    let (code, v) = b.patch(path, r#"{"status":"pause"}"#);
    assert_eq!((code, &v["status"]), (200, &json!("paused")), "{v}");
    a.wait_status("rs", "p", "paused");
    let start = Instant::now();
    while owner("p") != ["-"] {
        assert!(start.elapsed() < PATIENCE, "a kept the paused instance");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Resumed through b: no host owns it, so b takes it.
    let (code, v) = b.patch(path, r#"{"status":"resume"}"#);
    assert_eq!(code, 200, "{v}");
    b.wait_instance("rs", "p", "started", started);
    assert_eq!(owner("p"), [b.url.as_str()]);
    // Events through a reach it on b.
    for (t, p) in [("first", r#"{"by":"x"}"#), ("second", "2")] {
        let (code, v) = a.post(&format!("/v1/instances/p/events/{t}"), p);
        assert_eq!(code, 202, "{v}");
    }
    let v = a.wait_status("rs", "p", "complete");
    assert_eq!(
        v["output"],
        json!({"first": "x", "second": 2, "type": "first"})
    );
    // Terminated and deleted through b, while a runs them.
    let (code, v) = b.patch(
        "/v1/workflows/rs/instances/t/status",
        r#"{"status":"terminate"}"#,
    );
    assert_eq!((code, &v["status"]), (200, &json!("terminated")), "{v}");
    let (code, v) = b.delete("/v1/workflows/rs/instances/d");
    assert_eq!(code, 204, "{v}");
    assert_eq!(a.get("/v1/instances/d").0, 404);
    assert!(b.run.stderr_text().contains("Serving"));
}
