//! What operators see: Prometheus metrics at `/metrics` (what ran shows in
//! the counters, the store's instances by status in a gauge, behind the
//! API's token) and JSON logs.

use serde_json::json;

use crate::common::server::{Server, http};
use crate::common::*;
use crate::server::rust_only;

/// `/metrics` as text: (status, body).
fn scrape(s: &Server, token: Option<&str>) -> (u16, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut r = agent.get(format!("{}/metrics", s.url));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let mut resp = r.call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// The value of the sample named `name` (with its labels), if any.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_what_ran() {
    let w = Weft::new();
    let s = w.serve(
        "serve",
        &rust_only(),
        &["--token", "t0k", "--evict-after", "200ms"],
    );
    let create = |id: &str, params: serde_json::Value| {
        let (code, v) = http(
            "POST",
            &format!("{}/v1/workflows/rs/instances", s.url),
            Some(&json!({"id": id, "params": params}).to_string()),
            Some("t0k"),
        );
        assert_eq!(code, 201, "{v}");
    };
    create("b1", json!({"scenario": "basic"}));
    create("ex", json!({"scenario": "exhausted"}));
    create("f", json!({"scenario": "fail"}));
    create("nap", json!({"scenario": "sleep", "ms": 1500}));
    for (id, status) in [
        ("b1", "complete"),
        ("ex", "complete"),
        ("f", "errored"),
        ("nap", "complete"),
    ] {
        let start = std::time::Instant::now();
        loop {
            let (_, v) = http(
                "GET",
                &format!("{}/v1/workflows/rs/instances/{id}", s.url),
                None,
                Some("t0k"),
            );
            if v["status"] == status {
                break;
            }
            assert!(start.elapsed() < PATIENCE, "{id}: {v}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    assert_eq!(scrape(&s, None).0, 401, "the token guards /metrics too");
    let (code, text) = scrape(&s, Some("t0k"));
    assert_eq!(code, 200, "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
    let get = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("{name}:\n{text}"));
    let rs = "{workflow=\"rs\"}";
    assert_eq!(
        get("weft_instances{workflow=\"rs\",status=\"complete\"}"),
        3.0
    );
    assert_eq!(
        get("weft_instances{workflow=\"rs\",status=\"errored\"}"),
        1.0
    );
    // basic: a, b, greet; exhausted: doomed fails twice, then for good;
    // sleep: before, after.
    assert_eq!(get(&format!("weft_steps_completed_total{rs}")), 5.0);
    assert_eq!(get(&format!("weft_steps_retried_total{rs}")), 2.0);
    assert_eq!(get(&format!("weft_steps_failed_total{rs}")), 1.0);
    assert_eq!(get(&format!("weft_step_duration_seconds_count{rs}")), 8.0);
    // The sleeping instance was evicted, then replayed when it woke.
    assert!(get(&format!("weft_evictions_total{rs}")) >= 1.0);
    assert!(get(&format!("weft_replays_total{rs}")) >= 1.0);
    assert!(get("weft_replay_duration_seconds_count") >= 1.0);
    assert!(get("weft_journal_commit_duration_seconds_count") >= 1.0);
    assert!(get("weft_journal_commit_batch_size_sum") >= 8.0);
    assert_eq!(get("weft_queue_depth"), 0.0);
    assert_eq!(get("weft_slots_in_use"), 0.0);
    assert!(get("process_resident_memory_bytes") > 1e6);
}

/// `--log-format json`: every stderr line is a JSON object; the guest's
/// output, each step attempt (at debug) and the instance's end are events
/// naming the workflow, instance, step and attempt.
#[test]
fn json_logs_name_the_workflow_instance_step_and_attempt() {
    let w = Weft::new();
    let d = Done::from(
        w.cmd(&[
            "--log-format",
            "json",
            "run",
            SCENARIOS,
            "--id",
            "j1",
            "--input",
            r#"{"scenario":"exhausted"}"#,
        ])
        .env(
            "RUST_LOG",
            "warn,weft::guest=info,weft::instance=info,weft::step=debug",
        )
        .output()
        .unwrap(),
    );
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    let events: Vec<serde_json::Value> = d
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let of = |target: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["target"] == target).collect()
    };
    let steps = of("weft::step");
    assert_eq!(steps.len(), 3, "{}", d.stderr);
    for (i, e) in steps.iter().enumerate() {
        assert_eq!(e["workflow"], "scenarios", "{e}");
        assert_eq!(e["instance"], "j1", "{e}");
        assert_eq!(e["step"], "doomed", "{e}");
        assert_eq!(e["attempt"], i as u64 + 1, "{e}");
        let outcome = if i < 2 { "retried" } else { "failed" };
        assert_eq!(e["outcome"], outcome, "{e}");
        assert!(
            e["error"].as_str().unwrap().contains("503 from upstream"),
            "{e}"
        );
    }
    let ended = of("weft::instance");
    assert_eq!(ended.len(), 1, "{}", d.stderr);
    assert_eq!(ended[0]["status"], "complete");
    assert_eq!(ended[0]["instance"], "j1");
    // Status lines are events too, not text.
    assert!(!of("weft::status").is_empty(), "{}", d.stderr);
}

/// Guest output becomes events with the instance's id, in JSON logs.
#[test]
fn json_logs_carry_guest_output() {
    let w = Weft::new();
    let d = Done::from(
        w.cmd(&[
            "--log-format",
            "json",
            "run",
            SCENARIOS,
            "--id",
            "loud",
            "--input",
            r#"{"scenario":"loud","n":2}"#,
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap(),
    );
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    let lines: Vec<serde_json::Value> = d
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .filter(|e: &serde_json::Value| e["target"] == "weft::guest")
        .collect();
    assert_eq!(lines.len(), 2, "{}", d.stderr);
    assert_eq!(lines[0]["instance"], "loud");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("00000000 xxx")
    );
}
