//! What a workflow may do: the hosts it may reach, its secrets, and its
//! resource limits. Configured per workflow in `weft.toml` (or by flags of
//! `weft run`), enforced by the host.

use std::collections::BTreeMap;

use crate::journal::ErrorInfo;

/// Resource limits of one instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory of the instance, in bytes.
    pub memory_bytes: usize,
    /// Step calls per instance.
    pub max_steps: u64,
    /// CPU time of the workflow body (outside step bodies) per run or
    /// replay, in milliseconds; an infinite loop ends here.
    pub body_cpu_ms: u64,
    /// CPU time of one step attempt's body, in milliseconds; waiting (on
    /// HTTP, a timer) is not CPU time. The wall-clock limit is the step's
    /// `timeout`.
    pub step_cpu_ms: u64,
}

impl Limits {
    /// The limits given, the defaults for the others.
    pub fn with(
        memory_mb: Option<usize>,
        max_steps: Option<u64>,
        body_cpu_ms: Option<u64>,
        step_cpu_ms: Option<u64>,
    ) -> Limits {
        let d = Limits::default();
        Limits {
            memory_bytes: memory_mb.map_or(d.memory_bytes, |m| m << 20),
            max_steps: max_steps.unwrap_or(d.max_steps),
            body_cpu_ms: body_cpu_ms.unwrap_or(d.body_cpu_ms),
            step_cpu_ms: step_cpu_ms.unwrap_or(d.step_cpu_ms),
        }
    }
}

/// The value of a secret kept in the host's environment variable `var`
/// (`--secret NAME=VAR`, `{ env = "VAR" }` in weft.toml).
pub fn secret_from_env(var: &str) -> Result<String, String> {
    std::env::var(var).map_err(|_| format!("the environment variable {var} is not set"))
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: crate::defaults::MEMORY_MB << 20,
            max_steps: crate::defaults::MAX_STEPS,
            body_cpu_ms: crate::defaults::BODY_CPU_MS,
            step_cpu_ms: crate::defaults::STEP_CPU_MS,
        }
    }
}

/// Whether instances of a workflow get a component instance each
/// (`instance`, the default) or run as tasks of a few shared ones
/// (`shared`: module-level state is shared between runs, the memory
/// limit is per shared instance, and a trap takes down every run in it,
/// which are replayed elsewhere; only the run that caused it is charged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    #[default]
    Instance,
    Shared,
}

/// The policy of a workflow.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Hosts `fetch` may reach: exact names, `*.suffix`, or `*`.
    pub allow_hosts: Vec<String>,
    /// Secret and config values, by name.
    pub secrets: BTreeMap<String, String>,
    pub limits: Limits,
    pub isolation: Isolation,
}

/// Secrets shorter than this are not redacted (too likely to match
/// ordinary text).
const MIN_REDACT: usize = 4;

impl Policy {
    /// Whether `fetch` may reach `host`.
    pub fn allows(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        self.allow_hosts.iter().any(|a| {
            let a = a.to_ascii_lowercase();
            a == "*"
                || a == host
                || a.strip_prefix("*.")
                    .is_some_and(|s| host.ends_with(&format!(".{s}")))
        })
    }

    /// Replaces every secret value in `text` by `[redacted:NAME]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.secrets {
            if value.len() >= MIN_REDACT && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[redacted:{name}]"));
            }
        }
        out
    }

    /// Redacts an error's message.
    pub fn redact_error(&self, e: ErrorInfo) -> ErrorInfo {
        ErrorInfo {
            message: self.redact(&e.message),
            traceback: e.traceback.map(|t| self.redact(&t)),
            name: e.name,
        }
    }

    /// Whether any secret appears in `text`.
    pub fn leaks(&self, text: &str) -> bool {
        self.secrets
            .values()
            .any(|v| v.len() >= MIN_REDACT && text.contains(v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_and_redaction() {
        let p = Policy {
            allow_hosts: vec!["127.0.0.1".into(), "*.example.com".into()],
            secrets: [("KEY".to_owned(), "s3cr3t-value".to_owned())].into(),
            limits: Limits::default(),
            isolation: Isolation::Instance,
        };
        assert!(p.allows("127.0.0.1"));
        assert!(p.allows("api.example.com"));
        assert!(!p.allows("example.com.evil.org"));
        assert!(!p.allows("localhost"));
        assert_eq!(p.redact("token=s3cr3t-value;"), "token=[redacted:KEY];");
        assert!(p.leaks("xs3cr3t-valuex"));
    }
}
