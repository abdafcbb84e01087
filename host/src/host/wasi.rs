//! WASI for workflows: clocks journaled outside steps, randomness from the
//! instance's seed, and guest output that is silent while replaying.

use std::sync::Arc;
use std::time::Duration;

use super::Instance;
use crate::journal::Nondet;

fn wall_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(super) struct JournaledClock(pub(super) Arc<Instance>);

impl wasmtime_wasi::HostWallClock for JournaledClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        match self.0.nondet(
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
pub(super) struct JournaledMonotonic(pub(super) Arc<Instance>);

impl wasmtime_wasi::HostMonotonicClock for JournaledMonotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        match self.0.nondet(
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
pub(super) struct InstanceRandom(pub(super) Arc<Instance>);

impl InstanceRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut st = self.0.lock();
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

/// Guest stdout and stderr: forwarded to the host's stderr (weft's stdout
/// carries the workflow output), dropped while the guest is replaying.
pub(super) struct GuestOutput(pub(super) Arc<Instance>);

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(ReplayAwareWriter {
            inst: self.0.clone(),
            pending: Vec::new(),
        })
    }
}

/// Writes whole lines only, so guest output never splits a line of weft's
/// own progress output on the shared stderr.
struct ReplayAwareWriter {
    inst: Arc<Instance>,
    pending: Vec<u8>,
}

impl ReplayAwareWriter {
    fn emit(&mut self, all: bool) {
        let end = if all {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        let chunk: Vec<u8> = self.pending.drain(..end).collect();
        if !chunk.is_empty() && !self.inst.replaying() {
            use std::io::Write;
            let text = String::from_utf8_lossy(&chunk);
            let text = self.inst.policy.redact(&text);
            let _ = std::io::stderr().lock().write_all(text.as_bytes());
        }
    }
}

impl Drop for ReplayAwareWriter {
    fn drop(&mut self) {
        self.emit(true);
    }
}

impl tokio::io::AsyncWrite for ReplayAwareWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        // A line longer than 64 KiB is written as is.
        let all = self.pending.len() > 64 * 1024;
        self.emit(all);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.emit(true);
        std::task::Poll::Ready(Ok(()))
    }
}
