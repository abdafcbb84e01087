//! Conversions between the WIT types and the journal's.

use crate::bindings::types::{self as wit, Backoff as WitBackoff};
use crate::journal::{ErrorInfo, UnixMs, WaitResult};
use crate::replay::{Backoff, retry_delay_ms};

pub(super) fn to_wit(e: ErrorInfo) -> wit::ErrorInfo {
    wit::ErrorInfo {
        name: e.name,
        message: e.message,
    }
}

pub(super) fn from_wit(e: wit::ErrorInfo) -> ErrorInfo {
    ErrorInfo::new(e.name, e.message)
}

pub(super) fn wait_result(r: WaitResult) -> Result<wit::Event, wit::WaitError> {
    match r {
        WaitResult::Delivered { event } => Ok(wit::Event {
            event_type: event.event_type,
            payload: event.payload.to_string(),
            timestamp_ms: event.timestamp_ms,
        }),
        WaitResult::TimedOut => Err(wit::WaitError::Timeout),
    }
}

fn backoff(b: WitBackoff) -> Backoff {
    match b {
        WitBackoff::Constant => Backoff::Constant,
        WitBackoff::Linear => Backoff::Linear,
        WitBackoff::Exponential => Backoff::Exponential,
    }
}

/// When the next attempt after failed attempt `attempt` may start, or
/// `None` when the retries are used up.
pub fn next_retry_ms(retries: &wit::RetryPolicy, attempt: u32, now: UnixMs) -> Option<UnixMs> {
    (attempt <= retries.limit).then(|| {
        now.saturating_add(retry_delay_ms(
            retries.delay_ms,
            backoff(retries.backoff),
            attempt,
        ))
    })
}
