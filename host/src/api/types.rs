//! The API's request and response bodies, as serde types.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::journal::{AttemptResult, Entry, ErrorInfo};
use crate::summary::InstanceSummary;

/// `GET /v1/workflows`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Workflows {
    pub workflows: Vec<WorkflowInfo>,
}

/// A deployed workflow.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkflowInfo {
    pub name: String,
    /// The deployed version (digest), which new instances take.
    pub version: String,
    /// The deployed version first, then the others instances still run on.
    pub versions: Vec<String>,
    pub concurrency: Option<usize>,
    /// How many of its instances are in each status (statuses with none
    /// are left out).
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// An instance with its steps: `GET .../instances/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceDetail {
    #[serde(flatten)]
    pub summary: InstanceSummary,
    /// The input the instance was created with.
    pub input: Box<serde_json::value::RawValue>,
    pub steps: Vec<StepSummary>,
}

/// One step occurrence of an instance.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    pub name: String,
    /// Which occurrence of the name, from 1.
    pub count: u32,
    pub started_ms: u64,
    pub attempts: u32,
    /// `complete`, `retrying` or `errored`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl StepSummary {
    /// The steps of a journal, one per step occurrence, in order of their
    /// first attempt.
    pub fn of(entries: &[(u64, Entry)]) -> Vec<StepSummary> {
        let mut rows: Vec<StepSummary> = Vec::new();
        let mut index = std::collections::HashMap::new();
        for (_, e) in entries {
            let Entry::Step {
                name,
                n,
                attempt,
                started_ms,
                ended_ms,
                result,
            } = e
            else {
                continue;
            };
            let i = *index.entry((name.clone(), *n)).or_insert_with(|| {
                rows.push(StepSummary {
                    name: name.clone(),
                    count: n + 1,
                    started_ms: *started_ms,
                    attempts: 0,
                    status: String::new(),
                    ended_ms: None,
                    output: None,
                    error: None,
                });
                rows.len() - 1
            });
            let row = &mut rows[i];
            row.attempts = *attempt;
            match result {
                AttemptResult::Ok { value } => {
                    row.status = "complete".into();
                    row.ended_ms = Some(*ended_ms);
                    row.output = Some(value.clone());
                }
                AttemptResult::Err { error, retry_ms } => {
                    row.error = Some(error.clone());
                    if retry_ms.is_some() {
                        row.status = "retrying".into();
                    } else {
                        row.status = "errored".into();
                        row.ended_ms = Some(*ended_ms);
                    }
                }
            }
        }
        rows
    }
}

/// A page of instances: `GET .../instances`.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstancePage {
    pub instances: Vec<InstanceSummary>,
    /// Give it as `cursor` for the next page; `null` on the last.
    pub cursor: Option<String>,
}

/// Instances created by a batch.
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    pub instances: Vec<InstanceSummary>,
}

/// `{"id"?, "params"?}`: one instance to create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    pub id: Option<String>,
    #[serde(default)]
    pub params: Value,
}

/// `?status=&prefix=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    /// Only instances whose id starts with this.
    pub prefix: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// `{"status": "pause" | "resume" | "terminate" | "restart", "from"?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusBody {
    pub status: String,
    pub from: Option<FromStep>,
}

/// Where a restart starts: occurrence `count` (from 1) of step `name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromStep {
    pub name: String,
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// `{"id"}` or `{"all": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeBody {
    pub id: Option<String>,
    #[serde(default)]
    pub all: bool,
}

/// What an upgrade did.
#[derive(Debug, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// The version instances were moved to.
    pub version: String,
    pub upgraded: Vec<String>,
    pub refused: Vec<Refused>,
}

/// An instance an upgrade left on its version, and why.
#[derive(Debug, Serialize, Deserialize)]
pub struct Refused {
    pub id: String,
    pub reason: String,
}

/// An instance's journal, as `weft history` prints it: one object per
/// entry (with its `seq`), then the events buffered for it (`kind`
/// `bufferedEvent`).
#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<Value>,
}
