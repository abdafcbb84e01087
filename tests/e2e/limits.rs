//! CPU limits count CPU: a step is charged the CPU time its body spends,
//! not the time it waits, and a limit (like a trap) fails the attempt of
//! the step that caused it, not its siblings in flight. In Rust, Python
//! and JavaScript.

use serde_json::json;

use crate::common::js::js_component;
use crate::common::python::py_component;
use crate::common::*;
use crate::sandbox::counting_server;

/// Under `--step-cpu-ms 300`, a step that waits 1.5 s on a slow loopback
/// server completes on its first attempt, while a busy loop beside it
/// fails twice with `CpuLimitExceeded`, each attempt charged to it alone.
#[test]
fn a_step_is_charged_its_cpu_not_its_waiting() {
    let w = Weft::new();
    let py = py_component("scenarios", None);
    let js = js_component("scenarios.js", Some("Scenarios"));
    for (id, component) in [("rs", SCENARIOS), ("py", py.as_str()), ("js", js.as_str())] {
        let (url, count) = counting_server(1500);
        let input = json!({"scenario": "step-cpu", "url": url}).to_string();
        let d = w.exec(&[
            "run",
            component,
            "--id",
            id,
            "--input",
            &input,
            "--allow-host",
            "127.0.0.1",
            "--step-cpu-ms",
            "300",
        ]);
        let out = d.json();
        assert_eq!(out["waited"], 200, "{id}: {out}");
        assert_eq!(out["spun"], "CpuLimitExceeded", "{id}: {out}");
        let message = out["message"].as_str().unwrap();
        assert!(
            message.contains("\"spin\"") && message.contains("300 ms of CPU"),
            "{id}: {message}"
        );
        let h = w.history(id);
        let spin = steps_named(&h, "spin");
        assert_eq!(spin.len(), 2, "{id}: {h:?}");
        assert!(
            spin.iter()
                .all(|s| s["error"]["name"] == "CpuLimitExceeded")
        );
        // The waiting step was restarted by the spinner's traps without
        // spending an attempt, and its last run waited 1.5 s, five times
        // the CPU limit.
        let wait = steps_named(&h, "wait-slow");
        assert_eq!(wait.len(), 1, "{id}: {h:?}");
        assert_eq!(wait[0]["attempt"], 1, "{id}: {h:?}");
        assert!(wait[0]["error"].is_null(), "{id}: {h:?}");
        assert!(count.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    }
}

/// The body's own limit (`--cpu-ms`) counts CPU too: a spinning workflow
/// body ends as `CpuLimitExceeded`.
#[test]
fn a_spinning_workflow_body_ends_at_its_cpu_limit() {
    let w = Weft::new();
    let d = w.scenario("spin", r#"{"scenario":"spin-body"}"#, &["--cpu-ms", "300"]);
    assert_eq!(d.code, Some(1));
    let e = &w.status("spin")["error"];
    assert_eq!(e["name"], "CpuLimitExceeded", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("300 ms of CPU"),
        "{e}"
    );
}

/// A Python interpreter crash (a trap, not an exception) in one of two
/// concurrent steps fails that step's attempts; the sibling completes on
/// its first attempt.
#[test]
fn a_python_crash_in_a_step_is_charged_to_that_step() {
    let w = Weft::new();
    let py = py_component("scenarios", None);
    let d = w.exec(&[
        "run",
        &py,
        "--id",
        "crash",
        "--input",
        r#"{"scenario":"crash-sibling"}"#,
    ]);
    let out = d.json();
    assert_eq!(out["sibling"], "fine", "{out}");
    assert_eq!(out["crash"], "WorkflowTrap", "{out}");
    let h = w.history("crash");
    let crash = steps_named(&h, "crash");
    assert_eq!(crash.len(), 2, "{h:?}");
    let sibling = steps_named(&h, "sibling");
    assert_eq!(sibling.len(), 1, "{h:?}");
    assert_eq!(sibling[0]["attempt"], 1, "{h:?}");
    assert!(sibling[0]["error"].is_null(), "{h:?}");
}
