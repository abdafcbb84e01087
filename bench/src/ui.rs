//! `--only ui`: what the web UI asks of a server holding many instances.
//! One `weft serve` on its embedded journal gets N instances (10,000; 1,000
//! with `--quick`) through the batch API, runs them to their end, then
//! each of the UI's requests is timed, 50 times: the page itself, the
//! workflows page (which counts instances by status), the first page of
//! the instance list (all, and filtered by status), one instance with its
//! history (its page and timeline), and `/metrics`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::report::{Report, percentile};

const SAMPLES: usize = 50;

pub fn ui(weft: &Path, n: usize, r: &mut Report) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (toml, cache) = crate::hosts::rust_config(dir.path())?;
    let err = dir.path().join("serve.err");
    let mut child = Command::new(weft)
        .args(["serve", "--config", toml.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0"])
        .env("WEFT_DATA_DIR", dir.path().join("data"))
        .env("WEFT_CACHE_DIR", &cache)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let result = (|| -> Result<()> {
        let url = crate::hosts::served_url(&err)?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .new_agent();
        let get = |path: &str| -> Result<String> {
            Ok(agent
                .get(format!("{url}{path}"))
                .call()
                .with_context(|| format!("GET {path}"))?
                .body_mut()
                .read_to_string()?)
        };
        for chunk in 0..n.div_ceil(100) {
            let batch: Vec<Value> = (chunk * 100..((chunk + 1) * 100).min(n))
                .map(|i| json!({"id": format!("i{i:05}"), "params": {"scenario": "basic"}}))
                .collect();
            agent
                .post(format!("{url}/v1/workflows/rs/instances/batch"))
                .send(Value::Array(batch).to_string())?;
        }
        let start = Instant::now();
        loop {
            let v: Value = serde_json::from_str(&get("/v1/workflows")?)?;
            if v["workflows"][0]["counts"]["complete"].as_u64() == Some(n as u64) {
                break;
            }
            if start.elapsed() > Duration::from_secs(600) {
                bail!("the instances did not complete: {v}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let id = format!("i{:05}", n / 2);
        let pages = [
            ("the page (/)", "/".to_owned()),
            ("workflows with counts", "/v1/workflows".to_owned()),
            ("instances, first page", "/v1/instances?limit=50".to_owned()),
            (
                "instances by status, first page",
                "/v1/instances?status=complete&limit=50".to_owned(),
            ),
            ("one instance", format!("/v1/instances/{id}")),
            (
                "its history (timeline)",
                format!("/v1/instances/{id}/history"),
            ),
            ("/metrics", "/metrics".to_owned()),
        ];
        let note = format!("{n} instances, embedded journal");
        for (what, path) in pages {
            let mut ms = Vec::with_capacity(SAMPLES);
            for _ in 0..SAMPLES {
                let t = Instant::now();
                get(&path)?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let p50 = percentile(&mut ms, 0.5);
            let p99 = percentile(&mut ms, 0.99);
            r.add("UI", "rs", &format!("{what} p50"), p50, "ms", &note);
            r.add("UI", "rs", &format!("{what} p99"), p99, "ms", &note);
        }
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}
