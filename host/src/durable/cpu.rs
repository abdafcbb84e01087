//! CPU time spent in the guest, measured with the thread's CPU clock at the
//! epoch ticks, and charged to the step body the guest is running or to the
//! workflow body (limits `step_cpu_ms` and `cpu_ms`); [`Charged`] says which
//! (traps are charged the same way).
//!
//! The epoch ticks every [`EPOCH_TICK`] of wall-clock time; the guest
//! notices a tick only while it executes, and then yields to the executor.
//! The meter keeps a mark: the thread the guest last ran on and that
//! thread's CPU clock then. It is set when the guest resumes after a tick's
//! yield and at every tick; a tick charges the thread's CPU time since the
//! mark. So a busy guest is charged what its thread really ran (a host
//! under load that deschedules it charges it nothing), and a guest that
//! waits (on HTTP, a timer, an event) executes nothing and is charged
//! nothing.
//!
//! Between two marks the guest may also have waited on an async host call
//! while its thread ran other instances. A mark older than
//! [`STALE_MARK`] of wall-clock time is such a gap (a running guest meets
//! a tick sooner); the tick then charges at most one tick.

use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::engine::EPOCH_TICK;

use super::Instance;

/// A mark older than this (wall-clock) means the guest did not run all
/// along since it was set.
const STALE_MARK: Duration = Duration::from_millis(EPOCH_TICK.as_millis() as u64 * 4);

/// The CPU time the calling thread has run.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a
    // constant that every supported platform defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Where the guest last ran: the thread, its CPU clock, and when.
#[derive(Debug, Default)]
pub struct CpuMeter {
    mark: Option<(ThreadId, Duration, Instant)>,
}

impl CpuMeter {
    /// The guest runs on this thread from now on.
    pub fn resume(&mut self) {
        self.mark = Some((std::thread::current().id(), thread_cpu(), Instant::now()));
    }

    /// At a tick: the CPU time the guest ran since the mark, which moves
    /// here. Nothing when the mark is on another thread (the guest moved
    /// while it waited) or there is none.
    pub fn tick(&mut self) -> Duration {
        let (thread, cpu, at) = match self.mark {
            Some(m) => m,
            None => {
                self.resume();
                return Duration::ZERO;
            }
        };
        let here = std::thread::current().id();
        let now_cpu = thread_cpu();
        let now = Instant::now();
        self.mark = Some((here, now_cpu, now));
        if thread != here {
            return Duration::ZERO;
        }
        let spent = now_cpu.saturating_sub(cpu);
        if now.duration_since(at) > STALE_MARK {
            spent.min(EPOCH_TICK)
        } else {
            spent
        }
    }
}

/// What a tick's yield awaits: the executor's turn, then a new mark on the
/// thread where the guest goes on.
pub fn yield_then_mark(inst: Arc<Instance>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        tokio::task::yield_now().await;
        inst.lock().cpu.resume();
    })
}

/// Who the guest's CPU time and traps are charged to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// The running attempt of the step with this handle.
    Step(u64),
    /// The workflow body, outside step bodies.
    Body,
    /// Unknown: several step bodies run and the guest does not say which.
    Unknown,
}

impl super::State {
    /// Who runs now: the step body the guest names, or, for a guest that
    /// names none, the only step body running, or the workflow body when
    /// none runs.
    pub fn charged(&self) -> Charged {
        if self.marks_steps {
            return match self.current {
                Some(h) if self.running.contains_key(&h) => Charged::Step(h),
                Some(_) => Charged::Unknown,
                None => Charged::Body,
            };
        }
        let mut running = self.running.keys();
        match (running.next(), running.next()) {
            (None, _) => Charged::Body,
            (Some(h), None) => Charged::Step(*h),
            _ => Charged::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_is_charged_its_cpu_and_a_sleeping_one_nothing() {
        let mut m = CpuMeter::default();
        assert_eq!(m.tick(), Duration::ZERO);
        let start = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() - start < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        // 20 ms of CPU; one tick's worth if the thread was descheduled so
        // long that the mark went stale.
        let busy = m.tick();
        assert!(busy >= EPOCH_TICK, "{busy:?}");
        std::thread::sleep(Duration::from_millis(20));
        // Sleeping is not CPU, and the mark is fresh: next to nothing.
        let idle = m.tick();
        assert!(idle < Duration::from_millis(5), "{idle:?}");
    }

    #[test]
    fn a_stale_mark_charges_at_most_one_tick() {
        let mut m = CpuMeter::default();
        m.resume();
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < STALE_MARK * 2 {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(m.tick() <= EPOCH_TICK);
    }

    fn running(n: u64) -> super::super::RunningStep {
        super::super::RunningStep {
            name: format!("s{n}"),
            n: 0,
            attempt: 1,
            started_ms: 0,
            deadline: Instant::now(),
            retries: crate::bindings::types::RetryPolicy {
                limit: 0,
                delay_ms: 0,
                backoff: crate::bindings::types::Backoff::Constant,
            },
            cpu: Duration::ZERO,
            span: tracing::Span::none(),
        }
    }

    /// Who CPU time and traps are charged to: the step the guest names; for
    /// a guest that names none, the only step running, else the body, else
    /// nobody.
    #[test]
    fn charges_go_to_the_step_the_guest_names_or_the_only_one_running() {
        let charged = |running_steps: &[u64], marks: bool, current: Option<u64>| {
            let mut st = super::super::State::new(crate::replay::Replay::default(), 0);
            st.running = running_steps.iter().map(|h| (*h, running(*h))).collect();
            st.marks_steps = marks;
            st.current = current;
            st.charged()
        };
        // A guest that says which step it runs.
        assert_eq!(charged(&[1, 2], true, Some(2)), Charged::Step(2));
        assert_eq!(charged(&[1, 2], true, None), Charged::Body);
        assert_eq!(charged(&[1], true, Some(9)), Charged::Unknown);
        // One that does not: only an unambiguous guess.
        assert_eq!(charged(&[], false, None), Charged::Body);
        assert_eq!(charged(&[7], false, None), Charged::Step(7));
        assert_eq!(charged(&[1, 2], false, None), Charged::Unknown);
    }
}
