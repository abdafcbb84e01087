//! The command line's contract: exit codes, clear errors for bad input,
//! listing and inspection.

use crate::common::*;

#[test]
fn bad_input_gets_a_clear_error() {
    let w = Weft::new();
    let d = w.exec(&["run", SCENARIOS, "--input", "{not json"]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("input is not valid JSON"), "{}", d.stderr);

    let d = w.exec(&["run", SCENARIOS, "--id", "bad id!", "--input", "{}"]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("invalid instance id"), "{}", d.stderr);

    let big = w.dir.path().join("big.json");
    std::fs::write(&big, format!("\"{}\"", "x".repeat(1 << 20))).unwrap();
    let big_arg = format!("@{}", big.display());
    let d = w.exec(&["run", SCENARIOS, "--input", &big_arg]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("1 MiB"), "{}", d.stderr);

    // The same limit holds for event payloads.
    let mut run = w.spawn_scenario("run", "ev", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event"));
    let d = w.exec(&["send-event", "ev", "second", &big_arg]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("1 MiB"), "{}", d.stderr);
    run.kill9();
}

#[test]
fn files_that_are_not_workflows_are_refused_before_anything_runs() {
    let w = Weft::new();
    let junk = w.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello").unwrap();
    let d = w.exec(&["run", junk.to_str().unwrap()]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("not a WebAssembly file"), "{}", d.stderr);

    let core = w.dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let d = w.exec(&["run", core.to_str().unwrap()]);
    assert!(
        d.stderr
            .contains("core WebAssembly module, not a component"),
        "{}",
        d.stderr
    );

    let d = w.exec(&["run", "/nonexistent/x.wasm"]);
    assert!(
        d.stderr.contains("reading /nonexistent/x.wasm"),
        "{}",
        d.stderr
    );
    let list = w.exec(&["list", "--json"]);
    assert!(
        list.ok() && list.stdout.trim().is_empty(),
        "no instance was created"
    );
}

#[test]
fn unknown_instances_are_reported() {
    let w = Weft::new();
    w.scenario("x", r#"{"scenario":"basic"}"#, &[]).json();
    for args in [
        &["status", "nope"][..],
        &["history", "nope"],
        &["resume", "nope"],
        &["send-event", "nope", "t", "1"],
    ] {
        let d = w.exec(args);
        assert_eq!(d.code, Some(1), "{args:?}");
        assert!(
            d.stderr.contains("no instance with id `nope`"),
            "{args:?}: {}",
            d.stderr
        );
    }
    // Events to a finished instance are refused, not silently dropped.
    let d = w.exec(&["send-event", "x", "t", "1"]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("is complete"), "{}", d.stderr);
    let d = w.exec(&["send-event", "x", "t", "{bad"]);
    assert!(d.stderr.contains("not valid JSON"), "{}", d.stderr);
}

#[test]
fn list_filters_by_status_and_status_inspects_while_running() {
    let w = Weft::new();
    w.scenario("done", r#"{"scenario":"basic"}"#, &[]).json();
    assert_eq!(
        w.scenario("bad", r#"{"scenario":"fail"}"#, &[]).code,
        Some(1)
    );
    let mut run = w.spawn_scenario("run", "live", r#"{"scenario":"events"}"#);
    run.wait_stderr("the wait", |t| t.contains("Waiting for event"));
    // The running process holds the journal; these go through its socket.
    let live = w.status("live");
    assert_eq!(
        live["status"], "waiting",
        "a wait of 24 h is evicted at once"
    );
    let d = w.exec(&["list", "--status", "errored", "--json"]);
    assert!(d.ok(), "{}", d.stderr);
    let ids: Vec<serde_json::Value> = d
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0]["id"], "bad");
    let table = w.exec(&["list"]);
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 4);
    // A second executing process is refused with a clear message.
    let d = w.scenario("other", r#"{"scenario":"basic"}"#, &[]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("in use by another weft process"),
        "{}",
        d.stderr
    );
    run.kill9();
}

/// `weft history ID | head -1` and the like: a reader that goes away ends
/// the command quietly with exit 0, on every verb that prints.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let w = Weft::new();
    w.scenario("p", r#"{"scenario":"long","n":30,"ms":0}"#, &[])
        .json();
    for verb in [
        &["history", "p"][..],
        &["list"],
        &["list", "--json"],
        &["status", "p"],
        &["check"],
    ] {
        let mut child = w
            .cmd(verb)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes its first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{verb:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{verb:?}: {stderr}");
    }
}

/// From the moment `weft run` says it started an instance, `weft
/// send-event` works, even while the component is still being compiled:
/// the run is stopped (SIGSTOP) right after it says so, for longer than
/// send-event used to wait for an answer, and the event still arrives.
#[test]
fn events_sent_while_the_run_still_loads_are_kept() {
    let w = Weft::new();
    let mut run = w
        .cmd(&[
            "run",
            SCENARIOS,
            "--id",
            "ev",
            "--input",
            r#"{"scenario":"events"}"#,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr until the instance is started.
    let mut stderr = std::io::BufReader::new(run.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("Started") {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "the run ended before starting:\n{seen}");
        seen.push_str(&line);
    }
    assert!(!seen.contains("Loaded"), "`Started` comes before loading");
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &run.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    let sender = w.spawn("send", &["send-event", "ev", "first", r#"{"by":"ada"}"#]);
    std::thread::sleep(std::time::Duration::from_secs(6));
    signal("-CONT");
    let sent = sender.finish();
    assert!(
        sent.ok(),
        "send-event while the run was held: {}",
        sent.stderr
    );
    let d = w.exec(&["send-event", "ev", "second", "2"]);
    assert!(d.ok(), "{}", d.stderr);
    let out = run.wait_with_output().unwrap();
    let rest = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{rest}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(rest.trim()).unwrap(),
        serde_json::json!({"first": "ada", "second": 2, "type": "first"})
    );
}

/// After `kill -9` of `weft run`, `status` and `list` say the instance is
/// interrupted and how to continue it.
#[test]
fn an_instance_whose_run_was_killed_says_so() {
    let w = Weft::new();
    let mut run = w.spawn_scenario("run", "nap", r#"{"scenario":"sleep","ms":600000}"#);
    run.wait_stderr("the sleep", |t| t.contains("Sleeping"));
    run.kill9();
    let d = w.exec(&["status", "nap"]);
    assert!(d.ok(), "{}", d.stderr);
    let v: serde_json::Value = serde_json::from_str(&d.stdout).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(d.stderr.contains("weft resume nap"), "{}", d.stderr);
    let d = w.exec(&["list"]);
    assert!(d.stdout.contains("interrupted"), "{}", d.stdout);
    // A finished instance is not interrupted.
    w.scenario("done", r#"{"scenario":"basic"}"#, &[]).json();
    let v = w.status("done");
    assert!(v.get("interrupted").is_none(), "{v}");
}

/// `weft run --id ID` refuses an id that exists with another workflow or
/// another input; the same workflow and input continue it (idempotent).
#[test]
fn run_with_an_existing_id_of_another_workflow_or_input_is_refused() {
    let w = Weft::new();
    let input = r#"{"scenario":"basic"}"#;
    let first = w.scenario("mine", input, &[]).json();
    let d = w.scenario("mine", input, &["--name", "other"]);
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    assert!(d.stderr.contains("belongs to workflow"), "{}", d.stderr);
    assert!(d.stdout.is_empty(), "{}", d.stdout);
    let d = w.scenario("mine", r#"{"scenario":"fail"}"#, &[]);
    assert_eq!(d.code, Some(1), "{}", d.stderr);
    assert!(d.stderr.contains("another input"), "{}", d.stderr);
    assert_eq!(w.scenario("mine", input, &[]).json(), first);
}

/// Compiled components are cached once per user, not per data dir: a
/// second data dir loads the component the first one compiled.
#[test]
fn compiled_components_are_cached_per_user() {
    use std::os::unix::fs::MetadataExt;
    let w = Weft::new();
    let home = w.dir.path().join("home");
    let run = |data: &str| {
        let d = Done::from(
            w.cmd(&["run", SCENARIOS, "--input", r#"{"scenario":"basic"}"#])
                .env_remove("WEFT_CACHE_DIR")
                .env_remove("XDG_CACHE_HOME")
                .env("HOME", &home)
                .env("WEFT_DATA_DIR", w.dir.path().join(data))
                .output()
                .unwrap(),
        );
        assert!(d.ok(), "{}", d.stderr);
    };
    let cache = home.join(".cache/weft/compiled");
    let cached = || -> Vec<(std::path::PathBuf, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let ino = std::fs::metadata(&p).unwrap().ino();
                (p, ino)
            })
            .collect();
        v.sort();
        v
    };
    run("one");
    let first = cached();
    assert_eq!(first.len(), 1, "{first:?}");
    run("two");
    // The same file, not compiled and written again.
    assert_eq!(cached(), first);
    assert!(!w.dir.path().join("two/cache").exists());
}
