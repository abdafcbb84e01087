//! Python workflows built with `weft build` (componentize-py) and run by
//! `weft run`, next to Rust workflows in the same data dir.

use std::collections::BTreeMap;

use crate::common::python::py_component;
use crate::common::*;
use serde_json::json;

fn scenarios() -> String {
    py_component("scenarios", None)
}

fn run_py(w: &Weft, id: &str, input: &str, extra: &[&str]) -> Done {
    let c = scenarios();
    let mut args = vec!["run", c.as_str(), "--id", id, "--input", input];
    args.extend_from_slice(extra);
    w.exec(&args)
}

#[test]
fn rust_and_python_run_side_by_side_with_the_same_output() {
    let w = Weft::new();
    let py = run_py(&w, "same-id", r#"{"scenario":"basic"}"#, &[]).json();
    let rs = w
        .scenario("same-id-rs", r#"{"scenario":"basic"}"#, &[])
        .json();
    assert_eq!(py, json!({"a": 20, "b": 42, "greeting": "hello same-id"}));
    assert_eq!(rs["a"], py["a"]);
    assert_eq!(rs["b"], py["b"]);
    let list = w.exec(&["list", "--json"]);
    assert_eq!(list.stdout.lines().count(), 2);
    let fields = run_py(&w, "fields", r#"{"scenario":"event_fields","x":[1]}"#, &[]).json();
    assert_eq!(
        fields,
        json!({"payload": {"scenario": "event_fields", "x": [1]}, "instanceId": "fields",
               "workflowName": fields["workflowName"], "timestampIsUtc": true})
    );
    assert!(
        fields["workflowName"]
            .as_str()
            .unwrap()
            .contains("scenarios")
    );
}

#[test]
fn dag_dependencies_resolve_concurrently_and_are_reused() {
    let w = Weft::new();
    let d = run_py(&w, "dag", r#"{"scenario":"dag"}"#, &[]);
    assert_eq!(
        d.json(),
        json!({"summary": {"user": 7, "orders": 3, "step": "summary"}, "doubled": 14})
    );
    assert_eq!(
        d.stderr.matches("EXEC fetch_user").count(),
        1,
        "{}",
        d.stderr
    );
    assert_eq!(d.stderr.matches("EXEC fetch_orders").count(), 1);
    let h = w.history("dag");
    let (u, o) = (
        steps_named(&h, "fetch_user")[0],
        steps_named(&h, "fetch_orders")[0],
    );
    assert_eq!(
        steps_named(&h, "fetch_user").len(),
        1,
        "a completed dependency is not run again"
    );
    // concurrent=True: both dependencies ran at the same time.
    assert!(
        u64v(&o["startedMs"]) < u64v(&u["endedMs"]) && u64v(&u["startedMs"]) < u64v(&o["endedMs"])
    );
}

fn u64v(v: &serde_json::Value) -> u64 {
    u(v)
}

#[test]
fn retries_follow_the_config_and_ctx_sees_the_attempt() {
    let w = Weft::new();
    let out = run_py(&w, "r", r#"{"scenario":"retries"}"#, &[]).json();
    assert_eq!(out, json!({"attempt": 3, "config": "constant"}));
    let h = w.history("r");
    let s = steps_named(&h, "flaky");
    assert_eq!(s.len(), 3);
    for e in &s[..2] {
        assert_eq!(e["error"]["name"], "ValueError");
        assert_eq!(u(&e["retryMs"]) - u(&e["endedMs"]), 50);
    }
}

#[test]
fn exceptions_keep_their_type_after_retries() {
    let w = Weft::new();
    let out = run_py(&w, "ex", r#"{"scenario":"exhausted"}"#, &[]).json();
    assert_eq!(
        out,
        json!({"builtin": ["ValueError", "bad value"], "custom": ["PaymentDeclined", "card 4242 declined"]})
    );
    assert_eq!(steps_named(&w.history("ex"), "doomed").len(), 2);
}

#[test]
fn non_retryable_error_and_non_json_results() {
    let w = Weft::new();
    let out = run_py(&w, "nr", r#"{"scenario":"non_retryable"}"#, &[]).json();
    assert_eq!(
        out,
        json!({"caught": "NonRetryableError", "message": "card declined"})
    );
    assert_eq!(steps_named(&w.history("nr"), "card").len(), 1);
    let out = run_py(&w, "bad", r#"{"scenario":"bad_return"}"#, &[]).json();
    let msg = out["message"].as_str().unwrap();
    assert!(msg.contains("'tuple_set'") && msg.contains("set"), "{msg}");
}

#[test]
fn durable_sleeps_survive_eviction() {
    let w = Weft::new();
    let d = run_py(
        &w,
        "nap",
        r#"{"scenario":"sleep","duration":"1 second"}"#,
        &["--evict-after", "200ms"],
    );
    assert_eq!(d.json(), json!({"before": 1, "after": 2}));
    assert!(
        d.stderr.contains("Evicted") && d.stderr.contains("Replaying"),
        "{}",
        d.stderr
    );
    let h = w.history("nap");
    let sleeps = entries(&h, "sleep");
    assert_eq!(u(&sleeps[0]["wakeMs"]) - u(&sleeps[0]["startedMs"]), 1000);
    assert_eq!(sleeps[1]["name"], "until");
    // `after` took `before` as a dependency once `before` was replayed:
    // from the journal, not by beginning it again.
    assert_eq!(steps_named(&h, "before").len(), 1);
}

#[test]
fn events_are_buffered_and_timeouts_are_catchable() {
    let w = Weft::new();
    let c = scenarios();
    let mut run = w.spawn(
        "run",
        &[
            "run",
            &c,
            "--id",
            "ev",
            "--input",
            r#"{"scenario":"events"}"#,
        ],
    );
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    assert!(
        w.exec(&["send-event", "ev", "first", r#"{"by":"ann"}"#])
            .ok()
    );
    assert!(w.exec(&["send-event", "ev", "second", "[1,2]"]).ok());
    let out = run.finish().json();
    assert_eq!(
        out,
        json!({"first": "ann", "second": [1, 2], "type": "first", "hasTimestamp": true})
    );

    let out = run_py(&w, "et", r#"{"scenario":"event_timeout"}"#, &[]).json();
    assert_eq!(out, json!({"timedOut": true, "error": "WaitTimeoutError"}));
}

#[test]
fn gather_runs_steps_sleeps_and_waits_concurrently() {
    let w = Weft::new();
    let c = scenarios();
    let mut run = w.spawn(
        "run",
        &[
            "run",
            &c,
            "--id",
            "g",
            "--input",
            r#"{"scenario":"gather"}"#,
        ],
    );
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `go`"));
    assert!(w.exec(&["send-event", "g", "go", "true"]).ok());
    assert_eq!(
        run.finish().json(),
        json!({"a": "L", "b": "R", "event": true})
    );
    let h = w.history("g");
    let (l, r) = (steps_named(&h, "left")[0], steps_named(&h, "right")[0]);
    // Two steps that each wait one second overlapped: together about 1 s.
    assert!(u(&r["startedMs"]) < u(&l["endedMs"]) && u(&l["startedMs"]) < u(&r["endedMs"]));
    assert!(u(&l["endedMs"]) - u(&l["startedMs"]) >= 1000);
}

#[test]
fn rollback_runs_undos_in_reverse_order_as_steps() {
    let w = Weft::new();
    let d = run_py(&w, "rb", r#"{"scenario":"rollback"}"#, &[]);
    // Each undo's result comes back (newest first); `release` returns None.
    assert_eq!(
        d.json(),
        json!({"rolledBack": true, "reason": "no courier",
               "undone": {"charge": {"refund": "rf-100"}, "reserve": null}})
    );
    let charge = d.stderr.find("UNDO charge 100").expect("charge undone");
    let reserve = d
        .stderr
        .find("UNDO reserve 12A because no courier")
        .expect("reserve undone");
    assert!(charge < reserve, "newest first:\n{}", d.stderr);
    let h = w.history("rb");
    let names: Vec<_> = entries(&h, "step")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["reserve", "charge", "ship", "charge:undo", "reserve:undo"]
    );
    // The undo's result is journaled, not `null`.
    let undo = entries(&h, "step")
        .into_iter()
        .find(|s| s["name"] == "charge:undo")
        .unwrap();
    assert_eq!(undo["value"], json!({"refund": "rf-100"}), "{undo}");
}

#[test]
fn clock_and_random_replay_the_same_values() {
    let w = Weft::new();
    let d = run_py(
        &w,
        "nd",
        r#"{"scenario":"nondet","seconds":1}"#,
        &["--evict-after", "100ms"],
    );
    let out = d.json();
    assert!(d.stderr.contains("Replaying"), "{}", d.stderr);
    let h = w.history("nd");
    let sleep = entries(&h, "sleep")[0];
    let r = out["random"].as_f64().unwrap();
    assert_eq!(
        sleep["name"],
        format!("nap-{}", (r * 1000.0) as u64),
        "replay saw the same random value"
    );
    let now_ms = (out["now"].as_f64().unwrap() * 1000.0) as u64;
    assert!(
        now_ms <= u(&sleep["startedMs"]),
        "time.time() replayed the value read before the sleep"
    );
}

#[test]
fn kill_9_of_a_python_workflow_reruns_only_in_flight_steps() {
    const INPUT: &str = r#"{"scenario":"long","n":12,"ms":60}"#;
    let reference = Weft::new();
    let expected = run_py(&reference, "ref", INPUT, &[]).json();
    let w = Weft::new();
    let c = scenarios();
    let completed = |t: &str| t.lines().filter(|l| l.contains("Step work-")).count();
    let mut logs = Vec::new();
    let mut run = w.spawn("r0", &["run", &c, "--id", "long", "--input", INPUT]);
    run.wait_stderr("3 steps", |t| completed(t) >= 3);
    logs.push(run.kill9());
    let mut run = w.spawn("r1", &["resume", "long"]);
    run.wait_stderr("4 more steps", |t| completed(t) >= 4);
    logs.push(run.kill9());
    let last = w.spawn("r2", &["resume", "long"]).finish();
    assert_eq!(last.json(), expected);
    logs.push(last.stderr.clone());
    let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
    for log in &logs {
        for n in log
            .lines()
            .filter_map(|l| Some(l.split_once("EXEC work-")?.1))
        {
            *counts.entry(n.trim().parse().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|c| (1..=2).contains(c)), "{counts:?}");
    assert!(
        counts.values().map(|c| c - 1).sum::<u32>() <= 2,
        "{counts:?}"
    );
    assert!(logs[0].contains("BODY-START"));
    assert!(!logs[1].contains("BODY-START") && !logs[2].contains("BODY-START"));
    assert_eq!(entries(&w.history("long"), "step").len(), 12);
}

#[test]
fn a_python_workflow_error_ends_the_instance_errored() {
    let w = Weft::new();
    let d = run_py(&w, "f", r#"{"scenario":"fail"}"#, &[]);
    assert_eq!(d.code, Some(1));
    let s = w.status("f");
    assert_eq!(s["error"]["name"], "ValueError");
    assert_eq!(s["error"]["message"], "order 42 has no items");
}

/// An exception outside any step ends the instance with its traceback,
/// trimmed to the workflow's code, in `status`, and printed by `weft run`;
/// a `KeyError`'s key is shown once, not quoted twice.
#[test]
fn an_error_outside_any_step_keeps_its_traceback() {
    let w = Weft::new();
    let d = run_py(&w, "bug", r#"{"scenario":"bug_outside"}"#, &[]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("errored: KeyError: missing sku"),
        "{}",
        d.stderr
    );
    let e = &w.status("bug")["error"];
    assert_eq!(e["name"], "KeyError");
    assert_eq!(e["message"], "missing sku");
    let tb = e["traceback"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceback: {e}"));
    assert!(tb.starts_with("Traceback (most recent call last):"), "{tb}");
    assert!(tb.contains("scenarios.py\", line"), "{tb}");
    assert!(
        tb.contains("in s_bug_outside") && tb.contains("in price_of"),
        "{tb}"
    );
    assert!(tb.trim_end().ends_with("KeyError: 'missing sku'"), "{tb}");
    assert!(
        !tb.contains("weft/_entry.py") && !tb.contains("asyncio"),
        "trimmed: {tb}"
    );
    assert!(
        d.stderr.contains("in price_of"),
        "weft run prints it: {}",
        d.stderr
    );
}

#[test]
fn cloudflare_dag_example_runs_unchanged() {
    let w = Weft::new();
    let c = py_component("cloudflare_dag", None);
    let d = w.exec(&["run", &c]);
    assert_eq!(d.json(), json!("dep1 dep2"));
    assert!(d.stderr.contains("executing dep1") && d.stderr.contains("executing dep2"));
}

/// Cloudflare's two `depends` modes: with `depends=`, results go by
/// position to the parameters other than `ctx` (however they are named),
/// and a count that does not match raises `TypeError`; without it, each
/// parameter names a step function, and any other raises `TypeError`.
#[test]
fn depends_binds_by_position_and_names_bind_implicitly_as_on_cloudflare() {
    let w = Weft::new();
    let v = run_py(&w, "dm", r#"{"scenario":"depends_modes"}"#, &[]).json();
    assert_eq!(v["positional"], "one+two");
    assert_eq!(v["ctx"], "two@positional-ctx");
    assert_eq!(v["implicit"], "one|two");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("declares 2 non-ctx parameter(s) but 'depends' has 1 item(s)"),
        "{v}"
    );
    assert!(
        errors[1]
            .as_str()
            .unwrap()
            .contains("unexpected parameter 'other'"),
        "{v}"
    );
    // The refused steps never ran: no journal entry under their names.
    let h = w.history("dm");
    let names: Vec<&str> = entries(&h, "step")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        !names.contains(&"miscounted") && !names.contains(&"unexpected"),
        "{names:?}"
    );
}

#[test]
fn build_needs_class_for_a_module_with_several_workflows() {
    let root = repo_root();
    let multi = root.join("tests/guests-py/multi.py");
    let w = Weft::new();
    let out = w.dir.path().join("multi.wasm");
    let d = w.exec(&[
        "build",
        multi.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr
            .contains("several workflows (First, Second); choose one with --class"),
        "{}",
        d.stderr
    );
    let c = py_component("multi", Some("Second"));
    assert_eq!(w.exec(&["run", &c]).json(), json!("second"));
}

#[test]
fn build_says_how_to_install_a_missing_tool() {
    let w = Weft::new();
    // A PATH with python3 but without componentize-py.
    let bin = w.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let python = String::from_utf8(
        std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::os::unix::fs::symlink(python.trim(), bin.join("python3")).unwrap();
    let app = repo_root().join("examples/hello-python/app.py");
    let d = w
        .cmd(&["build", app.to_str().unwrap(), "-o", "/dev/null"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&d.stderr);
    assert!(!d.status.success());
    assert!(
        err.contains("`componentize-py` is not installed")
            && err.contains("pip install componentize-py"),
        "{err}"
    );
}

#[test]
fn the_sdk_and_examples_type_check_with_mypy_strict() {
    let root = repo_root();
    let stubs = tempfile::tempdir().unwrap();
    let o = std::process::Command::new("componentize-py")
        .args(["-d"])
        .arg(root.join("guest-sdk-python/src/weft/wit"))
        .args(["-w", "weft:workflow/python-workflow", "bindings"])
        .arg(stubs.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new("python3")
        .args([
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--config-file",
        ])
        .arg(root.join("guest-sdk-python/pyproject.toml"))
        .arg(root.join("guest-sdk-python/src/weft"))
        .arg(root.join("guest-sdk-python/src/workers"))
        .arg(root.join("examples/hello-python/app.py"))
        .env(
            "MYPYPATH",
            format!(
                "{}:{}",
                stubs.path().display(),
                root.join("guest-sdk-python/src").display()
            ),
        )
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mypy --strict failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn the_python_sdk_ships_the_same_wit_as_the_host() {
    let root = repo_root();
    for file in ["workflow.wit", "workflow-shared.wit"] {
        assert_eq!(
            std::fs::read_to_string(root.join("wit").join(file)).unwrap(),
            std::fs::read_to_string(root.join("guest-sdk-python/src/weft/wit").join(file)).unwrap(),
            "copy wit/{file} to guest-sdk-python/src/weft/wit/"
        );
    }
}

#[test]
fn the_hello_python_example_runs() {
    let w = Weft::new();
    let out = w.dir.path().join("hello.wasm");
    let app = repo_root().join("examples/hello-python/app.py");
    let b = w.exec(&["build", app.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert!(b.ok(), "{}", b.stderr);
    let d = w.exec(&[
        "run",
        out.to_str().unwrap(),
        "--input",
        r#"{"name":"world"}"#,
    ]);
    assert_eq!(
        d.json(),
        json!({"greeting": "Hello, world!", "letters": 10})
    );
}

/// componentize-py does not build the same bytes twice, so `weft build`
/// keeps a component whose inputs are unchanged (and a server restarted
/// with the same sources deploys no new version); a changed source is
/// built again.
#[test]
fn an_unchanged_python_build_keeps_its_component() {
    let w = Weft::new();
    let src = w.dir.path().join("app");
    std::fs::create_dir_all(&src).unwrap();
    let app = src.join("app.py");
    std::fs::copy(repo_root().join("examples/hello-python/app.py"), &app).unwrap();
    let out = w.dir.path().join("app.wasm");
    let build = || {
        let d = w.exec(&["build", app.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert!(d.ok(), "{}", d.stderr);
        assert!(
            !d.stdout.contains("Component built"),
            "tool output on stdout: {}",
            d.stdout
        );
        (d.stderr, std::fs::read(&out).unwrap())
    };
    let (_, first) = build();
    let (log, second) = build();
    assert!(log.contains("Fresh"), "{log}");
    assert!(first == second, "the component was kept");
    // A changed source is built again.
    let text = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, format!("{text}\n# changed\n")).unwrap();
    let (log, _) = build();
    assert!(log.contains("Built") && !log.contains("Fresh"), "{log}");
}

/// A Python memory bomb ends as `MemoryLimitExceeded` with the limit, as in
/// Rust, not as an empty `MemoryError`: in the workflow body it ends the
/// instance, in a step it fails the step (which the workflow can catch).
#[test]
fn a_python_memory_bomb_names_the_limit() {
    let w = Weft::new();
    let d = run_py(
        &w,
        "body",
        r#"{"scenario":"memory-bomb-body"}"#,
        &["--memory-mb", "160"],
    );
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    let s = w.status("body");
    assert_eq!(s["error"]["name"], "MemoryLimitExceeded", "{s}");
    assert!(
        s["error"]["message"].as_str().unwrap().contains("160 MiB"),
        "{s}"
    );
    let d = run_py(
        &w,
        "step",
        r#"{"scenario":"memory-bomb-step"}"#,
        &["--memory-mb", "160"],
    );
    let v = d.json();
    assert_eq!(v["caught"], "MemoryLimitExceeded", "{v}");
}
