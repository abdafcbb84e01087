//! JavaScript and TypeScript workflows built with `weft build`
//! (componentize-js), with Cloudflare's Workflows API: the order shape in
//! TypeScript, crashes and resumes checked by a loopback counter, a
//! non-determinism error, children across languages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use weft_test_artifacts::SCENARIOS;

use crate::common::js::{counter, js_component};
use crate::common::python::py_component;
use crate::common::*;

fn count(counts: &Arc<Mutex<BTreeMap<String, u32>>>, name: &str) -> u32 {
    counts.lock().unwrap().get(name).copied().unwrap_or(0)
}

fn order_input(counter: &str, within: Value) -> String {
    json!({
        "orderId": "o-42",
        "items": [{"sku": "tea", "qty": 2}, {"sku": "cup", "qty": 1}],
        "counter": counter,
        "approveWithin": within,
        "napMs": 100,
    })
    .to_string()
}

#[test]
fn a_typescript_order_ships_on_approval_and_rolls_back_on_timeout() {
    let order = js_component("order.ts", None);
    let (url, counts) = counter();
    let w = Weft::new();

    // Approved: retries, reservations at once, a sleep, the event.
    let input = order_input(&url, json!("1 minute"));
    let args = [
        "run",
        &order,
        "--id",
        "approved",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
    ];
    let mut run = w.spawn("approved", &args);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `approved`"));
    assert!(
        w.exec(&["send-event", "approved", "approved", r#"{"by":"ann"}"#])
            .ok()
    );
    let d = run.finish();
    let out = d.json();
    assert_eq!(out["status"], "shipped", "{}", d.stderr);
    assert_eq!(out["total"], 3);
    assert_eq!(out["by"], "ann");
    assert_eq!(out["payment"], json!({"charged": 30, "attempt": 2}));
    assert_eq!(
        out["reservations"],
        json!([{"sku": "tea", "id": "r-tea-2"}, {"sku": "cup", "id": "r-cup-1"}])
    );
    assert!(
        d.stderr
            .contains("Retry charge attempt 1 failed: Error: card network busy")
    );
    for (name, n) in [
        ("validate", 1),
        ("reserve-tea", 1),
        ("reserve-cup", 1),
        ("charge", 2),
        ("ship", 1),
        ("refund", 0),
    ] {
        assert_eq!(count(&counts, name), n, "{name}");
    }
    let h = w.history("approved");
    let (tea, cup) = (
        steps_named(&h, "reserve-tea")[0],
        steps_named(&h, "reserve-cup")[0],
    );
    assert!(
        u(&tea["startedMs"]) <= u(&cup["endedMs"]) && u(&cup["startedMs"]) <= u(&tea["endedMs"]),
        "Promise.all ran both reservations at once"
    );

    // No approval in time: rolled back by hand, newest first.
    let input = order_input(&url, json!(300));
    let d = w.exec(&[
        "run",
        &order,
        "--id",
        "timeout",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
    ]);
    assert_eq!(
        d.json(),
        json!({"status": "cancelled", "reason": "WaitTimeoutError", "released": ["r-cup-1", "r-tea-2"]}),
        "{}",
        d.stderr
    );
    assert_eq!(count(&counts, "refund"), 1);
    assert_eq!(count(&counts, "release-tea"), 1);
    assert_eq!(count(&counts, "ship"), 1, "not shipped");

    // NonRetryableError ends the step and the instance at once.
    let input = json!({"orderId": "empty", "items": [], "counter": url}).to_string();
    let d = w.exec(&[
        "run",
        &order,
        "--id",
        "empty",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
    ]);
    assert_eq!(d.code, Some(1));
    let s = w.status("empty");
    assert_eq!(s["status"], "errored");
    assert_eq!(s["error"]["name"], "NonRetryableError");
    assert_eq!(s["error"]["message"], "order empty has no items");
    assert!(
        s["error"]["traceback"]
            .as_str()
            .unwrap()
            .contains("NonRetryableError: order empty has no items\n"),
        "the JavaScript stack is kept: {s}"
    );
    assert_eq!(count(&counts, "validate"), 3, "validated once per order");
}

/// Kills `weft run` three times during a long JavaScript workflow and
/// resumes it: every completed step ran once, only a step in flight at a
/// kill may run again, and clocks and randomness read outside steps are
/// the same after each replay.
#[test]
fn kill_9_and_resume_never_run_a_completed_javascript_step_again() {
    let js = js_component("scenarios.js", Some("Scenarios"));
    let (url, counts) = counter();
    let w = Weft::new();
    let n = 12;
    let input = json!({"scenario": "long", "n": n, "ms": 60, "counter": url}).to_string();
    let completed = |t: &str| t.lines().filter(|l| l.contains("Step work-")).count();
    let args = [
        "run",
        &js,
        "--id",
        "long",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
    ];
    let mut run = w.spawn("run-0", &args);
    run.wait_stderr("3 steps", |t| completed(t) >= 3);
    run.kill9();
    for (i, more) in [3, 3].into_iter().enumerate() {
        let resume = ["resume", "long", "--allow-host", "127.0.0.1"];
        let mut run = w.spawn(&format!("run-{}", i + 1), &resume);
        run.wait_stderr("more steps", |t| completed(t) >= more);
        run.kill9();
    }
    let d = w
        .spawn(
            "run-final",
            &["resume", "long", "--allow-host", "127.0.0.1"],
        )
        .finish();
    let out = d.json();
    assert_eq!(
        out["sum"],
        (0..n).map(|i| i * i).sum::<u64>(),
        "{}",
        d.stderr
    );
    let mut reruns = 0;
    for i in 0..n {
        let c = count(&counts, &format!("work-{i}"));
        assert!((1..=2).contains(&c), "work-{i} ran {c} times");
        reruns += c - 1;
    }
    assert!(
        reruns <= 3,
        "at most the step in flight at each kill ran again"
    );
    // The first step journaled what the body read before it; each replay
    // read the same.
    assert_eq!(out["first"], json!([out["r"], out["t"]]), "{out}");
}

#[test]
fn changed_javascript_is_stopped_with_a_non_determinism_error() {
    let v1 = js_component("scenarios.js", Some("Scenarios"));
    let v2 = js_component("scenarios.js", Some("Changed"));
    let w = Weft::new();
    let args = [
        "run",
        &v1,
        "--id",
        "nd",
        "--input",
        r#"{"scenario":"events"}"#,
    ];
    let mut run = w.spawn("run", &args);
    run.wait_stderr("the first wait", |t| {
        t.contains("Waiting for event `first`")
    });
    assert!(w.exec(&["send-event", "nd", "first", "1"]).ok());
    run.wait_stderr("the second wait", |t| {
        t.contains("Waiting for event `second`")
    });
    run.kill9();
    let d = w.exec(&["resume", "nd", "--component", &v2]);
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    let s = w.status("nd");
    assert_eq!(s["error"]["name"], "NonDeterminismError");
    let msg = s["error"]["message"].as_str().unwrap();
    assert!(msg.contains(r#"wait-for-event "wait-second""#), "{msg}");
    assert!(msg.contains(r#"wait-for-event "wait-renamed""#), "{msg}");
}

#[test]
fn javascript_parents_and_children_across_languages() {
    let js = js_component("scenarios.js", Some("Scenarios"));
    let py = py_component("scenarios", None);
    let w = Weft::new();
    let toml = format!(
        "[workflows.js]\ncomponent = {js:?}\n\n[workflows.py]\ncomponent = {py:?}\n\n[workflows.rs]\ncomponent = {SCENARIOS:?}\n"
    );
    let s = w.serve("serve", &toml, &[]);
    let create = |wf: &str, id: &str, params: Value| {
        let body = json!({"id": id, "params": params}).to_string();
        let (code, _) = s.post(&format!("/v1/workflows/{wf}/instances"), &body);
        assert_eq!(code, 201, "create {id}");
    };
    create("js", "js-py", json!({"scenario": "parent", "child": "py"}));
    create("js", "js-rs", json!({"scenario": "parent", "child": "rs"}));
    create("rs", "rs-js", json!({"scenario": "parent", "child": "js"}));
    create("py", "py-js", json!({"scenario": "parent", "child": "js"}));
    let a = s.wait_status("js", "js-py", "complete");
    assert_eq!(a["output"]["child"]["b"], 42);
    assert_eq!(
        a["output"]["error"],
        json!(["ValueError", "order 42 has no items"])
    );
    let b = s.wait_status("js", "js-rs", "complete");
    assert_eq!(b["output"]["child"]["a"], 20);
    assert_eq!(
        b["output"]["error"],
        json!(["InvalidOrder", "order 42 has no items"])
    );
    for (wf, id) in [("rs", "rs-js"), ("py", "py-js")] {
        let c = s.wait_status(wf, id, "complete");
        assert_eq!(c["output"]["child"]["b"], 42, "{c}");
        let child = entries(&w.history(id), "childStart")[0]["childId"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            c["output"]["child"]["greeting"],
            json!(format!("hello {child}"))
        );
        assert_eq!(
            c["output"]["error"],
            json!(["InvalidOrder", "order 42 has no items"])
        );
    }
    s.run.kill9();
}

#[test]
fn javascript_races_and_refuses_io_outside_steps() {
    let js = js_component("scenarios.js", Some("Scenarios"));
    let w = Weft::new();
    let d = w.exec(&["run", &js, "--input", r#"{"scenario":"race"}"#]);
    assert_eq!(d.json(), json!({"winner": "sleep"}), "{}", d.stderr);
    let d = w.exec(&["run", &js, "--input", r#"{"scenario":"io_outside"}"#]);
    let out = d.json();
    assert_eq!(out["name"], "FetchNotInStep", "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("outside a step body"),
        "{out}"
    );
}

/// An instance of a JavaScript workflow moves to a new version whose replay
/// matches, and an upgrade to code that replays differently is refused.
#[test]
fn javascript_upgrades_are_checked_by_replay() {
    let versions = [
        js_component("scenarios.js", Some("Scenarios")),
        js_component("scenarios.js", Some("Compatible")),
        js_component("scenarios.js", Some("Changed")),
    ];
    let toml = |i: usize| format!("[workflows.js]\ncomponent = {:?}\n", versions[i]);
    let w = Weft::new();
    let s = w.serve("serve-1", &toml(0), &[]);
    let body = json!({"id": "ev", "params": {"scenario": "events"}}).to_string();
    assert_eq!(s.post("/v1/workflows/js/instances", &body).0, 201);
    s.wait_status("js", "ev", "waiting");
    s.post("/v1/workflows/js/instances/ev/events/first", r#""one""#);
    let v1 = s.wait_instance("js", "ev", "waiting on second", |v| {
        v["status"] == "waiting" && w.history("ev").iter().any(|e| e["name"] == "wait-second")
    })["version"]
        .clone();
    s.run.kill9();

    let s = w.serve("serve-2", &toml(1), &[]);
    let (code, up) = s.post("/v1/workflows/js/upgrade", r#"{"id":"ev"}"#);
    assert_eq!((code, up["upgraded"].clone()), (200, json!(["ev"])), "{up}");
    let v2 = s.get("/v1/workflows/js/instances/ev").1["version"].clone();
    assert_ne!(v2, v1);
    s.run.kill9();

    let s = w.serve("serve-3", &toml(2), &[]);
    let d = w.exec(&["upgrade", "js", "ev"]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("Refused") && d.stderr.contains("NonDeterminismError"),
        "{}",
        d.stderr
    );
    assert_eq!(s.wait_status("js", "ev", "waiting")["version"], v2);
    s.post("/v1/workflows/js/instances/ev/events/second", "2");
    let done = s.wait_status("js", "ev", "complete");
    assert_eq!(
        done["output"],
        json!({"first": "one", "second": 2, "type": "second"})
    );
    assert_eq!(done["version"], v2);
    s.run.kill9();
}

/// `weft build` says what is missing: Node.js, or a module it can build.
#[test]
fn building_javascript_without_node_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.ts");
    std::fs::write(&app, "export {};\n").unwrap();
    let weft = env!("CARGO_BIN_EXE_weft");
    let o = std::process::Command::new(weft)
        .arg("build")
        .arg(&app)
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("`node` is not installed") && err.contains("Node.js 20"),
        "{err}"
    );
    // A module with no workflow: the build script's own error.
    let d = Weft::new().exec(&["build", app.to_str().unwrap(), "-o", "/dev/null"]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("exports no WorkflowEntrypoint subclass"),
        "{}",
        d.stderr
    );
}

/// The same sources build the same component, byte for byte (so the same
/// version), from another directory (`/tmp`, which componentize-js alone
/// mishandles) and at another time.
#[test]
fn javascript_builds_are_reproducible() {
    let weft = env!("CARGO_BIN_EXE_weft");
    let source = repo_root().join("tests/guests-js/order.ts");
    let mut digests = Vec::new();
    let here = tempfile::tempdir().unwrap();
    // From the checkout, from /tmp, and to a relative output path.
    let builds = [
        (repo_root(), here.path().join("a.wasm")),
        (std::path::PathBuf::from("/tmp"), here.path().join("b.wasm")),
        (here.path().to_owned(), std::path::PathBuf::from("c.wasm")),
    ];
    for (cwd, out) in &builds {
        let o = std::process::Command::new(weft)
            .arg("build")
            .arg(&source)
            .arg("-o")
            .arg(out)
            .current_dir(cwd)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let bytes = std::fs::read(cwd.join(out)).unwrap();
        use sha2::Digest;
        digests.push(format!("{:x}", sha2::Sha256::digest(&bytes)));
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
}

/// The JavaScript SDK builds against copies of the WIT files (an npm
/// package carries its own); they must be the host's.
#[test]
fn the_javascript_sdk_carries_the_hosts_wit() {
    let root = repo_root();
    for f in ["workflow.wit", "workflow-sync.wit"] {
        assert_eq!(
            std::fs::read_to_string(root.join("wit").join(f)).unwrap(),
            std::fs::read_to_string(root.join("guest-sdk-js/wit").join(f)).unwrap(),
            "copy wit/{f} to guest-sdk-js/wit/"
        );
    }
}
