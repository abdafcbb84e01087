//! weft's defaults, each in one place. The user guide lists them: limits in
//! docs/sandbox.md, the server's in docs/server.md.

use std::time::Duration;

/// Memory limit per instance, in MiB (`memory_mb`, `--memory-mb`).
pub const MEMORY_MB: usize = 512;
/// Step calls per instance (`max_steps`, `--max-steps`).
pub const MAX_STEPS: u64 = 10_000;
/// CPU time of the workflow body outside steps per run or replay, in ms
/// (`cpu_ms`, `--cpu-ms`).
pub const BODY_CPU_MS: u64 = 30_000;
/// CPU time of one step attempt's body, in ms (`step_cpu_ms`,
/// `--step-cpu-ms`): as long as the default step timeout, so that it
/// counts when a step's wall-clock timeout is longer.
pub const STEP_CPU_MS: u64 = 600_000;
/// An instance waiting longer than this is dropped from memory and replayed
/// when it wakes (`--evict-after`).
pub const EVICT_AFTER: Duration = Duration::from_secs(5);
/// The text form of [`EVICT_AFTER`], for the command line.
pub const EVICT_AFTER_TEXT: &str = "5s";
/// Instances working at once in a server (`max_running`, `--max-running`).
pub const MAX_RUNNING: usize = 500;
/// Where a server listens (`addr`, `--addr`).
pub const ADDR: &str = "127.0.0.1:8080";
/// How long a server's connection may take to send a request's head, or
/// stay idle between requests (`--head-timeout`).
pub const HEAD_TIMEOUT_TEXT: &str = "20s";
/// How long a host's lease on a shared store's instances lasts unrenewed
/// (`[store] lease`, `--lease`); renewed three times per period.
pub const LEASE: Duration = Duration::from_secs(10);
