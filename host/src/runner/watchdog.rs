//! The watchdog of a live instance: step timeouts, eviction, pause.

use std::time::{Duration, Instant};

use super::Control;
use super::attempt::Interrupt;
use crate::durable::{Instance, WaitFor};
use crate::journal::now_ms;

/// Watches a live instance: returns when a step passes its deadline or when
/// every pending call waits longer than `evict_after`.
pub(super) async fn watchdog(
    inst: &Instance,
    control: &Control,
    evict_after: Duration,
) -> Interrupt {
    loop {
        let notified = inst.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let paused = control.changed.notified();
        tokio::pin!(paused);
        paused.as_mut().enable();
        let next_check = {
            let st = inst.lock();
            if control.pause_requested() && st.running.is_empty() && st.busy == 0 {
                return Interrupt::Pause;
            }
            if let Some(step) = st.running.values().min_by_key(|s| s.deadline) {
                if step.deadline <= Instant::now() {
                    return Interrupt::Timeout(step.clone());
                }
                Some(step.deadline)
            } else if st.busy > 0 {
                None
            } else if let Some(wake_ms) = st.waits.values().map(|w| w.wake_ms).min() {
                let left = Duration::from_millis(wake_ms.saturating_sub(now_ms()));
                if left > evict_after {
                    let event_types = st
                        .waits
                        .values()
                        .filter_map(|w| match &w.what {
                            WaitFor::Event(t) => Some(t.clone()),
                            _ => None,
                        })
                        .collect();
                    let children = st
                        .waits
                        .values()
                        .filter_map(|w| match &w.what {
                            WaitFor::Child(c) => Some(c.clone()),
                            _ => None,
                        })
                        .collect();
                    return Interrupt::Evict(super::Wake {
                        at_ms: wake_ms,
                        event_types,
                        children,
                    });
                }
                // Only short waits: no work until one ends.
                inst.waiting_only();
                None
            } else {
                None
            }
        };
        match next_check {
            Some(at) => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = &mut paused => {}
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
            None => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = &mut paused => {}
                }
            }
        }
    }
}
