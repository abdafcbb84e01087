//! Python workflows deployed `isolation = "shared"`: many runs as tasks of
//! a few warm interpreters. Each test drives many instances at once
//! through `weft serve`, as the mode is meant for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::js::counter;
use crate::common::python::{py_component, py_shared_component};
use crate::common::server::Server;
use crate::common::*;
use crate::observe::{sample, scrape};

fn toml(component: &str) -> String {
    format!(
        "[workflows.py]\ncomponent = {component:?}\nisolation = \"shared\"\nallow_hosts = [\"127.0.0.1\"]\n"
    )
}

fn shared() -> String {
    py_shared_component("shared", Some("Shared"))
}

fn create(s: &Server, id: &str, params: Value) {
    let body = json!({"id": id, "params": params}).to_string();
    let (code, v) = s.post("/v1/workflows/py/instances", &body);
    assert_eq!(code, 201, "{v}");
}

/// The value of a metric now (0 when absent).
fn metric(s: &Server, name: &str) -> f64 {
    sample(&scrape(s, None).1, name).unwrap_or(0.0)
}

/// Waits until `pred` holds of the metric `name`.
fn wait_metric(s: &Server, name: &str, what: &str, pred: impl Fn(f64) -> bool) {
    let start = Instant::now();
    loop {
        let v = metric(s, name);
        if pred(v) {
            return;
        }
        assert!(start.elapsed() < PATIENCE, "{name} stayed {v}, not {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates `n` instances `{prefix}{i}` of the scenario `counted` with
/// `steps` steps reporting to `url`.
fn create_counted(s: &Server, prefix: &str, n: usize, steps: usize, url: &str) {
    for i in 0..n {
        let params = json!({"scenario": "counted", "n": steps, "url": url});
        create(s, &format!("{prefix}{i}"), params);
    }
}

/// Waits until `{prefix}0..n` all wait for their `go` event.
fn wait_for_go(s: &Server, w: &Weft, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}{i}");
        s.wait_instance("py", &id, "waiting for go", |_| {
            w.history(&id).iter().any(|e| e["name"] == "go")
        });
    }
}

fn wait_hits(counts: &std::sync::Mutex<BTreeMap<String, u32>>, n: usize) {
    let start = Instant::now();
    while counts.lock().unwrap().len() < n {
        assert!(start.elapsed() < PATIENCE, "{:?}", counts.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Concurrent runs in shared interpreters keep their own outputs, clocks
/// and random values, through an eviction and a replay each; evicted, they
/// hold no place in an interpreter.
#[test]
fn shared_runs_never_mix_and_evicted_runs_hold_nothing() {
    let w = Weft::new();
    let s = w.serve("serve", &toml(&shared()), &["--evict-after", "100ms"]);
    let ids: Vec<String> = (0..60).map(|i| format!("mix{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        create(
            &s,
            id,
            json!({"scenario": "mix", "n": 4, "seed": i * 7, "nap": 0.4}),
        );
    }
    // Every run sleeps past the eviction threshold: all are evicted at once.
    wait_metric(&s, "weft_evictions_total{workflow=\"py\"}", "60", |v| {
        v >= 60.0
    });
    for (i, id) in ids.iter().enumerate() {
        let done = s.wait_status("py", id, "complete");
        let out = &done["output"];
        assert_eq!(out["me"], json!(id), "{out}");
        let acc: Vec<String> = (0..4).map(|k| format!("{id}:{k}:{}", i * 7)).collect();
        assert_eq!(out["acc"], json!(acc), "{out}");
        let r = out["r"].as_f64().unwrap();
        let h = w.history(id);
        let sleep = entries(&h, "sleep")[0];
        assert_eq!(sleep["name"], format!("nap-{}", (r * 1_000_000.0) as u64));
        assert!((out["started"].as_f64().unwrap() * 1000.0) as u64 <= u(&sleep["startedMs"]));
    }
    let rs: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| s.get(&format!("/v1/workflows/py/instances/{id}")).1["output"]["r"].to_string())
        .collect();
    assert_eq!(rs.len(), ids.len(), "every run drew its own random values");
    let text = scrape(&s, None).1;
    assert!(
        sample(&text, "weft_replays_total{workflow=\"py\"}").unwrap() >= 60.0,
        "{text}"
    );
    // No run holds a place in an interpreter any more; a few interpreters
    // served them all.
    wait_metric(&s, "weft_shared_runs", "0", |v| v == 0.0);
    let interpreters = metric(&s, "weft_shared_instances");
    assert!((1.0..=4.0).contains(&interpreters), "{interpreters}");
}

/// An interpreter crash in one run takes its shared instance down: that
/// run's step attempt fails (twice, as its retry also crashes), the runs
/// beside it are replayed elsewhere, charged nothing, and no step they
/// completed runs again.
#[test]
fn a_trap_in_one_shared_run_is_charged_to_it_alone() {
    let (url, counts) = counter();
    let w = Weft::new();
    let s = w.serve("serve", &toml(&shared()), &["--evict-after", "100h"]);
    const N: usize = 40;
    create_counted(&s, "ok", N, 3, &url);
    create(&s, "bad", json!({"scenario": "crash_on_event"}));
    // Every healthy run has done its 3 steps and waits in memory.
    wait_hits(&counts, 3 * N);
    wait_for_go(&s, &w, "ok", N);
    wait_metric(&s, "weft_shared_runs", "all runs", |v| v == (N + 1) as f64);
    s.post("/v1/workflows/py/instances/bad/events/crash", "{}");
    let bad = s.wait_status("py", "bad", "complete");
    assert_eq!(bad["output"]["crash"], "WorkflowTrap", "{bad}");
    let history = w.history("bad");
    let crash = steps_named(&history, "crash");
    assert_eq!(crash.len(), 2, "two attempts, each a trap: {crash:?}");
    let displaced = metric(&s, "weft_runs_displaced_total{workflow=\"py\"}");
    assert!(
        displaced >= 1.0,
        "the crashes took healthy runs down with them"
    );
    for i in 0..N {
        s.post(
            &format!("/v1/workflows/py/instances/ok{i}/events/go"),
            &i.to_string(),
        );
    }
    for i in 0..N {
        let id = format!("ok{i}");
        let done = s.wait_status("py", &id, "complete");
        assert_eq!(
            done["output"],
            json!({"total": 4, "event": i, "v": 1}),
            "{done}"
        );
        let h = w.history(&id);
        let steps = entries(&h, "step");
        assert_eq!(
            steps.len(),
            4,
            "one attempt per step, none failed: {steps:?}"
        );
    }
    let counts = counts.lock().unwrap();
    assert_eq!(counts.len(), 4 * N, "{counts:?}");
    assert!(
        counts.values().all(|c| *c == 1),
        "a completed step ran again: {counts:?}"
    );
}

/// A trap storm (a step that crashes the interpreter in each of its 31
/// attempts, with no delay between them) among 120 healthy runs: after its
/// first trap the culprit runs alone, so the healthy runs are taken down
/// at most once each, and every one of them finishes with no completed
/// step run twice.
#[test]
fn a_trap_storm_in_one_run_spares_the_others() {
    let (url, counts) = counter();
    let w = Weft::new();
    let s = w.serve("serve", &toml(&shared()), &["--evict-after", "100h"]);
    const N: usize = 120;
    create_counted(&s, "ok", N, 3, &url);
    wait_hits(&counts, 3 * N);
    wait_for_go(&s, &w, "ok", N);
    create(&s, "storm", json!({"scenario": "storm", "retries": 30}));
    let storm = s.wait_status("py", "storm", "complete");
    assert_eq!(storm["output"]["crash"], "WorkflowTrap", "{storm}");
    let history = w.history("storm");
    assert_eq!(
        steps_named(&history, "crash").len(),
        31,
        "every attempt charged to it"
    );
    let displaced = metric(&s, "weft_runs_displaced_total{workflow=\"py\"}");
    assert!(
        (1.0..=N as f64).contains(&displaced),
        "each healthy run went down at most once: {displaced}"
    );
    for i in 0..N {
        s.post(&format!("/v1/workflows/py/instances/ok{i}/events/go"), "1");
    }
    for i in 0..N {
        let done = s.wait_status("py", &format!("ok{i}"), "complete");
        assert_eq!(done["output"]["total"], 4, "{done}");
    }
    let counts = counts.lock().unwrap();
    assert!(
        counts.values().all(|c| *c == 1),
        "a completed step ran again: {counts:?}"
    );
}

/// `kill -9` of a server whose runs share interpreters loses nothing: each
/// instance completes after the restart, and only steps in flight at the
/// kill ran twice.
#[test]
fn kill_9_of_a_server_with_shared_runs_loses_nothing() {
    let (url, counts) = counter();
    let w = Weft::new();
    let c = shared();
    let s = w.serve("serve-1", &toml(&c), &[]);
    const N: usize = 30;
    create_counted(&s, "k", N, 6, &url);
    wait_hits(&counts, N * 2);
    s.run.kill9();
    let s = w.serve("serve-2", &toml(&c), &[]);
    wait_hits(&counts, N * 6);
    wait_for_go(&s, &w, "k", N);
    for i in 0..N {
        s.post(&format!("/v1/workflows/py/instances/k{i}/events/go"), "1");
    }
    for i in 0..N {
        let id = format!("k{i}");
        let done = s.wait_status("py", &id, "complete");
        assert_eq!(done["output"]["event"], 1, "{done}");
        assert_eq!(entries(&w.history(&id), "step").len(), 7);
    }
    let mut counts = counts.lock().unwrap().clone();
    // A connection the kill cut before its request line was whole.
    counts.remove("?");
    assert_eq!(counts.len(), 7 * N, "{counts:?}");
    assert!(counts.values().all(|c| (1..=2).contains(c)), "{counts:?}");
    // A run has at most one step in flight at a time.
    let twice = counts.values().filter(|c| **c == 2).count();
    assert!(twice <= N, "{twice} steps ran twice: {counts:?}");
}

/// Instances that wait in a shared instance of one version move to a new
/// version on request, which replays them into its own shared instance;
/// the others stay and finish on theirs.
#[test]
fn shared_runs_upgrade_one_by_one() {
    let (url, _counts) = counter();
    let (v1, v2) = (shared(), py_shared_component("shared", Some("SharedV2")));
    let w = Weft::new();
    let s = w.serve("serve-1", &toml(&v1), &["--evict-after", "100h"]);
    create_counted(&s, "u", 10, 1, &url);
    wait_for_go(&s, &w, "u", 10);
    s.run.kill9();
    // Restarted with v2 deployed: the instances resume on v1, in memory.
    let s = w.serve("serve-2", &toml(&v2), &["--evict-after", "100h"]);
    wait_metric(&s, "weft_shared_runs", "10", |v| v == 10.0);
    let old = s.get("/v1/workflows/py/instances/u0").1["version"].clone();
    for i in 0..5 {
        let (code, up) = s.post(
            "/v1/workflows/py/upgrade",
            &json!({"id": format!("u{i}")}).to_string(),
        );
        assert_eq!(
            (code, up["upgraded"].clone()),
            (200, json!([format!("u{i}")])),
            "{up}"
        );
    }
    wait_metric(&s, "weft_shared_runs", "10", |v| v == 10.0);
    for i in 0..10 {
        s.post(&format!("/v1/workflows/py/instances/u{i}/events/go"), "0");
    }
    for i in 0..10 {
        let done = s.wait_status("py", &format!("u{i}"), "complete");
        let v = if i < 5 { 2 } else { 1 };
        assert_eq!(done["output"]["v"], v, "{done}");
        assert_eq!(done["version"] == old, v == 1, "{done}");
    }
}

/// A component that cannot run shared (Rust, or Python built for the
/// default mode only) is refused at deploy, with the reason.
#[test]
fn a_component_built_for_one_instance_cannot_be_deployed_shared() {
    let w = Weft::new();
    let config = w.dir.path().join("weft.toml");
    for component in [SCENARIOS.to_owned(), py_component("shared", Some("Shared"))] {
        std::fs::write(&config, toml(&component)).unwrap();
        let d = w.exec(&[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(d.code, Some(1), "{}", d.stderr);
        assert!(
            d.stderr.contains("weft build --isolation shared"),
            "{}",
            d.stderr
        );
    }
    // `weft run` says so too, and leaves no instance behind.
    let py = py_component("shared", Some("Shared"));
    let input = r#"{"scenario":"mix","n":1,"seed":0,"nap":0}"#;
    let d = w.exec(&["run", &py, "--isolation", "shared", "--input", input]);
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    assert!(
        d.stderr.contains("weft build --isolation shared"),
        "{}",
        d.stderr
    );
    assert!(
        w.exec(&["list"]).stdout.trim().lines().count() <= 1,
        "an instance was left"
    );
    // Built for both, it runs shared.
    let d = w.exec(&["run", &shared(), "--isolation", "shared", "--input", input]);
    assert!(d.ok(), "{}", d.stderr);
    assert_eq!(
        d.json()["acc"],
        json!([format!("{}:0:0", d.json()["me"].as_str().unwrap())])
    );
}
