//! `kill -9` of the host at several points of a long workflow, then
//! `weft resume`: side effects printed by the step bodies (outside the
//! journal) show that every completed step ran exactly once and only the
//! step in flight at a kill ran again, and the output equals a run without
//! crashes.

use std::collections::BTreeMap;

use crate::common::*;

const STEPS: usize = 30;
const INPUT: &str = r#"{"scenario":"long","n":30,"ms":40}"#;

fn executions(stderr: &str) -> Vec<usize> {
    stderr
        .lines()
        .filter_map(|l| Some(l.split_once("EXEC work-")?.1))
        .map(|n| n.trim().parse().unwrap())
        .collect()
}

fn completed(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("Step work-")).count()
}

#[test]
fn kill_9_at_several_points_loses_nothing_and_reruns_only_in_flight_steps() {
    let reference = Weft::new();
    let expected = reference.scenario("ref", INPUT, &[]).json();

    let w = Weft::new();
    let mut logs = Vec::new();
    // Kill after 3, then 7 more, then 9 more completed steps.
    let mut run = w.spawn_scenario("run-0", "long", INPUT);
    run.wait_stderr("3 steps", |t| completed(t) >= 3);
    logs.push(run.kill9());
    for (i, more) in [7, 9].into_iter().enumerate() {
        let mut run = w.spawn(&format!("run-{}", i + 1), &["resume", "long"]);
        run.wait_stderr("more steps", |t| completed(t) >= more);
        logs.push(run.kill9());
    }
    let last = w.spawn("run-final", &["resume", "long"]).finish();
    assert_eq!(
        last.json(),
        expected,
        "same output as a run without crashes"
    );
    logs.push(last.stderr.clone());

    let mut counts = BTreeMap::new();
    for log in &logs {
        for i in executions(log) {
            *counts.entry(i).or_insert(0) += 1;
        }
    }
    for i in 0..STEPS {
        let c = counts.get(&i).copied().unwrap_or(0);
        assert!((1..=2).contains(&c), "step {i} ran {c} times");
    }
    let reruns: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        reruns <= 3,
        "at most one in-flight step re-ran per kill, got {reruns}: {counts:?}"
    );

    // The journal holds each step exactly once.
    let h = w.history("long");
    assert_eq!(entries(&h, "step").len(), STEPS);

    // The workflow body prints BODY-START before any step: a replay does
    // not repeat guest output.
    assert!(logs[0].contains("BODY-START"));
    for log in &logs[1..] {
        assert!(
            !log.contains("BODY-START"),
            "guest output during replay:\n{log}"
        );
        assert!(log.contains("Replaying"), "{log}");
    }
}

#[test]
fn kill_9_during_a_durable_sleep_keeps_the_wake_time() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "s", r#"{"scenario":"sleep","ms":1500}"#);
    run.wait_stderr("the sleep", |t| t.contains("Sleeping nap"));
    run.kill9();
    let h = w.history("s");
    let wake = u(&entries(&h, "sleep")[0]["wakeMs"]);
    let d = w.exec(&["resume", "s"]);
    assert_eq!(d.json(), serde_json::json!({"before": 1, "after": 2}));
    let h = w.history("s");
    assert_eq!(
        entries(&h, "sleep").len(),
        1,
        "the sleep was not started again"
    );
    assert_eq!(u(&entries(&h, "sleep")[0]["wakeMs"]), wake);
    let after = entries(&h, "step")
        .into_iter()
        .find(|s| s["name"] == "after")
        .unwrap();
    assert!(u(&after["startedMs"]) >= wake);
}
