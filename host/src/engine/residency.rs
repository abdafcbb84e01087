//! Instances in memory, and giving the heap back after a burst of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often the heap is looked at (`Residency::trim_after_burst`).
pub(super) const TRIM_CHECK: Duration = Duration::from_secs(1);
/// The least number of instances in memory at once that counts as a burst.
pub(super) const BURST: usize = 64;

/// Instances in memory now, and the most there were since the heap was last
/// trimmed.
#[derive(Default)]
pub(super) struct Residency {
    pub(super) live: AtomicUsize,
    pub(super) peak: AtomicUsize,
}

/// An instance in memory (`Components::resident`).
pub struct Resident(Arc<Residency>);

impl Drop for Resident {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Residency {
    /// One more instance in memory, until the returned guard drops.
    pub(super) fn enter(self: &Arc<Self>) -> Resident {
        let live = self.live.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(live, Ordering::Relaxed);
        Resident(self.clone())
    }

    /// After a burst of instances has mostly left memory, gives the heap
    /// pages they freed back to the system. The allocator keeps freed pages
    /// for reuse, so a process that once held 1000 Python instances (~0.2
    /// MiB of host heap each: wasmtime's per-instance context) otherwise
    /// stays that big. Trimming walks the allocator's arenas (1-20 ms
    /// here), so it runs on its own thread and only after a burst.
    pub(super) fn trim_after_burst(&self) {
        let live = self.live.load(Ordering::Relaxed);
        let peak = self.peak.load(Ordering::Relaxed);
        if !should_trim(live, peak) {
            return;
        }
        self.peak.store(live, Ordering::Relaxed);
        let t = std::time::Instant::now();
        trim_heap();
        tracing::debug!(
            "trimmed the heap after {peak} instances in memory fell to {live} ({:?})",
            t.elapsed()
        );
    }
}

/// Whether `live` instances in memory, down from `peak`, ends a burst.
pub(super) fn should_trim(live: usize, peak: usize) -> bool {
    peak >= BURST && live <= peak / 2
}

/// Gives the heap pages the allocator holds free back to the system (with
/// glibc; elsewhere it does nothing). The host calls it after a burst; a
/// benchmark calls it to measure memory from a settled start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory of the allocator's own.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() {}
