//! The memory limit of one instance's store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use wasmtime::Result;

use crate::journal::ErrorInfo;

/// Caps linear memory and tables; records when a guest asked for more.
pub struct MemoryLimiter {
    pub max_bytes: usize,
    /// Set once the guest asked for more than `max_bytes`; shared with the
    /// durable calls, which name a guest's own out-of-memory error after it.
    pub hit: Arc<AtomicBool>,
}

impl MemoryLimiter {
    pub fn was_hit(&self) -> bool {
        self.hit.load(Ordering::Relaxed)
    }
}

/// The error of an instance that needed more than `max_bytes`.
pub fn exceeded(max_bytes: usize) -> ErrorInfo {
    ErrorInfo::new(
        "MemoryLimitExceeded",
        format!(
            "the instance needed more than {} MiB of memory (limit `memory_mb`)",
            max_bytes >> 20
        ),
    )
}

/// A guest's own out-of-memory error (Python raises `MemoryError` where
/// Rust traps) is the memory limit when the limiter refused memory: named
/// as in Rust, with the limit, instead of an empty `MemoryError`.
pub fn name_memory_error(e: ErrorInfo, hit: bool, max_bytes: usize) -> ErrorInfo {
    if hit && e.name == "MemoryError" {
        exceeded(max_bytes)
    } else {
        e
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.max_bytes {
            self.hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
