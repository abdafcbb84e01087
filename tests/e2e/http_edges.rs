//! The server's edges: tokens, error bodies from every layer (the API,
//! axum, hyper), timeouts on half-open connections, batch limits, and
//! deploys that build with this weft.

use serde_json::{Value, json};

use crate::common::server::http;
use crate::common::*;
use crate::server::rust_only;

#[test]
fn a_token_guards_the_api_and_other_addresses_need_one() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &["--token", "s3cret"]);
    let url = format!("{}/v1/workflows", s.url);
    assert_eq!(http("GET", &url, None, None).0, 401);
    assert_eq!(http("GET", &url, None, Some("wrong")).0, 401);
    assert_eq!(http("GET", &url, None, Some("s3cret")).0, 200);
    assert_eq!(
        http("GET", &format!("{}/healthz", s.url), None, None).0,
        200
    );
    s.run.kill9();
    let cfg = w.dir.path().join("weft.toml");
    let d = w.exec(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--addr",
        "0.0.0.0:0",
    ]);
    assert_eq!(d.code, Some(1));
    assert!(
        d.stderr.contains("not loopback, needs a token"),
        "{}",
        d.stderr
    );
    // An empty token is no token.
    let d = w.exec(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--addr",
        "0.0.0.0:0",
        "--token",
        "",
    ]);
    assert_eq!(d.code, Some(1));
    assert!(d.stderr.contains("the one given is empty"), "{}", d.stderr);
    let d = Done::from(
        w.cmd(&[
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--addr",
            "0.0.0.0:0",
        ])
        .env("WEFT_TOKEN", "")
        .output()
        .unwrap(),
    );
    assert_eq!(d.code, Some(1), "{}", d.stderr);
}

/// Sends raw bytes on a new connection and reads the answer to its end:
/// (status, JSON body).
fn raw(url: &str, request: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every error answer has the documented `{"error": {"code", "message"}}`
/// body, whether the API, axum or hyper gives it; half-open connections
/// are closed after the head timeout.
#[test]
fn the_servers_edges() {
    let w = Weft::new();
    let s = w.serve("serve", &rust_only(), &["--head-timeout", "1s"]);
    let is_error = |(code, v): (u16, Value), want: u16| {
        assert_eq!(code, want, "{v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{code}: {v}"
        );
        v
    };
    let v = is_error(
        http("PUT", &format!("{}/v1/workflows", s.url), Some("{}"), None),
        405,
    );
    assert_eq!(v["error"]["code"], "method_not_allowed");
    is_error(s.get("/v1/workflows/rs/instances?limit=abc"), 400);
    is_error(s.get("/v1/workflows/rs/instances/%FF%FE"), 400);
    // A body over the limit is answered 413 before it is read; the server
    // then reads and discards the rest, so the client, still sending, gets
    // the answer rather than a reset (before: a broken pipe, 40 of 40
    // times under load).
    let big = format!("{{\"params\": \"{}\"}}", "x".repeat(3 << 20));
    let request = format!(
        "POST /v1/workflows/rs/instances HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{big}",
        big.len()
    );
    for _ in 0..5 {
        is_error(raw(&s.url, request.as_bytes()), 413);
    }
    let long = format!("GET /v1/{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let v = is_error(raw(&s.url, long.as_bytes()), 414);
    assert_eq!(v["error"]["code"], "uri_too_long");
    // hyper refuses a head still incomplete once its buffer holds ~400 KiB;
    // it reads in chunks of up to that size, so a head under ~800 KiB can
    // arrive whole first and be served (a 500 KB head was, 1 run in ~20).
    let huge_head = format!(
        "GET /healthz HTTP/1.1\r\nx-big: {}\r\n\r\n",
        "a".repeat(2_000_000)
    );
    is_error(raw(&s.url, huge_head.as_bytes()), 431);
    is_error(raw(&s.url, b"NOT HTTP\0\r\n\r\n"), 400);

    // The batch limit is per instance: three params of 0.9 MiB each.
    let params = "y".repeat(900 << 10);
    let batch: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("big{i}"), "params": {"scenario": "fail", "pad": params}}))
        .collect();
    let (code, v) = s.post(
        "/v1/workflows/rs/instances/batch",
        &Value::Array(batch).to_string(),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["instances"].as_array().unwrap().len(), 3);

    // Connections that send nothing, or half a head, are closed.
    use std::io::{Read, Write};
    let addr = s.url.strip_prefix("http://").unwrap();
    let mut conns: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    for c in &mut conns[..10] {
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .unwrap();
    }
    for c in &mut conns {
        c.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut rest = Vec::new();
        // Ends (closed by the server) instead of timing out.
        c.read_to_end(&mut rest).unwrap();
    }
    s.run.kill9();
}

/// A `build =` command finds the running weft first on its PATH, its output
/// goes to the server's log (stderr), and a restart with unchanged sources
/// deploys no new version.
#[test]
fn deploys_run_their_build_with_this_weft_and_add_no_version_when_unchanged() {
    let w = Weft::new();
    let toml = format!(
        "[workflows.rs]\nbuild = \"weft --version && cp {SCENARIOS} built.wasm\"\ncomponent = \"built.wasm\"\n"
    );
    let config = w.dir.path().join("weft.toml");
    std::fs::write(&config, &toml).unwrap();
    // No weft anywhere on PATH but the one running.
    let serve = |name: &str| {
        let s = w.serve_config_env(name, config.clone(), &[], &[("PATH", "/usr/bin:/bin")]);
        (s.run, s.url)
    };
    let (run, url) = serve("first");
    let err = run.stderr_text();
    assert!(err.contains("weft 0.1.0"), "the build ran this weft: {err}");
    let out = std::fs::read_to_string(&run.stdout).unwrap();
    assert!(!out.contains("weft"), "build output on stdout: {out}");
    let (_, v) = http("GET", &format!("{url}/v1/workflows"), None, None);
    let version = v["workflows"][0]["version"].clone();
    run.kill9();
    let (run, url) = serve("second");
    let (_, v) = http("GET", &format!("{url}/v1/workflows"), None, None);
    assert_eq!(v["workflows"][0]["version"], version);
    assert_eq!(
        v["workflows"][0]["versions"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    run.kill9();
}
