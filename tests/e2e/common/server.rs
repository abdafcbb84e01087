//! A `weft serve` process for tests, and a small HTTP client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{PATIENCE, Running, Weft};

/// A running server.
pub struct Server {
    pub run: Running,
    pub url: String,
    pub config: PathBuf,
}

impl Weft {
    /// Writes `toml` as weft.toml and starts `weft serve` on a free port.
    pub fn serve(&self, name: &str, toml: &str, extra: &[&str]) -> Server {
        let config = self.dir.path().join("weft.toml");
        std::fs::write(&config, toml).unwrap();
        self.serve_config(name, config, extra)
    }

    pub fn serve_config(&self, name: &str, config: PathBuf, extra: &[&str]) -> Server {
        self.serve_config_env(name, config, extra, &[])
    }

    /// [`Weft::serve_config`] with environment variables set for the server.
    pub fn serve_config_env(
        &self,
        name: &str,
        config: PathBuf,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut args = vec![
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut run = self.spawn_env(name, &args, env);
        run.wait_stderr("the server", |t| t.contains("Serving http://"));
        let text = run.stderr_text();
        let url = text
            .lines()
            .find_map(|l| l.split("Serving ").nth(1))
            .unwrap()
            .trim()
            .to_owned();
        Server { run, url, config }
    }
}

/// One HTTP exchange: (status, JSON body or Null).
pub fn http(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match method {
        "GET" | "DELETE" => {
            let mut r = if method == "GET" {
                agent.get(url)
            } else {
                agent.delete(url)
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        _ => {
            let mut r = match method {
                "POST" => agent.post(url),
                "PATCH" => agent.patch(url),
                _ => agent.put(url),
            };
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(body.unwrap_or(""))
        }
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

impl Server {
    pub fn get(&self, path: &str) -> (u16, Value) {
        http("GET", &format!("{}{path}", self.url), None, None)
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        http("POST", &format!("{}{path}", self.url), Some(body), None)
    }

    pub fn patch(&self, path: &str, body: &str) -> (u16, Value) {
        http("PATCH", &format!("{}{path}", self.url), Some(body), None)
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        http("DELETE", &format!("{}{path}", self.url), None, None)
    }

    /// Polls an instance until `pred` holds on it.
    pub fn wait_instance(
        &self,
        workflow: &str,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (code, v) = self.get(&format!("/v1/workflows/{workflow}/instances/{id}"));
            if code == 200 && pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "timed out waiting for {id} to be {what}: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_status(&self, workflow: &str, id: &str, status: &str) -> Value {
        self.wait_instance(workflow, id, status, |v| v["status"] == status)
    }
}
