//! Prometheus metrics, served by `weft serve` at `/metrics` in the
//! OpenMetrics text format (docs/server.md lists them). One set per
//! process: the layers that do the work count into it, and a scrape adds
//! what is read at that moment (instances by status, process memory).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A workflow, as a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Workflow {
    pub workflow: String,
}

/// A workflow and an instance status, as labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowStatus {
    pub workflow: String,
    pub status: String,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    pub instances: Family<WorkflowStatus, Gauge>,
    pub steps_completed: Family<Workflow, Counter>,
    pub steps_failed: Family<Workflow, Counter>,
    pub steps_retried: Family<Workflow, Counter>,
    pub step_duration: Family<Workflow, Histogram>,
    pub commit_duration: Histogram,
    pub commit_batch: Histogram,
    pub replays: Family<Workflow, Counter>,
    pub replay_duration: Histogram,
    pub evictions: Family<Workflow, Counter>,
    pub displaced: Family<Workflow, Counter>,
    pub queue_depth: Gauge,
    pub slots_in_use: Gauge,
    pub in_memory: Gauge,
    pub memory: Gauge,
    pub shared_instances: Gauge,
    pub shared_runs: Gauge,
}

fn step_histogram() -> Histogram {
    // 1 ms to ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

impl Metrics {
    fn new() -> Metrics {
        let mut r = Registry::default();
        let m = Metrics {
            instances: Family::default(),
            steps_completed: Family::default(),
            steps_failed: Family::default(),
            steps_retried: Family::default(),
            step_duration: Family::new_with_constructor(step_histogram),
            // 50 µs to ~0.8 s.
            commit_duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            // 1 to 4096 operations.
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
            replays: Family::default(),
            // 100 µs to ~1.6 min.
            replay_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 20)),
            evictions: Family::default(),
            displaced: Family::default(),
            queue_depth: Gauge::default(),
            slots_in_use: Gauge::default(),
            in_memory: Gauge::default(),
            memory: Gauge::default(),
            shared_instances: Gauge::default(),
            shared_runs: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "weft_instances",
            "Instances in the store, by workflow and status",
            m.instances.clone(),
        );
        r.register(
            "weft_steps_completed",
            "Step attempts that succeeded",
            m.steps_completed.clone(),
        );
        r.register(
            "weft_steps_failed",
            "Steps that failed for good (no attempts left, or not retryable)",
            m.steps_failed.clone(),
        );
        r.register(
            "weft_steps_retried",
            "Step attempts that failed and will be retried",
            m.steps_retried.clone(),
        );
        r.register(
            "weft_step_duration_seconds",
            "Duration of step attempts, failed or not",
            m.step_duration.clone(),
        );
        r.register(
            "weft_journal_commit_duration_seconds",
            "Duration of one journal commit (a batch of writes)",
            m.commit_duration.clone(),
        );
        r.register(
            "weft_journal_commit_batch_size",
            "Writes per journal commit",
            m.commit_batch.clone(),
        );
        r.register(
            "weft_replays",
            "Runs that replayed a journal (after an eviction, a crash or a retry)",
            m.replays.clone(),
        );
        r.register(
            "weft_replay_duration_seconds",
            "Time from the start of a run until its replay caught up with the journal",
            m.replay_duration.clone(),
        );
        r.register(
            "weft_evictions",
            "Instances dropped from memory while they wait",
            m.evictions.clone(),
        );
        r.register(
            "weft_runs_displaced",
            "Runs replayed elsewhere because another run took down their shared instance",
            m.displaced.clone(),
        );
        r.register(
            "weft_queue_depth",
            "Instances waiting for a free slot to run",
            m.queue_depth.clone(),
        );
        r.register(
            "weft_slots_in_use",
            "Run slots (max_running) held by working instances",
            m.slots_in_use.clone(),
        );
        r.register(
            "weft_instances_in_memory",
            "Instances held in memory (the engine's instance slots in use)",
            m.in_memory.clone(),
        );
        r.register(
            "weft_shared_instances",
            "Component instances that runs of `isolation = \"shared\"` workflows share",
            m.shared_instances.clone(),
        );
        r.register(
            "weft_shared_runs",
            "Runs held in shared component instances",
            m.shared_runs.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory of the weft process",
            m.memory.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The metrics in the OpenMetrics text format, with `instances` (counts
    /// by workflow and status, read from the store now) and the process's
    /// memory.
    pub fn encode(&self, instances: &[(String, String, u64)]) -> String {
        self.instances.clear();
        for (workflow, status, n) in instances {
            let labels = WorkflowStatus {
                workflow: workflow.clone(),
                status: status.clone(),
            };
            self.instances.get_or_create(&labels).set(*n as i64);
        }
        self.memory.set(resident_bytes() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    pub fn workflow(&self, f: &Family<Workflow, Counter>, workflow: &str) {
        f.get_or_create(&Workflow {
            workflow: workflow.to_owned(),
        })
        .inc();
    }

    /// One step attempt's end: `Some(true)` succeeded, `Some(false)` failed
    /// and will be retried, `None` failed for good.
    pub fn step_ended(&self, workflow: &str, outcome: Option<bool>, took: Duration) {
        let labels = Workflow {
            workflow: workflow.to_owned(),
        };
        self.step_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        let counter = match outcome {
            Some(true) => &self.steps_completed,
            Some(false) => &self.steps_retried,
            None => &self.steps_failed,
        };
        counter.get_or_create(&labels).inc();
    }

    /// One journal commit of `ops` writes.
    pub fn committed(&self, ops: usize, took: Duration) {
        self.commit_duration.observe(took.as_secs_f64());
        self.commit_batch.observe(ops as f64);
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// The media type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Resident memory of this process, from `/proc/self/statm` (0 where
/// there is none).
fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Counts while alive: a gauge raised on creation and lowered on drop.
pub struct Held(&'static Gauge);

impl Held {
    pub fn new(g: &'static Gauge) -> Held {
        g.inc();
        Held(g)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_has_every_family_with_its_labels() {
        let m = Metrics::new();
        m.step_ended("order", Some(true), Duration::from_millis(3));
        m.step_ended("order", Some(false), Duration::from_millis(3));
        m.step_ended("order", None, Duration::from_millis(3));
        m.committed(7, Duration::from_micros(300));
        let text = m.encode(&[("order".into(), "running".into(), 4)]);
        for line in [
            "weft_instances{workflow=\"order\",status=\"running\"} 4",
            "weft_steps_completed_total{workflow=\"order\"} 1",
            "weft_steps_retried_total{workflow=\"order\"} 1",
            "weft_steps_failed_total{workflow=\"order\"} 1",
            "weft_step_duration_seconds_count{workflow=\"order\"} 3",
            "weft_journal_commit_batch_size_sum 7.0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A status that no instance has any more is not left behind.
        let text = m.encode(&[]);
        assert!(!text.contains("weft_instances{"), "{text}");
        assert!(
            !text.contains("process_resident_memory_bytes 0\n"),
            "{text}"
        );
    }
}
