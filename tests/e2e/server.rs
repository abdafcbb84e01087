//! `weft serve`: the HTTP API over real HTTP on loopback, the instance
//! lifecycle, the scheduler, restarts of the server and child workflows.

use std::collections::BTreeMap;

use crate::common::python::py_component;
use crate::common::server::Server;
use crate::common::*;
use serde_json::{Value, json};

pub fn rust_only() -> String {
    format!(
        "[workflows.rs]\ncomponent = {SCENARIOS:?}\n\n[workflows.limited]\ncomponent = {SCENARIOS:?}\nconcurrency = 1\n"
    )
}

fn create(s: &Server, wf: &str, id: &str, params: Value) -> (u16, Value) {
    s.post(
        &format!("/v1/workflows/{wf}/instances"),
        &json!({"id": id, "params": params}).to_string(),
    )
}

#[test]
fn every_endpoint_and_its_errors() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &[]);
    assert_eq!(s.get("/healthz"), (200, json!({"ok": true})));

    let (code, v) = s.get("/v1/workflows");
    assert_eq!(code, 200);
    let names: Vec<_> = v["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].clone())
        .collect();
    assert_eq!(names, [json!("limited"), json!("rs")]);
    assert!(
        v["workflows"][1]["version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // Create, and create again: the same instance, nothing started twice.
    let (code, v) = create(&s, "rs", "b1", json!({"scenario": "basic"}));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["id"], "b1");
    let done = s.wait_status("rs", "b1", "complete");
    assert_eq!(
        done["output"],
        json!({"a": 20, "b": 42, "greeting": "hello b1"})
    );
    let steps = done["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(
        steps[1],
        json!({"name": "b", "count": 1, "attempts": 1, "status": "complete",
        "startedMs": steps[1]["startedMs"], "endedMs": steps[1]["endedMs"], "output": 42})
    );
    let (code, again) = create(&s, "rs", "b1", json!({"scenario": "basic"}));
    assert_eq!((code, again["status"].clone()), (200, json!("complete")));
    let (code, v) = create(&s, "limited", "b1", json!(null));
    assert_eq!(code, 409, "an id belongs to one workflow: {v}");

    // Errors.
    let err = |r: (u16, Value)| (r.0, r.1["error"]["code"].as_str().unwrap_or("").to_owned());
    assert_eq!(
        err(create(&s, "nope", "x", json!(1))),
        (404, "not_found".into())
    );
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances", "{oops")),
        (400, "invalid_json".into())
    );
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances", r#"{"id":"bad id!"}"#)),
        (400, "bad_request".into())
    );
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances", r#"{"idd":"x"}"#)),
        (400, "bad_request".into())
    );
    let big = json!({"params": "x".repeat(1 << 20)}).to_string();
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances", &big)),
        (413, "payload_too_large".into())
    );
    assert_eq!(
        err(s.get("/v1/workflows/rs/instances/nope")),
        (404, "not_found".into())
    );
    assert_eq!(
        err(s.get("/v1/workflows/limited/instances/b1")),
        (404, "not_found".into())
    );
    assert_eq!(
        err(s.patch(
            "/v1/workflows/rs/instances/b1/status",
            r#"{"status":"resume"}"#
        )),
        (409, "conflict".into())
    );
    assert_eq!(
        err(s.patch(
            "/v1/workflows/rs/instances/b1/status",
            r#"{"status":"fly"}"#
        )),
        (400, "bad_request".into())
    );
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances/b1/events/t", "1")),
        (409, "conflict".into())
    );
    assert_eq!(
        err(s.post("/v1/workflows/rs/instances/nope/events/t", "1")),
        (404, "not_found".into())
    );
    assert_eq!(err(s.get("/v2/nothing")), (404, "not_found".into()));

    // Events.
    create(&s, "rs", "ev", json!({"scenario": "events"}));
    s.wait_status("rs", "ev", "waiting");
    assert_eq!(
        s.post(
            "/v1/workflows/rs/instances/ev/events/first",
            r#"{"by":"api"}"#
        )
        .0,
        202
    );
    assert_eq!(
        s.post("/v1/workflows/rs/instances/ev/events/second", "[3]")
            .0,
        202
    );
    let v = s.wait_status("rs", "ev", "complete");
    assert_eq!(
        v["output"],
        json!({"first": "api", "second": [3], "type": "first"})
    );

    // Batch and pagination.
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("p{i}"), "params": {"scenario": "basic"}}))
        .collect();
    let (code, v) = s.post(
        "/v1/workflows/rs/instances/batch",
        &Value::Array(batch).to_string(),
    );
    assert_eq!((code, v["instances"].as_array().unwrap().len()), (200, 3));
    let too_many: Vec<Value> = (0..101).map(|_| json!({})).collect();
    assert_eq!(
        err(s.post(
            "/v1/workflows/rs/instances/batch",
            &Value::Array(too_many).to_string()
        ))
        .0,
        400
    );
    for i in 0..3 {
        s.wait_status("rs", &format!("p{i}"), "complete");
    }
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let (code, page) = s.get(&format!(
            "/v1/workflows/rs/instances?status=complete&limit=2{cursor}"
        ));
        assert_eq!(code, 200);
        ids.extend(
            page["instances"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        match page["cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids, ["b1", "ev", "p0", "p1", "p2"]);
    // By id prefix, as the UI searches.
    let (code, page) = s.get("/v1/instances?prefix=p&limit=2");
    assert_eq!(code, 200, "{page}");
    let ids: Vec<_> = page["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        (ids, page["cursor"].as_str()),
        (vec!["p0".to_owned(), "p1".to_owned()], Some("p1"))
    );
    assert_eq!(
        err(s.get("/v1/workflows/rs/instances?status=sleepy")).0,
        400
    );

    // Delete.
    assert_eq!(s.delete("/v1/workflows/rs/instances/p0").0, 204);
    assert_eq!(s.get("/v1/workflows/rs/instances/p0").0, 404);
    assert_eq!(s.delete("/v1/workflows/rs/instances/p0").0, 404);
    s.run.kill9();
}

#[test]
fn pause_resume_terminate_and_restart() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &[]);
    // Pause a sleeping instance; it stays paused past its wake time.
    create(&s, "rs", "nap", json!({"scenario": "sleep", "ms": 800}));
    s.wait_instance("rs", "nap", "sleeping", |v| {
        v["steps"].as_array().is_some_and(|a| !a.is_empty())
    });
    let (code, v) = s.patch(
        "/v1/workflows/rs/instances/nap/status",
        r#"{"status":"pause"}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["status"], "paused", "pause answers the new status: {v}");
    s.wait_status("rs", "nap", "paused");
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(
        s.get("/v1/workflows/rs/instances/nap").1["status"],
        "paused"
    );
    assert_eq!(
        s.patch(
            "/v1/workflows/rs/instances/nap/status",
            r#"{"status":"pause"}"#
        )
        .0,
        409
    );
    let (code, v) = s.patch(
        "/v1/workflows/rs/instances/nap/status",
        r#"{"status":"resume"}"#,
    );
    assert_eq!(code, 200, "{v}");
    assert!(
        v["status"] == "queued" || v["status"] == "running",
        "resume answers the status after resuming: {v}"
    );
    let v = s.wait_status("rs", "nap", "complete");
    assert_eq!(v["output"], json!({"before": 1, "after": 2}));

    // Terminate a waiting instance; events to it are refused afterwards.
    create(&s, "rs", "t", json!({"scenario": "events"}));
    s.wait_status("rs", "t", "waiting");
    assert_eq!(
        s.patch(
            "/v1/workflows/rs/instances/t/status",
            r#"{"status":"terminate"}"#
        )
        .0,
        200
    );
    assert_eq!(
        s.get("/v1/workflows/rs/instances/t").1["status"],
        "terminated"
    );
    assert_eq!(
        s.post("/v1/workflows/rs/instances/t/events/first", "1").0,
        409
    );
    assert_eq!(
        s.patch(
            "/v1/workflows/rs/instances/t/status",
            r#"{"status":"terminate"}"#
        )
        .0,
        409
    );

    // Restart a completed instance from step "b": "a" is kept, not re-run.
    create(&s, "rs", "rb", json!({"scenario": "basic"}));
    let before = s.wait_status("rs", "rb", "complete");
    let a_start = before["steps"][0]["startedMs"].clone();
    let (code, v) = s.patch(
        "/v1/workflows/rs/instances/rb/status",
        r#"{"status":"restart","from":{"name":"b"}}"#,
    );
    assert_eq!(code, 200, "{v}");
    let after = s.wait_status("rs", "rb", "complete");
    assert_eq!(after["output"], before["output"]);
    assert_eq!(
        after["steps"][0]["startedMs"], a_start,
        "the journal before `b` was kept"
    );
    let (code, _) = s.patch(
        "/v1/workflows/rs/instances/rb/status",
        r#"{"status":"restart","from":{"name":"zzz"}}"#,
    );
    assert_eq!(code, 400);
    // Occurrences count from 1.
    let (code, v) = s.patch(
        "/v1/workflows/rs/instances/rb/status",
        r#"{"status":"restart","from":{"name":"b","count":0}}"#,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("from 1"),
        "{v}"
    );
    // A restart from the beginning runs everything again.
    assert_eq!(
        s.patch(
            "/v1/workflows/rs/instances/rb/status",
            r#"{"status":"restart"}"#
        )
        .0,
        200
    );
    let again = s.wait_status("rs", "rb", "complete");
    assert_ne!(again["steps"][0]["startedMs"], a_start);
    s.run.kill9();
}

#[test]
fn a_concurrency_limit_queues_working_instances_not_waiting_ones() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &[]);
    // Each instance works 300 ms in a step, sleeps 2 s, then runs a step.
    for i in 0..3 {
        create(
            &s,
            "limited",
            &format!("q{i}"),
            json!({"scenario": "slow-step-sleep", "ms": 300}),
        );
    }
    let mut work = Vec::new();
    let mut sleeps = Vec::new();
    for i in 0..3 {
        let v = s.wait_status("limited", &format!("q{i}"), "complete");
        let steps = v["steps"].as_array().unwrap();
        work.push((u(&steps[0]["startedMs"]), u(&steps[0]["endedMs"])));
        sleeps.push((u(&steps[0]["endedMs"]), u(&steps[1]["startedMs"])));
    }
    work.sort();
    for pair in work.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "limit 1: working instances must not overlap: {work:?}"
        );
    }
    // A sleeping instance does not count against the limit: the next one
    // works while it sleeps, so the three 2 s sleeps overlap.
    sleeps.sort();
    assert!(
        sleeps[2].0 < sleeps[0].1,
        "waiting instances must not hold the limit: {sleeps:?}"
    );
    s.run.kill9();
}

#[test]
fn killing_the_server_loses_nothing() {
    let w = Weft::new();
    let s = w.serve("serve-1", &rust_only(), &[]);
    create(
        &s,
        "rs",
        "sleeping",
        json!({"scenario": "sleep", "ms": 1500}),
    );
    create(&s, "rs", "waiting", json!({"scenario": "events"}));
    create(
        &s,
        "rs",
        "running",
        json!({"scenario": "long", "n": 20, "ms": 50}),
    );
    s.wait_status("rs", "waiting", "waiting");
    s.wait_instance("rs", "running", "half done", |v| {
        v["steps"].as_array().is_some_and(|a| a.len() >= 5)
    });
    let mut logs = vec![s.run.kill9()];
    let s = w.serve_config("serve-2", s.config, &[]);
    assert!(
        s.run
            .stderr_text()
            .contains("Resumed 3 unfinished instances"),
        "{}",
        s.run.stderr_text()
    );
    s.post("/v1/workflows/rs/instances/waiting/events/second", "2");
    s.post(
        "/v1/workflows/rs/instances/waiting/events/first",
        r#"{"by":"after restart"}"#,
    );
    assert_eq!(
        s.wait_status("rs", "sleeping", "complete")["output"],
        json!({"before": 1, "after": 2})
    );
    assert_eq!(
        s.wait_status("rs", "waiting", "complete")["output"]["first"],
        "after restart"
    );
    let running = s.wait_status("rs", "running", "complete");
    assert_eq!(running["steps"].as_array().unwrap().len(), 20);
    assert!(
        running["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["attempts"] == 1)
    );
    logs.push(s.run.kill9());
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for l in &logs {
        for e in l.lines().filter(|l| l.contains("EXEC work-")) {
            *counts.entry(e.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 20);
    assert!(
        counts.values().map(|c| c - 1).sum::<u32>() <= 1,
        "only the step in flight re-ran: {counts:?}"
    );
}

#[test]
fn the_cli_talks_to_the_server_holding_the_data_dir() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &[]);
    let d = w.exec(&[
        "create",
        "rs",
        "--id",
        "c1",
        "--params",
        r#"{"scenario":"sleep","ms":1000}"#,
    ]);
    assert!(d.ok(), "{}", d.stderr);
    assert!(d.stdout.starts_with("c1  rs  "), "{}", d.stdout);
    s.wait_instance("rs", "c1", "sleeping", |v| {
        v["steps"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(w.exec(&["pause", "c1"]).ok());
    s.wait_status("rs", "c1", "paused");
    let d = w.exec(&["resume", "c1", "--json"]);
    assert!(d.ok(), "{}", d.stderr);
    s.wait_status("rs", "c1", "complete");
    let d = w.exec(&["resume", "c1"]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("only a paused instance can be resumed"),
        "{}",
        d.stderr
    );
    assert!(w.exec(&["restart", "c1", "--from", "after"]).ok());
    s.wait_status("rs", "c1", "complete");
    w.exec(&[
        "create",
        "rs",
        "--id",
        "c2",
        "--params",
        r#"{"scenario":"events"}"#,
    ]);
    s.wait_status("rs", "c2", "waiting");
    assert!(
        w.exec(&["send-event", "c2", "first", r#"{"by":"cli"}"#])
            .ok()
    );
    assert!(w.exec(&["terminate", "c2"]).ok());
    assert_eq!(w.status("c2")["status"], "terminated");
    let list = w.exec(&["list"]);
    assert!(
        list.stdout.contains("c1") && list.stdout.contains("terminated"),
        "{}",
        list.stdout
    );
    s.run.kill9();
    let d = w.exec(&["pause", "c1"]);
    assert_eq!(d.code, Some(1), "no server any more: {}", d.stderr);
}

#[test]
fn child_workflows_across_languages() {
    let py = py_component("scenarios", None);
    let w = Weft::new();
    let toml = format!(
        "[workflows.rs]\ncomponent = {SCENARIOS:?}\n\n[workflows.py]\ncomponent = {py:?}\n"
    );
    let s = w.serve("serve", &toml, &[]);
    create(
        &s,
        "rs",
        "rs-parent",
        json!({"scenario": "parent", "child": "py"}),
    );
    create(
        &s,
        "py",
        "py-parent",
        json!({"scenario": "parent", "child": "rs"}),
    );
    let a = s.wait_status("rs", "rs-parent", "complete");
    let b = s.wait_status("py", "py-parent", "complete");
    assert_eq!(a["output"]["child"]["a"], 20);
    assert_eq!(
        a["output"]["child"]["greeting"].as_str().unwrap(),
        format!("hello {}", child_of(&w, "rs-parent", 0))
    );
    assert_eq!(
        a["output"]["error"],
        json!(["ValueError", "order 42 has no items"])
    );
    assert_eq!(b["output"]["child"]["b"], 42);
    assert_eq!(
        b["output"]["error"],
        json!(["InvalidOrder", "order 42 has no items"])
    );
    // Each child exists once, with its parent recorded in the journal.
    let h = w.history("rs-parent");
    let starts = entries(&h, "childStart");
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0]["workflow"], "py");
    let (code, child) = s.get(&format!(
        "/v1/instances/{}",
        starts[0]["childId"].as_str().unwrap()
    ));
    assert_eq!((code, child["workflow"].clone()), (200, json!("py")));
    // An unknown child workflow is an error the parent can catch.
    create(
        &s,
        "rs",
        "orphan",
        json!({"scenario": "parent", "child": "nope"}),
    );
    let v = s.wait_status("rs", "orphan", "errored");
    assert_eq!(v["error"]["name"], "ChildWorkflowNotFound");
    s.run.kill9();
}

fn child_of(w: &Weft, parent: &str, i: usize) -> String {
    let h = w.history(parent);
    entries(&h, "childStart")[i]["childId"]
        .as_str()
        .unwrap()
        .to_owned()
}
