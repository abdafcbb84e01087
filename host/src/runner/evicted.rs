//! An evicted instance waiting, with no guest in memory, for its wake time,
//! an event or a child.

use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;

use super::{Runtime, until_ms};
use crate::journal::UnixMs;

/// How long before its wake time an evicted instance is replayed. 300 ms
/// rather than 100: when many wake together (W3: 2000 within ~120 ms) more
/// of the replays then happen before the wakes instead of among them (W3
/// p99 median 10-15 against 26-30 ms over 11 interleaved pairs), at the cost
/// of holding each instance in memory 200 ms longer.
const PREWARM: Duration = Duration::from_millis(300);

/// What wakes an evicted instance: its time, an event of one of its types
/// in the inbox, or one of the children it awaits ending.
#[derive(Debug, Clone)]
pub struct Wake {
    pub at_ms: UnixMs,
    pub event_types: Vec<String>,
    pub children: Vec<String>,
}

impl Runtime {
    /// Waits, holding no instance, until the instance wakes.
    pub async fn sleep_evicted(
        &self,
        id: &str,
        events: &mut watch::Receiver<u64>,
        wake: &Wake,
    ) -> Result<()> {
        let Wake {
            at_ms: wake_ms,
            event_types,
            children,
        } = wake;
        let wake_ms = *wake_ms;
        loop {
            events.borrow_and_update();
            let inbox = self.journal.inbox(id).await?;
            if inbox.iter().any(|e| event_types.contains(&e.event_type)) {
                return Ok(());
            }
            for child in children {
                if self
                    .journal
                    .instance(child)
                    .await?
                    .is_none_or(|c| c.status.is_final())
                {
                    return Ok(());
                }
            }
            // Wake a little early: the replay then happens before the timer
            // and the rest of the wait is spent hot, so the instance resumes
            // on time even when many wake together.
            let left = until_ms(wake_ms).saturating_sub(PREWARM.min(self.evict_after / 2));
            if left.is_zero() {
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(left) => return Ok(()),
                _ = events.changed() => {}
            }
        }
    }
}
