//! Cron schedules: one instance per tick, each tick once, across a
//! `kill -9` and a restart; ticks missed meanwhile are skipped, or the
//! latest of them runs once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::*;

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The ticks (Unix seconds) of the instances whose ids start with `prefix`.
fn ticks(w: &Weft, prefix: &str) -> Vec<i64> {
    let out = w.exec(&["list", "--json"]).stdout;
    let mut t: Vec<i64> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let id = v["id"].as_str()?.strip_prefix(prefix)?.to_owned();
            let naive = chrono::NaiveDateTime::parse_from_str(&id, "%Y%m%dT%H%M%SZ").ok()?;
            Some(naive.and_utc().timestamp())
        })
        .collect();
    t.sort();
    t
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn schedules_fire_each_tick_once_across_a_restart() {
    let w = Weft::new();
    let toml = format!(
        "[workflows.late]\ncomponent = {SCENARIOS:?}\nschedules = [{{ cron = \"*/2 * * * * *\", missed = \"latest\", params = {{ scenario = \"basic\" }} }}]\n\
         [workflows.skip]\ncomponent = {SCENARIOS:?}\nschedules = [{{ cron = \"*/2 * * * * *\", params = {{ scenario = \"basic\" }} }}]\n"
    );
    let s = w.serve("serve-0", &toml, &[]);
    let (code, v) = s.get("/v1/schedules");
    assert_eq!(code, 200, "{v}");
    let list = v["schedules"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{v}");
    let prefix = |wf: &str| -> String {
        list.iter().find(|s| s["workflow"] == wf).unwrap()["idPrefix"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (late, skip) = (prefix("late"), prefix("skip"));
    for sch in list {
        assert!(
            sch["nextMs"].as_i64().unwrap() > now_s() * 1000 - 1000,
            "{sch}"
        );
        assert_eq!(sch["cron"], "*/2 * * * * *");
    }
    assert_eq!(
        list.iter().find(|s| s["workflow"] == "late").unwrap()["missed"],
        "latest"
    );
    let cli = w.exec(&["schedules"]);
    assert!(
        cli.stdout.contains("*/2 * * * * *") && cli.stdout.contains("next 20"),
        "{}",
        cli.stdout
    );

    wait_for("three ticks of each", || {
        ticks(&w, &late).len() >= 3 && ticks(&w, &skip).len() >= 3
    });
    s.run.kill9();
    let before = (ticks(&w, &late), ticks(&w, &skip));
    std::thread::sleep(Duration::from_secs(5));
    let restarted = now_s();
    let s = w.serve("serve-1", &toml, &[]);
    wait_for("two ticks after the restart", || {
        ticks(&w, &late).iter().filter(|t| **t > restarted).count() >= 2
            && ticks(&w, &skip).iter().filter(|t| **t > restarted).count() >= 2
    });
    let log = s.run.kill9();
    let (after_late, after_skip) = (ticks(&w, &late), ticks(&w, &skip));

    for (name, before, after) in [
        ("late", &before.0, &after_late),
        ("skip", &before.1, &after_skip),
    ] {
        // Every tick is even, and no tick fired twice (one instance each).
        assert!(after.iter().all(|t| t % 2 == 0), "{name}: {after:?}");
        let mut dedup = after.clone();
        dedup.dedup();
        assert_eq!(&dedup, after, "{name}");
        assert!(
            after.starts_with(before),
            "{name}: {before:?} then {after:?}"
        );
        // Nothing fired for the ticks missed while down, but the latest
        // one (`late`, which lies after `restarted - 2`).
        let last = *before.last().unwrap();
        let missed: Vec<_> = after
            .iter()
            .filter(|t| **t > last && **t <= restarted - 2)
            .collect();
        assert!(
            missed.is_empty(),
            "{name}: fired while down: {missed:?} ({after:?}, restart {restarted})"
        );
    }
    assert!(
        log.contains("Missed") && log.contains("of `late` while no weft ran; running the latest"),
        "{log}"
    );
    assert!(
        log.contains("of `skip` while no weft ran; skipped"),
        "{log}"
    );
    // The catch-up instance is the one the log names.
    let named = log
        .lines()
        .find_map(|l| l.split("running the latest, ").nth(1))
        .unwrap()
        .trim();
    let out = w.exec(&["status", named]);
    assert_eq!(out.code, Some(0), "{named}: {}", out.stderr);
    // Each instance ran the scenario with the tick time in its input.
    let status: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["output"]["a"], 20, "{status}");
}
