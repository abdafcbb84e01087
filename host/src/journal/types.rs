//! The records weft keeps in its journal, and their byte encoding.
//!
//! Every value is stored as one format-version byte followed by JSON. A
//! reader that meets another version refuses it with
//! [`JournalError::Format`] instead of misreading it.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::JournalError;

/// The version byte in front of every stored value.
pub const FORMAT_VERSION: u8 = 1;

/// Milliseconds since the Unix epoch.
pub type UnixMs = u64;

/// Current wall-clock time in milliseconds since the Unix epoch.
pub fn now_ms() -> UnixMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Time left until `at` (zero when it has passed), to the microsecond, so
/// that a timer set from it fires at `at` and not up to a millisecond late.
pub fn until_ms(at: UnixMs) -> std::time::Duration {
    (std::time::UNIX_EPOCH + std::time::Duration::from_millis(at))
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    serde_json::to_writer(&mut out, value).expect("journal records serialize");
    out
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, JournalError> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => {
            serde_json::from_slice(rest).map_err(|e| JournalError::Format(e.to_string()))
        }
        Some((v, _)) => Err(JournalError::Format(format!(
            "journal record has format version {v}, this weft reads version {FORMAT_VERSION}"
        ))),
        None => Err(JournalError::Format("empty journal record".into())),
    }
}

/// Lifecycle state of an instance (Cloudflare Workflows' names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Running,
    Paused,
    Waiting,
    Errored,
    Terminated,
    Complete,
}

impl Status {
    /// Whether the instance has ended for good.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Errored | Status::Terminated | Status::Complete
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Waiting => "waiting",
            Status::Errored => "errored",
            Status::Terminated => "terminated",
            Status::Complete => "complete",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase())).map_err(|_| {
            format!(
                "unknown status `{s}` (expected queued, running, paused, waiting, errored, terminated or complete)"
            )
        })
    }
}

/// An error as users see it: a type name and a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub name: String,
    pub message: String,
    /// Where it came from, when the workflow said (a Python traceback
    /// trimmed to the workflow's own code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl ErrorInfo {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            traceback: None,
        }
    }
}

impl std::fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// One workflow instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: String,
    pub workflow: String,
    /// `sha256:<hex>` of the component the instance is pinned to.
    pub digest: String,
    /// The input payload (JSON text).
    pub input: Box<RawValue>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub created_ms: UnixMs,
    pub updated_ms: UnixMs,
    /// The instance that started this one as a child workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The W3C trace context the instance was created under (a create
    /// request's `traceparent`): the parent of its runs' trace spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Seed of the guest's randomness outside steps, fixed at creation so
    /// that every replay reads the same bytes.
    pub seed: u64,
}

/// How a step attempt ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum AttemptResult {
    /// The step finished with this value.
    Ok { value: serde_json::Value },
    /// The attempt failed. With `retry_ms` the step is retried at that time;
    /// without it the failure is final.
    #[serde(rename_all = "camelCase")]
    Err {
        error: ErrorInfo,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_ms: Option<UnixMs>,
    },
}

/// How an event wait ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum WaitResult {
    Delivered { event: EventRecord },
    TimedOut,
}

/// How a child workflow ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum ChildResult {
    Ok { value: serde_json::Value },
    Err { error: ErrorInfo },
}

/// An event sent to an instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRecord {
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: serde_json::Value,
    pub timestamp_ms: UnixMs,
}

/// A clock value the guest read outside a step. (Randomness needs no
/// entries: it comes from a generator seeded by [`InstanceRecord::seed`].)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "camelCase")]
pub enum Nondet {
    WallClock { nanos: u64 },
    MonotonicClock { nanos: u64 },
}

/// One journal entry. Entries of an instance are ordered by a sequence
/// number; a durable call is identified by `name` and occurrence `n`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Entry {
    /// One attempt of a step, written when the attempt ended.
    #[serde(rename_all = "camelCase")]
    Step {
        name: String,
        n: u32,
        attempt: u32,
        started_ms: UnixMs,
        ended_ms: UnixMs,
        #[serde(flatten)]
        result: AttemptResult,
    },
    /// A durable sleep, written when it started.
    #[serde(rename_all = "camelCase")]
    Sleep {
        name: String,
        n: u32,
        started_ms: UnixMs,
        wake_ms: UnixMs,
    },
    /// An event wait, written when it started.
    #[serde(rename_all = "camelCase")]
    WaitStart {
        name: String,
        n: u32,
        event_type: String,
        started_ms: UnixMs,
        deadline_ms: UnixMs,
    },
    /// The end of an event wait.
    #[serde(rename_all = "camelCase")]
    WaitEnd {
        name: String,
        n: u32,
        ended_ms: UnixMs,
        #[serde(flatten)]
        result: WaitResult,
    },
    /// A child workflow, written when it was started.
    #[serde(rename_all = "camelCase")]
    ChildStart {
        name: String,
        n: u32,
        workflow: String,
        child_id: String,
        started_ms: UnixMs,
    },
    /// The end of a child workflow: its output or error.
    #[serde(rename_all = "camelCase")]
    ChildEnd {
        name: String,
        n: u32,
        ended_ms: UnixMs,
        #[serde(flatten)]
        result: ChildResult,
    },
    /// A clock or random value read by the workflow body.
    Nondet {
        #[serde(flatten)]
        value: Nondet,
    },
}

impl Entry {
    /// The durable call this entry belongs to, if any.
    pub fn call(&self) -> Option<(&str, u32)> {
        match self {
            Entry::Step { name, n, .. }
            | Entry::Sleep { name, n, .. }
            | Entry::WaitStart { name, n, .. }
            | Entry::WaitEnd { name, n, .. }
            | Entry::ChildStart { name, n, .. }
            | Entry::ChildEnd { name, n, .. } => Some((name, *n)),
            Entry::Nondet { .. } => None,
        }
    }
}

/// Parses JSON text into a raw value, validating it.
pub fn raw_json(text: &str) -> Result<Box<RawValue>, serde_json::Error> {
    RawValue::from_string(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_versions_are_checked() {
        let e = Entry::Step {
            name: "a".into(),
            n: 2,
            attempt: 1,
            started_ms: 1,
            ended_ms: 2,
            result: AttemptResult::Err {
                error: ErrorInfo::new("E", "boom"),
                retry_ms: Some(10),
            },
        };
        let bytes = encode(&e);
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: Entry = decode(&bytes).unwrap();
        assert!(matches!(
            back,
            Entry::Step {
                n: 2,
                result: AttemptResult::Err {
                    retry_ms: Some(10),
                    ..
                },
                ..
            }
        ));
        let mut other = bytes.clone();
        other[0] = 9;
        let err = decode::<Entry>(&other).unwrap_err();
        assert!(err.to_string().contains("format version 9"), "{err}");
    }
}
