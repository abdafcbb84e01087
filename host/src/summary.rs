//! [`InstanceSummary`]: what every surface (the HTTP API, the control
//! socket, `weft status` and `weft list`) says of an instance.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::journal::{ErrorInfo, InstanceRecord, Journal, JournalError, Status};

/// An instance, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSummary {
    pub id: String,
    pub workflow: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The digest of the component the instance is pinned to.
    pub version: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Unfinished, not paused, and no weft process runs it: it goes on only
    /// with `weft resume` (after a `kill -9` of `weft run`, say).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

impl InstanceSummary {
    /// The summary of `rec`; `live` says whether a process runs it.
    pub fn of(rec: &InstanceRecord, live: bool) -> InstanceSummary {
        InstanceSummary {
            id: rec.id.clone(),
            workflow: rec.workflow.clone(),
            status: rec.status,
            output: rec.output.clone(),
            error: rec.error.clone(),
            version: rec.digest.clone(),
            created_ms: rec.created_ms,
            updated_ms: rec.updated_ms,
            interrupted: !live && !rec.status.is_final() && rec.status != Status::Paused,
        }
    }
}

/// An instance's journal as `weft history` prints it and the API serves
/// it: each entry with its `seq`, then the events buffered for it (`kind`
/// `bufferedEvent`).
pub async fn history(journal: &Journal, id: &str) -> Result<Vec<serde_json::Value>, JournalError> {
    fn object(v: &impl Serialize) -> Result<serde_json::Value, JournalError> {
        // RawValue fields serialize to text only, not to a Value directly.
        let text = serde_json::to_string(v).map_err(|e| JournalError::Format(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| JournalError::Format(e.to_string()))
    }
    let mut rows = Vec::new();
    for (seq, entry) in journal.entries(id).await? {
        let mut v = object(&entry)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("seq".into(), seq.into());
        }
        rows.push(v);
    }
    for event in journal.inbox(id).await? {
        let mut v = object(&event)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("kind".into(), "bufferedEvent".into());
        }
        rows.push(v);
    }
    Ok(rows)
}
