//! What operators see: Prometheus metrics at `/metrics` (what ran shows in
//! the counters, the store's instances by status in a gauge, behind the
//! API's token) and JSON logs.

use serde_json::json;

use crate::common::server::{Server, http};
use crate::common::*;
use crate::server::rust_only;

/// `/metrics` as text: (status, body).
pub(crate) fn scrape(s: &Server, token: Option<&str>) -> (u16, String) {
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
pub(crate) fn sample(text: &str, name: &str) -> Option<f64> {
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
    assert_eq!(get("weft_instances_in_memory"), 0.0, "all ended");
    assert!(get("process_resident_memory_bytes") > 1e6);
}

/// `weft --log-format json run SCENARIOS --id ID --input INPUT` with
/// `RUST_LOG` (or its default): every stderr line parsed as JSON.
fn json_log_run(id: &str, input: &str, rust_log: Option<&str>) -> Vec<serde_json::Value> {
    let w = Weft::new();
    let mut cmd = w.cmd(&[
        "--log-format",
        "json",
        "run",
        SCENARIOS,
        "--id",
        id,
        "--input",
        input,
    ]);
    match rust_log {
        Some(l) => cmd.env("RUST_LOG", l),
        None => cmd.env_remove("RUST_LOG"),
    };
    let d = Done::from(cmd.output().unwrap());
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    d.stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// `--log-format json`: every stderr line is a JSON object; each step
/// attempt (at debug) and the instance's end are events naming the
/// workflow, instance, step and attempt.
#[test]
fn json_logs_name_the_workflow_instance_step_and_attempt() {
    let events = json_log_run(
        "j1",
        r#"{"scenario":"exhausted"}"#,
        Some("warn,weft::guest=info,weft::instance=info,weft::step=debug"),
    );
    let of = |target: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["target"] == target).collect()
    };
    let steps = of("weft::step");
    assert_eq!(steps.len(), 3, "{events:?}");
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
    assert_eq!(ended.len(), 1, "{events:?}");
    assert_eq!(ended[0]["status"], "complete");
    assert_eq!(ended[0]["instance"], "j1");
    // Status lines are events too, not text.
    assert!(!of("weft::status").is_empty(), "{events:?}");
}

/// Guest output becomes events with the instance's id, in JSON logs (by
/// default, without `RUST_LOG`).
#[test]
fn json_logs_carry_guest_output() {
    let events = json_log_run("loud", r#"{"scenario":"loud","n":2}"#, None);
    let lines: Vec<_> = events
        .iter()
        .filter(|e| e["target"] == "weft::guest")
        .collect();
    assert_eq!(lines.len(), 2, "{events:?}");
    assert_eq!(lines[0]["instance"], "loud");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("00000000 xxx")
    );
}

/// A loopback OTLP/HTTP receiver (JSON): every span it was sent.
fn otlp_receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = spans.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let got = got.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let (mut line, mut len) = (String::new(), 0usize);
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.trim_end().split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                            for s in ss["spans"].as_array().into_iter().flatten() {
                                got.lock().unwrap().push(s.clone());
                            }
                        }
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                    );
                }
            });
        }
    });
    (url, spans)
}

/// A span attribute's value, as text.
fn attr(span: &serde_json::Value, key: &str) -> Option<String> {
    let a = span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?;
    let v = &a["value"];
    v["stringValue"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| v["intValue"].as_str().map(str::to_owned))
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
}

/// With the standard OTEL_* variables set, a server exports a trace per
/// instance over OTLP: the run under the create request's `traceparent`,
/// a span per step attempt naming the step, attempt and outcome, one per
/// child workflow with the child's runs in the same trace, and a replay
/// span after an eviction.
#[test]
fn traces_go_to_an_otlp_receiver() {
    let (endpoint, spans) = otlp_receiver();
    let w = Weft::new();
    let config = w.dir.path().join("weft.toml");
    std::fs::write(&config, rust_only()).unwrap();
    let s = w.serve_config_env(
        "serve",
        config,
        &["--evict-after", "200ms"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "weft-test"),
        ],
    );
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let create = |id: &str, params: serde_json::Value, traced: bool| {
        let mut r = agent.post(format!("{}/v1/workflows/rs/instances", s.url));
        if traced {
            r = r.header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"));
        }
        let resp = r
            .send(json!({"id": id, "params": params}).to_string())
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    };
    create("p", json!({"scenario": "parent", "child": "rs"}), true);
    create("nap", json!({"scenario": "sleep", "ms": 800}), false);
    s.wait_status("rs", "p", "complete");
    s.wait_status("rs", "nap", "complete");

    let start = std::time::Instant::now();
    let named = |name: &str| -> Vec<serde_json::Value> {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s["name"] == name)
            .cloned()
            .collect()
    };
    let of = |instance: &str| -> Vec<serde_json::Value> {
        named("run rs")
            .into_iter()
            .filter(|r| attr(r, "instance").as_deref() == Some(instance))
            .collect()
    };
    // Spans are sent as they end, in batches: wait for the last ones.
    let nap_replayed = || {
        let nap = of("nap");
        named("replay")
            .iter()
            .any(|rp| nap.iter().any(|r| r["spanId"] == rp["parentSpanId"]))
    };
    while !(nap_replayed() && named("child rs").len() >= 2 && !named("step greet").is_empty()) {
        assert!(
            start.elapsed() < PATIENCE,
            "spans: {:?}",
            spans.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let runs = named("run rs");
    // One trace per instance: its `create` span, under the create
    // request's `traceparent`, is the parent of every run. The parent ran
    // more than once (evicted while it waited for a child).
    let create_of = |id: &str| -> serde_json::Value {
        named("create rs")
            .into_iter()
            .find(|c| attr(c, "instance").as_deref() == Some(id))
            .unwrap_or_else(|| panic!("no create span for {id}"))
    };
    let created = create_of("p");
    assert_eq!(
        created["traceId"], trace,
        "the create continues the caller's trace"
    );
    assert_eq!(created["parentSpanId"], "b7ad6b7169203331");
    let parent_runs: Vec<_> = runs
        .iter()
        .filter(|r| attr(r, "instance").as_deref() == Some("p"))
        .collect();
    assert!(!parent_runs.is_empty());
    for r in &parent_runs {
        assert_eq!(r["traceId"], trace);
        assert_eq!(r["parentSpanId"], created["spanId"]);
    }
    let child = named("child rs");
    assert_eq!(
        child.len(),
        2,
        "two child workflows, none for a replayed call"
    );
    for c in &child {
        assert_eq!(c["traceId"], trace);
        assert!(
            parent_runs.iter().any(|r| r["spanId"] == c["parentSpanId"]),
            "{c}"
        );
    }
    // The children's runs are in the parent's trace, under its child spans.
    let in_trace: Vec<_> = runs.iter().filter(|r| r["traceId"] == trace).collect();
    assert!(in_trace.len() >= 3, "{in_trace:?}");
    // Steps: named, with attempt and outcome, under their run.
    let greet = named("step greet");
    assert_eq!(greet.len(), 1, "{greet:?}");
    assert_eq!(greet[0]["traceId"], trace);
    assert_eq!(attr(&greet[0], "step").as_deref(), Some("greet"));
    assert_eq!(attr(&greet[0], "attempt").as_deref(), Some("1"));
    assert_eq!(attr(&greet[0], "outcome").as_deref(), Some("completed"));
    // The sleeping instance was evicted and replayed: a replay span under
    // its second run.
    // (Its replay span lies under its second run: waited for above.)
    let nap = of("nap");
    assert!(nap.len() >= 2);
    // Without a traceparent, the instance's own trace: all its runs in it.
    let nap_created = create_of("nap");
    assert_ne!(nap_created["traceId"], trace);
    assert!(
        nap_created["parentSpanId"]
            .as_str()
            .unwrap_or("")
            .is_empty()
    );
    for r in &nap {
        assert_eq!(r["traceId"], nap_created["traceId"], "{r}");
        assert_eq!(r["parentSpanId"], nap_created["spanId"], "{r}");
    }
    assert!(
        nap.iter()
            .any(|r| attr(r, "outcome").as_deref() == Some("evicted")),
        "{nap:?}"
    );
}
