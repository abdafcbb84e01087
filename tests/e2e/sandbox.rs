//! Real work, safely: fetch from steps (allow-listed, never repeated once
//! journaled), secrets that never leak, resource limits, hostile
//! components, and versioned deployments with checked upgrades.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::python::py_component;
use crate::common::*;
use serde_json::json;
use weft_test_artifacts::{BAD_IMPORT, COMMAND, SCENARIOS_V2};

/// A loopback HTTP server that counts requests and answers `pong N` after
/// `delay_ms`, one thread per connection.
pub(crate) fn counting_server(delay_ms: u64) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ping", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                let body = format!("pong {n}");
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, count)
}

#[test]
fn fetch_from_concurrent_steps_is_not_repeated_after_a_crash() {
    let (url, count) = counting_server(300);
    let w = Weft::new();
    let input = json!({"scenario": "fetch", "url": url, "ms": 1500}).to_string();
    let mut run = w.spawn(
        "run",
        &[
            "run",
            SCENARIOS,
            "--id",
            "f",
            "--input",
            &input,
            "--allow-host",
            "127.0.0.1",
        ],
    );
    run.wait_stderr("the sleep after the fetches", |t| {
        t.contains("Sleeping after-fetch")
    });
    run.kill9();
    assert_eq!(count.load(Ordering::SeqCst), 2);
    let d = w.exec(&["resume", "f", "--allow-host", "127.0.0.1"]);
    let out = d.json();
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "a journaled step's request is not sent again"
    );
    let bodies: Vec<_> = [&out["a"]["body"], &out["b"]["body"]]
        .iter()
        .map(|b| b.as_str().unwrap().to_owned())
        .collect();
    assert!(
        bodies.contains(&"pong 1".to_owned()) && bodies.contains(&"pong 2".to_owned()),
        "{out}"
    );
    assert_eq!(out["outside"], "FetchNotInStep");
    assert_eq!(out["denied"], "FetchDenied");
    // The two requests ran at the same time.
    let h = w.history("f");
    let a = entries(&h, "step")
        .into_iter()
        .find(|s| s["name"] == "get-a")
        .unwrap()
        .clone();
    let b = entries(&h, "step")
        .into_iter()
        .find(|s| s["name"] == "get-b")
        .unwrap()
        .clone();
    assert!(u(&a["startedMs"]) < u(&b["endedMs"]) && u(&b["startedMs"]) < u(&a["endedMs"]));
}

#[test]
fn fetch_is_refused_for_hosts_off_the_allow_list() {
    let (url, count) = counting_server(0);
    let w = Weft::new();
    let input = json!({"scenario": "fetch", "url": url, "ms": 10}).to_string();
    let d = w.exec(&["run", SCENARIOS, "--id", "no", "--input", &input]);
    assert_eq!(d.code, Some(1));
    assert_eq!(w.status("no")["error"]["name"], "FetchDenied");
    assert!(
        d.stderr.contains("not on this workflow's allow-list"),
        "{}",
        d.stderr
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[test]
fn python_fetch_with_gather_and_replay() {
    let py = py_component("scenarios", None);
    let (url, count) = counting_server(300);
    let w = Weft::new();
    let input = json!({"scenario": "fetch", "url": url, "seconds": 1}).to_string();
    let d = w.exec(&[
        "run",
        &py,
        "--id",
        "pf",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
        "--evict-after",
        "200ms",
    ]);
    let out = d.json();
    assert!(d.stderr.contains("Replaying"), "{}", d.stderr);
    assert_eq!(count.load(Ordering::SeqCst), 2);
    assert_eq!(out["outside"], "FetchNotInStep");
    assert_eq!(out["a"]["status"], 200);
    let h = w.history("pf");
    let (a, b) = (
        entries(&h, "step")[0].clone(),
        entries(&h, "step")[1].clone(),
    );
    assert!(
        u(&a["startedMs"]) < u(&b["endedMs"]) && u(&b["startedMs"]) < u(&a["endedMs"]),
        "gathered requests overlap"
    );
}

pub(crate) const SECRET: &str = "sekr1t-value-42";

pub(crate) fn assert_no_secret(w: &Weft, texts: &[&str]) {
    for t in texts {
        assert!(!t.contains(SECRET), "secret leaked: {t}");
    }
    // Nor anywhere in the data dir (journal, components, cache).
    for entry in walk(&w.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes
                .windows(SECRET.len())
                .any(|win| win == SECRET.as_bytes()),
            "secret found in {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn secrets_are_readable_in_steps_and_never_recorded() {
    let w = Weft::new();
    let d = w
        .cmd(&[
            "run",
            SCENARIOS,
            "--id",
            "s",
            "--input",
            r#"{"scenario":"secret"}"#,
            "--secret",
            "API_KEY=TEST_SECRET",
        ])
        .env("TEST_SECRET", SECRET)
        .output()
        .unwrap();
    let d = Done::from(d);
    let out = d.json();
    assert_eq!(
        out["got"], "key=[redacted:API_KEY]",
        "the step saw the secret; the journal did not"
    );
    assert_eq!(out["outside"], "NotInStep");
    assert_eq!(out["missing"], "UnknownSecret");
    assert!(
        d.stderr.contains("the key is [redacted:API_KEY]"),
        "{}",
        d.stderr
    );
    let history = w.exec(&["history", "s"]).stdout;
    let status = w.exec(&["status", "s"]).stdout;
    assert_no_secret(&w, &[&d.stdout, &d.stderr, &history, &status]);

    // Python, through `self.env`, on a server with the secret in weft.toml.
    let py = py_component("scenarios", None);
    let w = Weft::new();
    let toml = format!(
        "[workflows.py]\ncomponent = {py:?}\n[workflows.py.secrets]\nAPI_KEY = {{ env = \"TEST_SECRET\" }}\n"
    );
    std::fs::write(w.dir.path().join("weft.toml"), toml).unwrap();
    let cfg = w.dir.path().join("weft.toml");
    let mut cmd = w.cmd(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--addr",
        "127.0.0.1:0",
    ]);
    cmd.env("TEST_SECRET", SECRET);
    let err_path = w.dir.path().join("serve2.err");
    cmd.stderr(std::fs::File::create(&err_path).unwrap())
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let url = loop {
        let t = std::fs::read_to_string(&err_path).unwrap_or_default();
        if let Some(u) = t.lines().find_map(|l| l.split("Serving ").nth(1)) {
            break u.trim().to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let (code, _) = crate::common::server::http(
        "POST",
        &format!("{url}/v1/workflows/py/instances"),
        Some(r#"{"id":"ps","params":{"scenario":"secret"}}"#),
        None,
    );
    assert_eq!(code, 201);
    let mut v = json!(null);
    for _ in 0..3000 {
        v = crate::common::server::http(
            "GET",
            &format!("{url}/v1/workflows/py/instances/ps"),
            None,
            None,
        )
        .1;
        if v["status"] == "complete" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(v["output"]["got"], "key=[redacted:API_KEY]", "{v}");
    assert_eq!(v["output"]["outside"], "NotInStep");
    let api = v.to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(&err_path).unwrap();
    assert_no_secret(&w, &[&api, &log]);
}

#[test]
fn limits_end_runaway_instances_with_clear_errors_and_spare_the_others() {
    let w = Weft::new();
    // (The CPU limits: tests/e2e/limits.rs.)
    let out = w
        .scenario(
            "bomb",
            r#"{"scenario":"memory-bomb"}"#,
            &["--memory-mb", "64"],
        )
        .json();
    assert_eq!(
        out,
        json!({"caught": "MemoryLimitExceeded", "after": 1}),
        "a trap in a step is a failed attempt"
    );
    let h = w.history("bomb");
    assert_eq!(
        entries(&h, "step")
            .iter()
            .filter(|s| s["name"] == "bomb")
            .count(),
        2,
        "retried once"
    );

    let d = w.scenario(
        "bomb-body",
        r#"{"scenario":"memory-bomb-body"}"#,
        &["--memory-mb", "64"],
    );
    assert_eq!(d.code, Some(1));
    assert_eq!(
        w.status("bomb-body")["error"]["name"],
        "MemoryLimitExceeded"
    );

    let d = w.scenario(
        "many",
        r#"{"scenario":"many-steps","n":20}"#,
        &["--max-steps", "5"],
    );
    assert_eq!(d.code, Some(1));
    assert_eq!(w.status("many")["error"]["name"], "StepLimitExceeded");

    let out = w
        .scenario("trap", r#"{"scenario":"step-trap"}"#, &[])
        .json();
    assert_eq!(out, json!({"caught": "WorkflowTrap"}));

    let big = w.scenario("big", r#"{"scenario":"too-large"}"#, &[]).json();
    assert_eq!(big["caught"], "StepResultTooLarge");

    // The data dir and other instances are fine.
    assert_eq!(
        w.scenario("ok", r#"{"scenario":"basic"}"#, &[]).json()["b"],
        42
    );
}

#[test]
fn hostile_components_are_refused_before_any_instance_starts() {
    let w = Weft::new();
    let d = w.exec(&["run", COMMAND]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("is not a weft workflow"), "{}", d.stderr);
    let d = w.exec(&["run", BAD_IMPORT]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("imports something weft does not provide"),
        "{}",
        d.stderr
    );
    assert!(
        d.stderr.contains("test:bad/secrets-of-the-host"),
        "names the import: {}",
        d.stderr
    );
    assert!(w.exec(&["list", "--json"]).stdout.trim().is_empty());
    let d = w.serve_fails(&format!("[workflows.bad]\ncomponent = {BAD_IMPORT:?}\n"));
    assert!(
        d.contains("deploying workflow `bad`") && d.contains("secrets-of-the-host"),
        "{d}"
    );
}

trait ServeFails {
    fn serve_fails(&self, toml: &str) -> String;
}

impl ServeFails for Weft {
    /// Runs `weft serve` on a config that must be refused; returns stderr.
    fn serve_fails(&self, toml: &str) -> String {
        let cfg = self.dir.path().join("bad.toml");
        std::fs::write(&cfg, toml).unwrap();
        let d = self.exec(&[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(d.code, Some(1), "{}", d.stderr);
        d.stderr
    }
}

#[test]
fn redeploys_keep_running_instances_on_their_version_and_upgrades_are_checked() {
    let w = Weft::new();
    let v1 = format!("[workflows.rs]\ncomponent = {SCENARIOS:?}\n");
    let s = w.serve("serve-1", &v1, &[]);
    let create = |s: &crate::common::server::Server, id: &str, params: serde_json::Value| {
        s.post(
            "/v1/workflows/rs/instances",
            &json!({"id": id, "params": params}).to_string(),
        )
    };
    create(&s, "sleepy", json!({"scenario": "sleep", "ms": 2500}));
    create(&s, "ev", json!({"scenario": "events"}));
    let v1_digest = s.wait_status("rs", "ev", "waiting")["version"].clone();
    s.wait_instance("rs", "sleepy", "asleep", |v| {
        v["steps"].as_array().is_some_and(|a| !a.is_empty())
    });
    s.run.kill9();

    // Redeploy during the sleep: the old instance stays on the old code.
    let v2 = format!("[workflows.rs]\ncomponent = {SCENARIOS_V2:?}\n");
    let s = w.serve("serve-2", &v2, &[]);
    let (_, fresh) = create(&s, "fresh", json!({"scenario": "basic"}));
    assert_ne!(
        fresh["version"], v1_digest,
        "new instances take the newest version"
    );
    let v2_digest = fresh["version"].clone();
    let (_, wfs) = s.get("/v1/workflows");
    assert_eq!(
        wfs["workflows"][0]["versions"],
        json!([v2_digest, v1_digest])
    );
    let slept = s.wait_status("rs", "sleepy", "complete");
    assert_eq!(slept["version"], v1_digest);
    assert_eq!(slept["output"], json!({"before": 1, "after": 2}));

    // An upgrade whose replay matches moves the instance.
    let (code, up) = s.post("/v1/workflows/rs/upgrade", r#"{"id":"ev"}"#);
    assert_eq!(code, 200, "{up}");
    assert_eq!(up["upgraded"], json!(["ev"]), "{up}");
    assert_eq!(
        s.get("/v1/workflows/rs/instances/ev").1["version"],
        v2_digest
    );
    s.run.kill9();

    // An upgrade to code that replays differently is refused; the
    // instance is unchanged and still completes on its version.
    let v3 = format!("[workflows.rs]\ncomponent = {CHANGED:?}\n");
    let s = w.serve("serve-3", &v3, &[]);
    let d = w.exec(&["upgrade", "rs", "ev"]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("Refused") && d.stderr.contains("NonDeterminismError"),
        "{}",
        d.stderr
    );
    let ev = s.wait_status("rs", "ev", "waiting");
    assert_eq!(ev["version"], v2_digest);
    s.post("/v1/workflows/rs/instances/ev/events/second", "1");
    s.post(
        "/v1/workflows/rs/instances/ev/events/first",
        r#"{"by":"v2"}"#,
    );
    assert_eq!(
        s.wait_status("rs", "ev", "complete")["output"]["first"],
        "v2"
    );

    // Versions no instance uses are removed at the next start.
    for id in ["sleepy", "ev", "fresh"] {
        assert_eq!(s.delete(&format!("/v1/workflows/rs/instances/{id}")).0, 204);
    }
    s.run.kill9();
    let s = w.serve("serve-4", &v3, &[]);
    let stored: Vec<_> = std::fs::read_dir(w.data_dir().join("components"))
        .unwrap()
        .collect();
    assert_eq!(stored.len(), 1, "only the deployed version is kept");
    assert!(
        s.run
            .stderr_text()
            .contains("Removed 2 unused component versions"),
        "{}",
        s.run.stderr_text()
    );
    s.run.kill9();
}

/// Guest output is prefixed with the instance and bounded: a step printing
/// 20 MiB leaves about the burst (1 MiB) on weft's stderr, with a note of
/// what was dropped, and the instance completes.
#[test]
fn guest_output_is_prefixed_and_bounded() {
    let w = Weft::new();
    let d = w.scenario("loud", r#"{"scenario":"loud","n":20480}"#, &[]);
    assert_eq!(d.json(), serde_json::json!(20480));
    let guest: Vec<&str> = d
        .stderr
        .lines()
        .filter(|l| l.starts_with("[loud] "))
        .collect();
    assert!(
        guest
            .first()
            .is_some_and(|l| l.starts_with("[loud] 00000000 xxx")),
        "{:?}",
        guest.first()
    );
    assert!(
        d.stderr.len() < 2 << 20,
        "{} bytes of stderr for 20 MiB of guest output",
        d.stderr.len()
    );
    assert!(
        d.stderr.contains("[loud] (weft dropped")
            && d.stderr.contains("bytes of this instance's output"),
        "{}",
        &d.stderr[d.stderr.len().saturating_sub(2000)..]
    );
}
