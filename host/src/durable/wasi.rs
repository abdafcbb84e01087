//! WASI for workflows: clocks journaled outside steps, and randomness from
//! the instance's seed (guest output is in [`super::output`]).

use std::sync::Arc;
use std::time::Duration;

use super::shared::CurrentRun;
use crate::journal::Nondet;

fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(super) struct JournaledClock(pub(super) Arc<CurrentRun>);

impl wasmtime_wasi::HostWallClock for JournaledClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        let Some(inst) = self.0.get() else {
            return Duration::from_nanos(wall_nanos());
        };
        match inst.nondet(
            |v| matches!(v, Nondet::WallClock { .. }),
            || Nondet::WallClock {
                nanos: wall_nanos(),
            },
        ) {
            Nondet::WallClock { nanos } => Duration::from_nanos(nanos),
            _ => Duration::from_nanos(wall_nanos()),
        }
    }
}

/// Monotonic time as nanoseconds since the Unix epoch, so that it keeps
/// increasing across host restarts and replays.
pub(super) struct JournaledMonotonic(pub(super) Arc<CurrentRun>);

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        let Some(inst) = self.0.get() else {
            return wall_nanos();
        };
        match inst.nondet(
            |v| matches!(v, Nondet::MonotonicClock { .. }),
            || Nondet::MonotonicClock {
                nanos: wall_nanos(),
            },
        ) {
            Nondet::MonotonicClock { nanos } => nanos,
            _ => wall_nanos(),
        }
    }
}

/// Randomness for the guest. Outside step bodies it comes from a
/// generator seeded by the instance's seed (fixed at creation, stored in the
/// instance record), so a replay that makes the same reads sees the same
/// bytes without a journal entry per read (Python reads thousands of bytes
/// at start-up). Inside step bodies it is live.
pub(super) struct InstanceRandom(pub(super) Arc<CurrentRun>);

impl InstanceRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        let Some(inst) = self.0.get() else {
            return rand::fill(buf);
        };
        let mut st = inst.lock();
        if st.running.is_empty() {
            rand::Rng::fill_bytes(&mut st.rng, buf);
        } else {
            drop(st);
            rand::fill(buf);
        }
    }
}

impl rand::TryRng for InstanceRandom {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.fill(dst);
        Ok(())
    }
}
