//! The semantics of DESIGN.md, driven through the `weft` binary with the
//! `scenarios` test guest.

use crate::common::*;
use serde_json::json;

#[test]
fn steps_run_in_order_and_are_journaled() {
    let w = Weft::new();
    let d = w.scenario("basic-1", r#"{"scenario":"basic"}"#, &[]);
    assert_eq!(
        d.json(),
        json!({"a": 20, "b": 42, "greeting": "hello basic-1"})
    );
    for name in ["a", "b", "greet"] {
        assert!(
            d.stderr.contains(&format!("Step {name} done")),
            "{}",
            d.stderr
        );
    }
    let h = w.history("basic-1");
    let steps = entries(&h, "step");
    let names: Vec<_> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "greet"]);
    assert!(
        steps
            .iter()
            .all(|s| s["result"] == "ok" && s["attempt"] == 1)
    );
    assert_eq!(steps[1]["value"], 42);
    let s = w.status("basic-1");
    assert_eq!(s["status"], "complete");
    assert_eq!(s["workflow"], "scenarios");
    assert_eq!(s["output"]["b"], 42);
    assert!(s["version"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn an_existing_id_is_continued_not_run_twice() {
    let w = Weft::new();
    let first = w.scenario("same", r#"{"scenario":"basic"}"#, &[]).json();
    let again = w.scenario("same", r#"{"scenario":"basic"}"#, &[]);
    assert_eq!(again.json(), first);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(entries(&w.history("same"), "step").len(), 3);
}

#[test]
fn failed_attempts_are_retried_with_constant_backoff() {
    let w = Weft::new();
    let d = w.scenario("retry", r#"{"scenario":"retries"}"#, &[]);
    assert_eq!(d.json(), json!({"attempts": 3}));
    let h = w.history("retry");
    let steps = entries(&h, "step");
    assert_eq!(steps.len(), 3);
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(u(&s["attempt"]), i as u64 + 1);
    }
    for s in &steps[..2] {
        assert_eq!(s["result"], "err");
        assert!(
            s["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("flaky failure")
        );
        assert_eq!(u(&s["retryMs"]) - u(&s["endedMs"]), 100);
    }
    // The next attempt did not start before its retry time.
    assert!(u(&steps[1]["startedMs"]) >= u(&steps[0]["retryMs"]));
    assert!(u(&steps[2]["startedMs"]) >= u(&steps[1]["retryMs"]));
    assert_eq!(steps[2]["result"], "ok");
}

#[test]
fn linear_and_exponential_backoff_delays() {
    let w = Weft::new();
    assert_eq!(
        w.scenario("bo", r#"{"scenario":"backoff"}"#, &[]).json(),
        json!("ok")
    );
    let h = w.history("bo");
    let delays = |name: &str| -> Vec<u64> {
        entries(&h, "step")
            .iter()
            .filter(|s| s["name"] == name && s["result"] == "err")
            .map(|s| u(&s["retryMs"]) - u(&s["endedMs"]))
            .collect()
    };
    assert_eq!(delays("linear"), [40, 80, 120]);
    assert_eq!(delays("exponential"), [40, 80, 160]);
}

#[test]
fn exhausted_retries_give_the_workflow_a_catchable_error() {
    let w = Weft::new();
    let d = w.scenario("ex", r#"{"scenario":"exhausted"}"#, &[]);
    assert_eq!(
        d.json(),
        json!({"caught": "UpstreamDown", "message": "503 from upstream"})
    );
    let h = w.history("ex");
    let steps = entries(&h, "step");
    assert_eq!(steps.len(), 3, "limit 2 means three attempts");
    assert!(
        steps[2].get("retryMs").is_none(),
        "the last failure is final"
    );
}

#[test]
fn a_non_retryable_error_ends_retries_at_once() {
    let w = Weft::new();
    let d = w.scenario("nr", r#"{"scenario":"non-retryable"}"#, &[]);
    assert_eq!(
        d.json(),
        json!({"caught": "NonRetryableError", "message": "card declined"})
    );
    assert_eq!(entries(&w.history("nr"), "step").len(), 1);
}

#[test]
fn a_step_past_its_timeout_is_abandoned_and_counts_as_failed() {
    let w = Weft::new();
    let d = w.scenario("to", r#"{"scenario":"timeout"}"#, &[]);
    assert_eq!(d.json(), json!({"caught": "StepTimeout", "after": 7}));
    let h = w.history("to");
    let spins: Vec<_> = entries(&h, "step")
        .into_iter()
        .filter(|s| s["name"] == "spin")
        .collect();
    assert_eq!(spins.len(), 2);
    assert!(spins.iter().all(|s| s["error"]["name"] == "StepTimeout"));
}

#[test]
fn a_step_result_over_one_mib_is_an_error_not_a_truncation() {
    let w = Weft::new();
    let out = w.scenario("big", r#"{"scenario":"too-large"}"#, &[]).json();
    assert_eq!(out["caught"], "StepResultTooLarge");
    assert!(out["message"].as_str().unwrap().contains("1 MiB"), "{out}");
}

#[test]
fn a_workflow_error_or_trap_ends_the_instance_errored() {
    let w = Weft::new();
    let d = w.scenario("f", r#"{"scenario":"fail"}"#, &[]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("InvalidOrder: order 42 has no items"),
        "{}",
        d.stderr
    );
    let s = w.status("f");
    assert_eq!(s["status"], "errored");
    assert_eq!(s["error"]["name"], "InvalidOrder");

    let d = w.scenario("t", r#"{"scenario":"trap"}"#, &[]);
    assert_eq!(d.code, Some(1));
    let s = w.status("t");
    assert_eq!(s["status"], "errored");
    assert_eq!(s["error"]["name"], "WorkflowTrap");
    // The panic's message and location, not `unreachable executed`.
    let m = s["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("the workflow panicked: deliberate guest panic (at ")
            && m.contains("lib.rs:"),
        "{m}"
    );
    // The other instance is untouched.
    assert_eq!(w.status("f")["error"]["name"], "InvalidOrder");
}

/// Step configs are kept by id: an equal config gets the same id, a step
/// begun with an id runs, and an id never registered ends the instance
/// with a clear error.
#[test]
fn step_configs_are_kept_by_id() {
    let w = Weft::new();
    let d = w.scenario("ids", r#"{"scenario":"config-ids"}"#, &[]);
    assert_eq!(
        d.json(),
        json!({"a": 0, "b": 1, "again": 0, "started": true})
    );
    let d = w.scenario("bad-id", r#"{"scenario":"config-ids","n":7}"#, &[]);
    assert_eq!(d.code, Some(1));
    let s = w.status("bad-id");
    assert_eq!(s["status"], "errored");
    assert_eq!(s["error"]["name"], "UnknownStepConfig");
    assert!(
        s["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`unregistered`"),
        "{s}"
    );
}

#[test]
fn a_step_name_reused_in_a_loop_is_keyed_by_occurrence() {
    let w = Weft::new();
    assert_eq!(
        w.scenario("loop", r#"{"scenario":"loop-names","n":4}"#, &[])
            .json(),
        json!([0, 10, 20, 30])
    );
    let h = w.history("loop");
    let ns: Vec<u64> = entries(&h, "step").iter().map(|s| u(&s["n"])).collect();
    assert_eq!(ns, [0, 1, 2, 3]);
}

#[test]
fn a_long_sleep_is_durable_evicts_and_replays() {
    let w = Weft::new();
    let d = w.scenario(
        "nap",
        r#"{"scenario":"sleep","ms":1200}"#,
        &["--evict-after", "200ms"],
    );
    assert_eq!(d.json(), json!({"before": 1, "after": 2}));
    assert!(d.stderr.contains("Evicted"), "{}", d.stderr);
    assert!(d.stderr.contains("Replaying"), "{}", d.stderr);
    let h = w.history("nap");
    let sleep = entries(&h, "sleep")[0];
    assert_eq!(u(&sleep["wakeMs"]) - u(&sleep["startedMs"]), 1200);
    let after = entries(&h, "step")
        .into_iter()
        .find(|s| s["name"] == "after")
        .unwrap();
    assert!(u(&after["startedMs"]) >= u(&sleep["wakeMs"]));
    // "before" ran once, though the workflow body ran twice.
    assert_eq!(
        entries(&h, "step")
            .iter()
            .filter(|s| s["name"] == "before")
            .count(),
        1
    );
}

#[test]
fn a_short_sleep_stays_in_memory() {
    let w = Weft::new();
    let d = w.scenario("short", r#"{"scenario":"sleep","ms":300}"#, &[]);
    assert_eq!(d.json(), json!({"before": 1, "after": 2}));
    assert!(!d.stderr.contains("Evicted"), "{}", d.stderr);
}

#[test]
fn events_are_buffered_before_the_wait_and_delivered_once() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "ev", r#"{"scenario":"events"}"#);
    run.wait_stderr("the first wait", |t| {
        t.contains("Waiting for event `second`")
    });
    assert!(
        run.stderr_text().contains("send-event ev second"),
        "tells how to send it"
    );
    // `first` arrives before anything waits for it: it must be kept.
    let s = w.exec(&["send-event", "ev", "first", r#"{"by":"ann"}"#]);
    assert!(s.ok(), "{}", s.stderr);
    let s = w.exec(&["send-event", "ev", "second", "[1,2]"]);
    assert!(s.ok(), "{}", s.stderr);
    let d = run.finish();
    assert_eq!(
        d.json(),
        json!({"first": "ann", "second": [1, 2], "type": "first"})
    );
    let h = w.history("ev");
    let ends = entries(&h, "waitEnd");
    assert_eq!(ends.len(), 2);
    assert!(ends.iter().all(|e| e["result"] == "delivered"));
    assert!(
        entries(&h, "bufferedEvent").is_empty(),
        "each event delivered exactly once"
    );
}

#[test]
fn a_wait_timeout_is_catchable() {
    let w = Weft::new();
    let d = w.scenario("et", r#"{"scenario":"event-timeout","ms":300}"#, &[]);
    assert_eq!(d.json(), json!({"timedOut": true, "error": "WaitTimeout"}));
    let h = w.history("et");
    assert_eq!(entries(&h, "waitEnd")[0]["result"], "timedOut");
}

#[test]
fn concurrent_sleeps_waits_and_steps_run_together() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "cc", r#"{"scenario":"concurrent","ms":1000}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `go`"));
    assert!(w.exec(&["send-event", "cc", "go", r#""now""#]).ok());
    let d = run.finish();
    assert_eq!(d.json(), json!({"event": "now", "sum": 3}));
    let h = w.history("cc");
    let sleeps = entries(&h, "sleep");
    assert_eq!(sleeps.len(), 2);
    // The second sleep started before the first one ended: they overlapped.
    assert!(u(&sleeps[1]["startedMs"]) < u(&sleeps[0]["wakeMs"]));
    let steps = entries(&h, "step");
    assert!(
        steps
            .iter()
            .all(|s| u(&s["endedMs"]) < u(&sleeps[0]["wakeMs"]))
    );
}

#[test]
fn clocks_and_randomness_replay_their_journaled_values() {
    let w = Weft::new();
    let d = w.scenario(
        "nd",
        r#"{"scenario":"nondet","ms":900}"#,
        &["--evict-after", "100ms"],
    );
    let out = d.json();
    assert!(
        d.stderr.contains("Replaying"),
        "the output comes from a replay: {}",
        d.stderr
    );
    let h = w.history("nd");
    let clocks = entries(&h, "nondet");
    assert!(!clocks.is_empty());
    // The output, produced by the replay, holds the first run's clock value.
    assert_eq!(u(&clocks[0]["nanos"]), u(&out["now"]));
    // The sleep name was derived from them; the replay matched it.
    assert_eq!(entries(&h, "sleep")[0]["name"], out["sleep"]);
}

#[test]
fn send_event_works_without_a_running_process() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "off", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    run.kill9();
    for (t, p) in [("second", "2"), ("first", r#"{"by":"bo"}"#)] {
        let s = w.exec(&["send-event", "off", t, p]);
        assert!(s.ok(), "{}", s.stderr);
    }
    let h = w.history("off");
    assert_eq!(entries(&h, "bufferedEvent").len(), 2);
    let d = w.exec(&["resume", "off"]);
    assert_eq!(
        d.json(),
        json!({"first": "bo", "second": 2, "type": "first"})
    );
}

#[test]
fn changed_code_is_stopped_with_a_non_determinism_error() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "nd", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    run.kill9();
    let d = w.exec(&["resume", "nd", "--component", CHANGED]);
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    let s = w.status("nd");
    assert_eq!(s["status"], "errored");
    assert_eq!(s["error"]["name"], "NonDeterminismError");
    let msg = s["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(r#"wait-for-event "wait-second""#),
        "names the expected call: {msg}"
    );
    assert!(
        msg.contains(r#"wait-for-event "wait-renamed""#),
        "names the actual call: {msg}"
    );
}

#[test]
fn the_hello_example_runs() {
    let w = Weft::new();
    let d = w.exec(&["run", HELLO, "--input", r#"{"name":"world"}"#]);
    assert_eq!(
        d.json(),
        json!({"greeting": "Hello, world!", "letters": 10})
    );
}

/// A panic in one of three concurrent steps fails that step's attempts
/// only, with the panic's message; its siblings in flight run again on the
/// replay without spending an attempt, and complete.
#[test]
fn a_panic_is_charged_to_the_step_that_panicked() {
    let w = Weft::new();
    let v = w
        .scenario("p", r#"{"scenario":"panic-sibling"}"#, &[])
        .json();
    assert_eq!(v["mug"], "mug");
    assert_eq!(v["tea"], "tea");
    assert_eq!(v["charge"]["name"], "WorkflowTrap");
    let m = v["charge"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("the step panicked: card declined (at "),
        "{m}"
    );
    let h = w.history("p");
    let steps = entries(&h, "step");
    let failed = |name: &str| {
        steps
            .iter()
            .filter(|e| e["name"] == name && e["result"] != "ok")
            .count()
    };
    assert_eq!(failed("charge"), 2, "{h:?}");
    assert_eq!(failed("reserve-mug"), 0, "a sibling was charged: {h:?}");
    assert_eq!(failed("reserve-tea"), 0, "a sibling was charged: {h:?}");
    // Each sibling's one journaled attempt is attempt 1.
    for name in ["reserve-mug", "reserve-tea"] {
        let ok: Vec<_> = steps.iter().filter(|e| e["name"] == name).collect();
        assert_eq!(ok.len(), 1, "{name}: {ok:?}");
        assert_eq!(ok[0]["attempt"], 1, "{name}: {ok:?}");
    }
}

/// A Rust step body that takes the `StepContext` sees the host's attempt
/// number, which goes on after a crash in the retry delay: the step
/// succeeds on attempt 3 with one kill between attempts 1 and 2.
#[test]
fn a_rust_step_sees_its_attempt_across_a_crash() {
    let w = Weft::new();
    let input = r#"{"scenario":"step-context","ms":1500}"#;
    let mut run = w.spawn_scenario("run-0", "ctx", input);
    run.wait_stderr("the first failure", |t| {
        t.contains("flaky attempt 1 failed")
    });
    let first = run.kill9();
    let last = w.spawn("run-1", &["resume", "ctx"]).finish();
    assert_eq!(
        last.json(),
        json!({"attempt": 3, "name": "flaky", "retries": 4, "timeoutMs": 30000})
    );
    // The body's own output (outside the journal): one line per attempt.
    let execs: Vec<&str> = first
        .lines()
        .chain(last.stderr.lines())
        .filter_map(|l| Some(l.split_once("EXEC flaky ")?.1.trim()))
        .collect();
    assert_eq!(execs, ["1", "2", "3"]);
}

/// Rust step bodies and undos may borrow the workflow's locals, also when
/// they run concurrently and when a replay after a crash borrows them
/// again.
#[test]
fn rust_steps_borrow_the_workflows_locals() {
    let w = Weft::new();
    let input = r#"{"scenario":"borrow","ms":1500}"#;
    let mut run = w.spawn_scenario("run-0", "borrow", input);
    run.wait_stderr("the sleep", |t| t.contains("between"));
    run.kill9();
    let last = w.spawn("run-1", &["resume", "borrow"]).finish();
    let released = |sku: &str| format!("released r-{sku} of {sku} (3 skus)");
    assert_eq!(
        last.json(),
        json!({"count": 3, "longest": 3, "undone": [
            ["reserve", released("cap")],
            ["reserve", released("tee")],
            ["reserve", released("mug")],
        ]})
    );
}

/// Rust rollback: the undos of completed steps run newest first, each a
/// durable step `<name>:undo`, and their results come back; a crash
/// before the rollback loses no undo (the saga is rebuilt on replay).
#[test]
fn a_rust_saga_rolls_back_newest_first_after_a_crash() {
    let w = Weft::new();
    let input = r#"{"scenario":"saga","ms":1500}"#;
    let mut run = w.spawn_scenario("run-0", "saga", input);
    run.wait_stderr("the sleep", |t| t.contains("before-rollback"));
    let first = run.kill9();
    assert!(!first.contains("EXEC charge:undo"), "{first}");
    let last = w.spawn("run-1", &["resume", "saga"]).finish();
    assert_eq!(
        last.json(),
        json!({"undone": [
            ["charge", {"refund": "r-c-1"}],
            ["reserve", {"released": "12A", "why": "no stock"}],
        ]})
    );
    let steps: Vec<String> = w
        .history("saga")
        .iter()
        .filter(|e| e["kind"] == "step")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        ["reserve", "charge", "ship", "charge:undo", "reserve:undo"]
    );
    for undo in ["EXEC charge:undo", "EXEC reserve:undo"] {
        assert_eq!(last.stderr.matches(undo).count(), 1, "{}", last.stderr);
    }
}
