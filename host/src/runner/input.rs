//! Checks of what callers hand in: instance ids, event types, payloads.

use crate::journal::{EventRecord, MAX_PAYLOAD_BYTES, now_ms, raw_json};

/// Checks an instance id against `^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$`.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 100
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// A fresh random instance id.
pub fn new_id() -> String {
    let v: u64 = rand::random();
    format!("{v:016x}")
}

/// Input a caller got wrong: a bad id, event type or payload.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// Why the runtime refused a request (create an instance, send an event).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Builds an event from its type and JSON payload, checking both.
pub fn make_event(event_type: &str, payload: &str) -> Result<EventRecord, InvalidInput> {
    if event_type.is_empty() || event_type.len() > 100 {
        return Err(InvalidInput(
            "an event type must be 1 to 100 characters".into(),
        ));
    }
    Ok(EventRecord {
        event_type: event_type.to_owned(),
        payload: serde_json::from_str(parse_payload("event payload", payload)?.get())
            .map_err(|e| InvalidInput(format!("the event payload is not valid JSON: {e}")))?,
        timestamp_ms: now_ms(),
    })
}

/// Validates a JSON payload of at most 1 MiB.
pub fn parse_payload(
    what: &str,
    text: &str,
) -> Result<Box<serde_json::value::RawValue>, InvalidInput> {
    if text.len() > MAX_PAYLOAD_BYTES {
        return Err(InvalidInput(format!(
            "the {what} is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
            text.len()
        )));
    }
    raw_json(text.trim()).map_err(|e| InvalidInput(format!("the {what} is not valid JSON: {e}")))
}
