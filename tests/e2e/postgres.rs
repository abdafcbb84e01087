//! The journal in PostgreSQL (`--store`): the same workflows give the same
//! results and histories as on the embedded journal, survive `kill -9`, and
//! every data dir on the store sees every instance.

use serde_json::json;

use crate::common::pg::TestDb;
use crate::common::*;

/// The kinds of a history's entries, in order.
fn kinds(h: &[serde_json::Value]) -> Vec<String> {
    h.iter()
        .map(|e| e["kind"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn scenarios_give_the_same_results_and_histories_as_on_the_embedded_journal() {
    let db = TestDb::new();
    let on_pg = Weft::on(&db);
    let embedded = Weft::new();
    let cases = [
        ("basic", r#"{"scenario":"basic"}"#),
        ("retries", r#"{"scenario":"retries"}"#),
        ("sleep", r#"{"scenario":"sleep","ms":600}"#),
        ("timeout", r#"{"scenario":"event-timeout","ms":200}"#),
        ("many", r#"{"scenario":"loop-names","n":40}"#),
        ("exhausted", r#"{"scenario":"exhausted"}"#),
    ];
    for (id, input) in cases {
        // Evicted during the sleep: replayed from the store.
        let extra = ["--evict-after", "200ms"];
        let a = embedded.scenario(id, input, &extra);
        let b = on_pg.scenario(id, input, &extra);
        assert_eq!(a.code, b.code, "{id}: {}", b.stderr);
        assert_eq!(a.stdout, b.stdout, "{id}: the same output");
        assert_eq!(
            kinds(&embedded.history(id)),
            kinds(&on_pg.history(id)),
            "{id}: the same history"
        );
    }
    assert!(on_pg.history("sleep").len() >= 3);
    // It is all in the database, not in the data dir.
    assert!(!on_pg.data_dir().join("journal.redb").exists());
    let rows = db.query("SELECT count(*) FROM weft_instances");
    assert_eq!(rows, [cases.len().to_string()]);
    let version = db.query("SELECT max(version) FROM weft_schema_history");
    assert_eq!(version, ["3"], "migrations applied");
}

#[test]
fn events_reach_a_run_on_the_store_and_are_buffered_without_one() {
    let db = TestDb::new();
    let w = Weft::on(&db);
    let mut run = w.spawn_scenario("run", "ev", r#"{"scenario":"events"}"#);
    run.wait_stderr("the first wait", |t| {
        t.contains("Waiting for event `second`")
    });
    for (t, p) in [("first", r#"{"by":"ann"}"#), ("second", "[1,2]")] {
        let s = w.exec(&["send-event", "ev", t, p]);
        assert!(s.ok(), "{}", s.stderr);
    }
    assert_eq!(
        run.finish().json(),
        json!({"first": "ann", "second": [1, 2], "type": "first"})
    );

    // No process: the events go to the store, and a resume delivers them.
    let mut run = w.spawn_scenario("run2", "off", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    run.kill9();
    for (t, p) in [("second", "2"), ("first", r#"{"by":"bo"}"#)] {
        let s = w.exec(&["send-event", "off", t, p]);
        assert!(s.ok(), "{}", s.stderr);
    }
    let d = w.exec(&["resume", "off"]);
    assert_eq!(
        d.json(),
        json!({"first": "bo", "second": 2, "type": "first"})
    );
    // Delivered once: the inbox is empty.
    assert_eq!(db.query("SELECT count(*) FROM weft_inbox"), ["0"]);
    let s = w.exec(&["send-event", "off", "first", "1"]);
    assert!(!s.ok(), "a finished instance refuses events");
    assert!(s.stderr.contains("complete"), "{}", s.stderr);
}

#[test]
fn kill_9_loses_nothing_on_the_store() {
    let input = r#"{"scenario":"long","n":12,"ms":40}"#;
    let expected = Weft::new().scenario("ref", input, &[]).json();
    let db = TestDb::new();
    let w = Weft::on(&db);
    let mut run = w.spawn_scenario("run-0", "long", input);
    run.wait_stderr("4 steps", |t| {
        t.lines().filter(|l| l.contains("Step work-")).count() >= 4
    });
    let first = run.kill9();
    let last = w.spawn("run-1", &["resume", "long"]).finish();
    assert_eq!(last.json(), expected, "same output as without the crash");
    let ran = |log: &str| {
        log.lines()
            .filter_map(|l| {
                Some(
                    l.split_once("EXEC work-")?
                        .1
                        .trim()
                        .parse::<usize>()
                        .unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut counts = [0; 12];
    for i in ran(&first).into_iter().chain(ran(&last.stderr)) {
        counts[i] += 1;
    }
    assert!(
        counts.iter().all(|c| (1..=2).contains(c)),
        "each step ran once, the one in flight at most twice: {counts:?}"
    );
    assert!(
        counts.iter().filter(|c| **c == 2).count() <= 1,
        "{counts:?}"
    );
}

#[test]
fn every_data_dir_on_the_store_sees_every_instance_and_component() {
    let db = TestDb::new();
    let a = Weft::on(&db);
    let d = a.scenario("shared", r#"{"scenario":"basic"}"#, &[]);
    assert!(d.ok(), "{}", d.stderr);
    // Another data dir (another host) on the same store.
    let b = Weft::on(&db);
    let s = b.status("shared");
    assert_eq!(s["status"], "complete", "{s}");
    let l = b.exec(&["list"]);
    assert!(l.stdout.contains("shared"), "{}", l.stdout);
    assert_eq!(kinds(&a.history("shared")), kinds(&b.history("shared")));
    // The component is in the store: b resumes an instance a started,
    // though b's data dir never held the component.
    let mut run = a.spawn_scenario("run", "moved", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    run.kill9();
    for (t, p) in [("second", "5"), ("first", r#"{"by":"di"}"#)] {
        assert!(b.exec(&["send-event", "moved", t, p]).ok());
    }
    let d = b.exec(&["resume", "moved"]);
    assert_eq!(
        d.json(),
        json!({"first": "di", "second": 5, "type": "first"})
    );
    assert_eq!(db.query("SELECT count(*) FROM weft_components"), ["1"]);
}

#[test]
fn a_server_on_the_store_runs_and_lists_instances() {
    let db = TestDb::new();
    let w = Weft::on(&db);
    let toml = format!("[workflows.rs]\ncomponent = {:?}\n", SCENARIOS);
    let s = w.serve("serve", &toml, &[]);
    let (code, v) = s.post(
        "/v1/workflows/rs/instances",
        r#"{"id":"srv","params":{"scenario":"events"}}"#,
    );
    assert_eq!(code, 201, "{v}");
    s.wait_status("rs", "srv", "waiting");
    for (t, p) in [("first", r#"{"by":"cy"}"#), ("second", "3")] {
        let (code, v) = s.post(&format!("/v1/workflows/rs/instances/srv/events/{t}"), p);
        assert_eq!(code, 202, "{v}");
    }
    let v = s.wait_status("rs", "srv", "complete");
    assert_eq!(
        v["output"],
        json!({"first": "cy", "second": 3, "type": "first"})
    );
    // Metrics count the store's instances with the store's own query, and
    // the PostgreSQL writer's commits.
    let metrics = ureq::get(format!("{}/metrics", s.url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(
        metrics.contains("weft_instances{workflow=\"rs\",status=\"complete\"} 1\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("weft_journal_commit_duration_seconds_count 0\n"),
        "{metrics}"
    );
    s.run.kill9();
    // What the server ran is in the store for any other host to read.
    let other = Weft::on(&db);
    assert_eq!(other.status("srv")["status"], "complete");
}

/// Many processes run a store's instances side by side; an instance is
/// taken from a `weft run` only once its lease has run out.
#[test]
fn a_run_is_taken_over_only_once_its_lease_runs_out() {
    let db = TestDb::new();
    let a = Weft::on(&db);
    let mut run = a.spawn_scenario("run", "held", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event `second`"));
    let b = Weft::on(&db);
    let d = b.scenario("other", r#"{"scenario":"basic"}"#, &[]);
    assert!(
        d.ok(),
        "a second process runs its own instance: {}",
        d.stderr
    );
    let d = b.exec(&["resume", "held"]);
    assert!(!d.ok(), "b took an instance a still runs");
    assert!(
        d.stderr.contains("is being run by another `weft run`"),
        "{}",
        d.stderr
    );
    assert_eq!(b.status("held")["status"], "waiting");
    run.kill9();
    for (t, p) in [("first", r#"{"by":"ed"}"#), ("second", "1")] {
        let s = b.exec(&["send-event", "held", t, p]);
        assert!(s.ok(), "{}", s.stderr);
    }
    // Its lease runs out: b takes the instance, and delivers what b sent.
    let d = b.exec(&["resume", "held"]);
    assert!(d.stderr.contains("Waiting"), "{}", d.stderr);
    assert_eq!(
        d.json(),
        json!({"first": "ed", "second": 1, "type": "first"})
    );
}

/// The database drops weft's connections mid-run (as on a restart): the
/// writer connects again, the server's instance task retries, and the
/// instance completes with no completed step run twice.
#[test]
fn a_lost_connection_is_reestablished_and_nothing_runs_twice() {
    let input = r#"{"scenario":"long","n":12,"ms":60}"#;
    let expected = Weft::new().scenario("ref", input, &[]).json();
    let db = TestDb::new();
    let w = Weft::on(&db);
    let toml = format!("[workflows.rs]\ncomponent = {SCENARIOS:?}\n");
    let mut s = w.serve("serve", &toml, &[]);
    let body = format!(r#"{{"id":"cut","params":{input}}}"#);
    let (code, v) = s.post("/v1/workflows/rs/instances", &body);
    assert_eq!(code, 201, "{v}");
    s.run
        .wait_stderr("4 steps", |t| t.matches("EXEC work-").count() >= 4);
    let killed = db.query(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    );
    assert_ne!(killed, ["0"], "the server's connections were found");
    let v = s.wait_status("rs", "cut", "complete");
    assert_eq!(v["output"], expected);
    let log = s.run.stderr_text();
    let mut counts = [0; 12];
    for l in log.lines() {
        if let Some(n) = l.split_once("EXEC work-") {
            counts[n.1.trim().parse::<usize>().unwrap()] += 1;
        }
    }
    assert!(
        counts.iter().all(|c| (1..=2).contains(c)),
        "each step ran once, one in flight at most twice: {counts:?}"
    );
    assert!(log.contains("reconnected"), "{log}");
}

/// A Python workflow on the store: the same results and histories as on
/// the embedded journal, and `kill -9` loses nothing.
#[test]
fn python_workflows_run_on_the_store() {
    let c = crate::common::python::py_component("scenarios", None);
    let db = TestDb::new();
    let on_pg = Weft::on(&db);
    let embedded = Weft::new();
    let run = |w: &Weft, id: &str, input: &str| {
        w.exec(&[
            "run",
            &c,
            "--id",
            id,
            "--input",
            input,
            "--evict-after",
            "200ms",
        ])
    };
    for (id, input) in [
        ("basic", r#"{"scenario":"basic"}"#),
        ("dag", r#"{"scenario":"dag"}"#),
        ("sleep", r#"{"scenario":"sleep","ms":500}"#),
        ("rollback", r#"{"scenario":"rollback"}"#),
    ] {
        let a = run(&embedded, id, input);
        let b = run(&on_pg, id, input);
        assert_eq!(
            (a.code, &a.stdout),
            (b.code, &b.stdout),
            "{id}: {}",
            b.stderr
        );
        assert_eq!(
            kinds(&embedded.history(id)),
            kinds(&on_pg.history(id)),
            "{id}"
        );
    }
    let input = r#"{"scenario":"long","n":8,"ms":60}"#;
    let expected = run(&embedded, "long", input).json();
    let mut r = on_pg.spawn("r0", &["run", &c, "--id", "long", "--input", input]);
    r.wait_stderr("3 steps", |t| t.matches("Step work-").count() >= 3);
    r.kill9();
    assert_eq!(on_pg.exec(&["resume", "long"]).json(), expected);
    assert_eq!(entries(&on_pg.history("long"), "step").len(), 8);
}

/// A store written by the previous weft (schema V2, tests/fixtures/store-v2)
/// is migrated when this weft opens it, with nothing lost: a complete
/// instance keeps its history, and one whose run was killed while it waited
/// for events takes them and completes, on the old component.
#[test]
fn a_store_of_the_previous_release_is_migrated_with_nothing_lost() {
    let db = TestDb::new();
    let fixture = repo_root().join("tests/fixtures/store-v2");
    db.execute(&std::fs::read_to_string(fixture.join("dump.sql")).unwrap());
    assert_eq!(
        db.query("SELECT max(version) FROM weft_schema_history"),
        ["2"]
    );
    let w = Weft::on(&db);
    let d = w.exec(&["history", "done"]);
    assert!(d.ok(), "{}", d.stderr);
    assert_eq!(
        d.stdout,
        std::fs::read_to_string(fixture.join("done.history.jsonl")).unwrap()
    );
    assert_eq!(
        db.query("SELECT max(version) FROM weft_schema_history"),
        ["3"]
    );
    assert_eq!(w.status("done")["output"]["greeting"], "hello done");
    for (t, p) in [("second", "[1,2]"), ("first", r#"{"by":"ann"}"#)] {
        let d = w.exec(&["send-event", "waiting", t, p]);
        assert!(d.ok(), "{}", d.stderr);
    }
    let d = w.exec(&["resume", "waiting"]);
    assert!(d.ok(), "{}", d.stderr);
    assert_eq!(
        d.json(),
        json!({"first": "ann", "second": [1, 2], "type": "first"})
    );
}
