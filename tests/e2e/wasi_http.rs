//! Standard `wasi:http` from step bodies, through a published client
//! (Rust: wstd) and componentize-py's bindings (Python), under `fetch`'s
//! rules: in steps only, to allowed hosts only, secrets redacted from what
//! is journaled, a journaled response never fetched again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use weft_test_artifacts::WASI_HTTP;

use crate::common::python::py_component;
use crate::common::*;
use crate::sandbox::{SECRET, assert_no_secret};

/// A loopback server that answers each request with
/// `<method> auth=<authorization> body=<body>`, and keeps what it was sent.
fn echo_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap_or(0);
                let method = line.split(' ').next().unwrap_or("").to_owned();
                let (mut auth, mut len, mut chunked) = (String::new(), 0usize, false);
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let (k, v) = line.trim_end().split_once(':').unwrap_or(("", ""));
                    match k.to_ascii_lowercase().as_str() {
                        "authorization" => auth = v.trim().to_owned(),
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "transfer-encoding" => chunked = v.trim() == "chunked",
                        _ => {}
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                while chunked {
                    line.clear();
                    reader.read_line(&mut line).unwrap_or(0);
                    let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                    let mut chunk = vec![0; size + 2];
                    let _ = reader.read_exact(&mut chunk);
                    body.extend_from_slice(&chunk[..size]);
                    chunked = size > 0;
                }
                let answer = format!(
                    "{method} auth={auth} body={}",
                    String::from_utf8_lossy(&body)
                );
                s.lock().unwrap().push(answer.clone());
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (url, seen)
}

/// Runs `component` (a GET, a POST with the secret, a refused host, a
/// request outside a step, then a 1.5 s sleep), kills it in the sleep,
/// resumes it, and checks what the server got and what was journaled.
/// Returns the output.
fn run_killed_and_resumed(component: &str) -> Value {
    let w = Weft::new();
    let (url, seen) = echo_server();
    let input = json!({"url": url, "ms": 1500}).to_string();
    let args = [
        "run",
        component,
        "--id",
        "wh",
        "--input",
        &input,
        "--allow-host",
        "127.0.0.1",
        "--secret",
        "API_KEY=TEST_SECRET",
    ];
    let mut run = w.spawn_env("run-0", &args, &[("TEST_SECRET", SECRET)]);
    run.wait_stderr("the sleep", |t| t.contains("Sleeping after"));
    run.kill9();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET auth= body=".to_owned(),
            format!("POST auth=Bearer {SECRET} body=order 42")
        ]
    );
    let d = Done::from(
        w.cmd(&[
            "resume",
            "wh",
            "--allow-host",
            "127.0.0.1",
            "--secret",
            "API_KEY=TEST_SECRET",
        ])
        .env("TEST_SECRET", SECRET)
        .output()
        .unwrap(),
    );
    let out: Value = d.json();
    assert_eq!(seen.lock().unwrap().len(), 2, "nothing was sent again");
    assert_eq!(out["get"], json!([200, "GET auth= body="]));
    assert_eq!(
        out["post"],
        json!([200, "POST auth=Bearer [redacted:API_KEY] body=order 42"])
    );
    let history = w.exec(&["history", "wh"]).stdout;
    assert_no_secret(&w, &[&d.stdout, &d.stderr, &history]);
    out
}

/// A Rust step uses wstd's HTTP client unchanged: a GET, and a POST whose
/// `authorization` header carries a secret, which the server receives and
/// echoes but the journal holds redacted. A host off the allow-list is
/// refused, and so is a request outside a step. After a `kill -9`, the
/// resumed run sends nothing again.
#[test]
fn a_published_wasi_http_client_works_in_rust_steps() {
    let out = run_killed_and_resumed(WASI_HTTP);
    let denied = out["denied"].as_str().unwrap();
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    let outside = out["outside"].as_str().unwrap();
    assert!(outside.contains("outside a step body"), "{outside}");
}

/// The same from Python, with the `wasi:http` bindings componentize-py
/// generates for weft's Python world.
#[test]
fn componentize_pys_wasi_http_works_in_python_steps() {
    let out = run_killed_and_resumed(&py_component("wasi_http", None));
    assert_eq!(out["denied"], "ErrorCode_HttpRequestDenied", "{out}");
    assert_eq!(out["outside"], "ErrorCode_InternalError", "{out}");
}
