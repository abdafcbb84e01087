//! Prometheus metrics at `/metrics`: what ran shows in the counters, the
//! store's instances by status in a gauge, behind the API's token.

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
