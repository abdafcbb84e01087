//! Every example, built and run end to end as its README says, with the
//! events it asks for, and a `kill -9` midway where it matters.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::common::js::{counter, js_component_at};
use crate::common::python::py_component_at;
use crate::common::*;
use serde_json::json;

fn example(path: &str) -> String {
    py_component_at(&repo_root().join("examples").join(path), None)
}

#[test]
fn ml_training_waits_for_a_human_when_the_loss_stalls() {
    let c = example("ml-training/app.py");
    let w = Weft::new();
    let input =
        r#"{"lr": 0.5, "poll": "20 milliseconds", "min_improvement": 0.01, "max_epochs": 60}"#;
    let stalls = |t: &str| t.matches("loss stopped improving").count();
    let mut run = w.spawn("run-1", &["run", &c, "--id", "train", "--input", input]);
    run.wait_stderr("a few epochs", |t| t.contains("train epoch 2 done"));
    run.kill9();
    let mut run = w.spawn("run-2", &["resume", "train"]);
    run.wait_stderr("the first stall", |t| stalls(t) >= 1);
    assert!(
        w.exec(&["send-event", "train", "adjust", r#"{"lr": 0.1}"#])
            .ok()
    );
    run.wait_stderr("the second stall", |t| stalls(t) >= 2);
    assert!(
        w.exec(&["send-event", "train", "adjust", r#"{"stop": true}"#])
            .ok()
    );
    let out = run.finish().json();
    let history: Vec<f64> = out["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(history.len() >= 3, "{out}");
    assert!(
        history.last().unwrap() < &history[0],
        "the loss went down: {history:?}"
    );
    let h = w.history("train");
    let epoch0 = entries(&h, "step")
        .iter()
        .filter(|s| s["name"] == "train epoch 0")
        .count();
    assert_eq!(
        epoch0, 1,
        "a finished epoch is not trained again after kill -9"
    );
}

#[test]
fn data_pipeline_retries_a_flaky_source_and_rolls_back_a_failed_publish() {
    let c = example("data-pipeline/app.py");
    let w = Weft::new();
    let d = w.exec(&["run", &c, "--id", "ok", "--input", "{}"]);
    let out = d.json();
    assert_eq!(out["status"], "loaded");
    assert_eq!(out["rejected"], json!([2]));
    assert_eq!(out["rows"].as_array().unwrap().len(), 2);
    assert_eq!(
        d.stderr.matches("Retry ingest_catalog").count(),
        2,
        "{}",
        d.stderr
    );
    let h = w.history("ok");
    assert_eq!(
        entries(&h, "step")
            .iter()
            .filter(|s| s["name"] == "ingest_orders")
            .count(),
        1
    );

    let d = w.exec(&[
        "run",
        &c,
        "--id",
        "bad",
        "--input",
        r#"{"fail_publish": true}"#,
    ]);
    let out = d.json();
    assert_eq!(out["status"], "rolled back");
    let undo1 = d.stderr.find("UNDO batch 1").expect("batch 1 undone");
    let undo0 = d.stderr.find("UNDO batch 0").expect("batch 0 undone");
    assert!(undo1 < undo0, "newest first");
    let h = w.history("bad");
    let names: Vec<_> = entries(&h, "step")
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.ends_with(&[
            "publish".into(),
            "load batch 1:undo".into(),
            "load batch 0:undo".into()
        ]),
        "{names:?}"
    );
}

struct Shop {
    child: Child,
    url: String,
}

impl Drop for Shop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_shop() -> Shop {
    let mut child = Command::new("python3")
        .arg(repo_root().join("examples/grocery-agent/shop.py"))
        .arg("0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    Shop { child, url }
}

#[test]
fn grocery_agent_orders_once_after_approval_even_across_a_crash() {
    let c = example("grocery-agent/app.py");
    let shop = start_shop();
    let w = Weft::new();
    let input =
        json!({"shop": shop.url, "request": "milk, eggs, bread, butter and coffee"}).to_string();
    let mut run = w.spawn(
        "run-1",
        &[
            "run",
            &c,
            "--id",
            "g",
            "--input",
            &input,
            "--allow-host",
            "127.0.0.1",
        ],
    );
    run.wait_stderr("the approval request", |t| {
        t.contains("Waiting for event `approval`")
    });
    assert!(
        run.stderr_text()
            .contains("about to order ['milk', 'eggs', 'bread', 'coffee']"),
        "{}",
        run.stderr_text()
    );
    run.kill9();
    let mut run = w.spawn("run-2", &["resume", "g", "--allow-host", "127.0.0.1"]);
    run.wait_stderr("the replayed wait", |t| t.contains("Replaying"));
    assert!(
        w.exec(&["send-event", "g", "approval", r#"{"approved": true}"#])
            .ok()
    );
    let out = run.finish().json();
    assert_eq!(out["status"], "ordered");
    assert_eq!(out["missing"], json!(["butter"]));
    assert_eq!(out["total"], 12.2);
    let orders = crate::common::server::http("GET", &format!("{}/orders", shop.url), None, None).1;
    assert_eq!(orders.as_array().unwrap().len(), 1, "one order: {orders}");
}

#[test]
fn a_python_parent_fans_out_to_rust_children() {
    let fanout = example("mixed/fanout.py");
    let w = Weft::new();
    let toml = format!(
        "[workflows.fanout]\ncomponent = {fanout:?}\n\n[workflows.primes]\ncomponent = {:?}\nconcurrency = 2\n",
        weft_test_artifacts::PRIMES
    );
    let s = w.serve("serve", &toml, &[]);
    let d = w.exec(&[
        "create",
        "fanout",
        "--id",
        "count",
        "--params",
        r#"{"limit": 20000, "parts": 4}"#,
    ]);
    assert!(d.ok(), "{}", d.stderr);
    let v = s.wait_status("fanout", "count", "complete");
    assert_eq!(v["output"]["primes"], 2262, "{v}");
    assert_eq!(v["output"]["parts"].as_array().unwrap().len(), 4);
    let all = w.exec(&["list", "--json"]).stdout;
    let children = all
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["workflow"] == "primes")
        .count();
    assert_eq!(children, 4, "one child per part");
    s.run.kill9();
}

#[test]
fn the_typescript_hello_runs_as_its_readme_says() {
    let c = js_component_at(&repo_root().join("examples/hello-ts/app.ts"), None);
    let d = Weft::new().exec(&["run", &c, "--input", r#"{"name": "world"}"#]);
    assert_eq!(
        d.json(),
        json!({"greeting": "Hello, world!", "letters": 10}),
        "{}",
        d.stderr
    );
}

#[test]
fn the_typescript_signup_activates_a_verified_account_across_a_crash() {
    let c = js_component_at(&repo_root().join("examples/signup-ts/app.ts"), None);
    let (url, counts) = counter();
    let w = Weft::new();
    let input = json!({"email": "alice@example.com", "name": "Alice",
        "emailApi": format!("{url}/hit"), "tipsAfter": "300 milliseconds"})
    .to_string();
    let args = [
        "run",
        &c,
        "--id",
        "alice",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
        "--secret",
        "EMAIL_API_KEY=SIGNUP_KEY",
    ];
    let mut run = w.spawn_env("run-1", &args, &[("SIGNUP_KEY", "k-123")]);
    run.wait_stderr("the wait", |t| {
        t.contains("Waiting for event `email-verified`")
    });
    run.kill9();
    let token = steps_named(&w.history("alice"), "make verification token")[0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        w.exec(&[
            "send-event",
            "alice",
            "email-verified",
            &json!({"token": token}).to_string()
        ])
        .ok()
    );
    let resume = [
        "resume",
        "alice",
        "--allow-host",
        "127.0.0.1",
        "--secret",
        "EMAIL_API_KEY=SIGNUP_KEY",
    ];
    let d = Done::from(w.cmd(&resume).env("SIGNUP_KEY", "k-123").output().unwrap());
    assert_eq!(
        d.json(),
        json!({"user": "user-alice", "status": "active"}),
        "{}",
        d.stderr
    );
    let counts = counts.lock().unwrap();
    assert_eq!(
        counts.get("verify"),
        Some(&1),
        "the email was sent once: {counts:?}"
    );
    assert_eq!(counts.get("tips"), Some(&1));
}

#[test]
fn the_example_sources_compile() {
    // Every Python file of the examples, including the shop service that
    // no test imports, at least compiles.
    let root = repo_root();
    for f in [
        "ml-training/app.py",
        "data-pipeline/app.py",
        "grocery-agent/app.py",
        "grocery-agent/shop.py",
        "mixed/fanout.py",
    ] {
        let o = Command::new("python3")
            .args(["-m", "py_compile"])
            .arg(root.join("examples").join(f))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
