//! The lifecycle in-process: a runtime on a temporary data dir running the
//! scenarios test guest, with and without a gate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use super::{Ended, Gate, Runtime};
use crate::durable::Progress;
use crate::journal::{AttemptResult, Created, Entry, Status};

struct Fixture {
    _dir: tempfile::TempDir,
    rt: Arc<Runtime>,
    digest: String,
}

fn fixture(evict_after: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(&dir.path().join("data"), evict_after).unwrap();
    let bytes = std::fs::read(weft_test_artifacts::SCENARIOS).unwrap();
    let digest = rt.components.store_bytes(&bytes).unwrap();
    Fixture {
        _dir: dir,
        rt,
        digest,
    }
}

impl Fixture {
    async fn create(&self, id: &str, input: &str) {
        let created = self
            .rt
            .create("rs", &self.digest, Some(id.into()), input)
            .await
            .unwrap();
        assert!(matches!(created, Created::New(_)));
    }

    async fn status(&self, id: &str) -> Status {
        self.rt.journal.instance(id).await.unwrap().unwrap().status
    }

    /// Waits (bounded) until `id` has `status`.
    async fn until_status(&self, id: &str, status: Status) {
        let start = Instant::now();
        while self.status(id).await != status {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "instance {id} is {:?}, not {status:?}",
                self.status(id).await
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn gate(pool: usize) -> Gate {
    Gate {
        resident: Arc::new(Semaphore::new(16)),
        pool: Arc::new(Semaphore::new(pool)),
        workflows: HashMap::new(),
    }
}

/// A trap inside a step body is settled as a failed attempt of that step,
/// and the lifecycle runs the instance again: the retry completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_in_a_step_is_a_failed_attempt_then_a_retry() {
    let f = fixture(Duration::from_secs(5));
    f.create("t", r#"{"scenario":"step-trap"}"#).await;
    let rec = f.rt.drive("t", None).await.unwrap();
    assert_eq!(rec.status, Status::Complete);
    assert_eq!(rec.output.unwrap().get(), r#"{"caught":"WorkflowTrap"}"#);
    let attempts: Vec<(u32, String)> =
        f.rt.journal
            .entries("t")
            .await
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e {
                Entry::Step {
                    attempt,
                    result: AttemptResult::Err { error, .. },
                    ..
                } => Some((attempt, error.name)),
                _ => None,
            })
            .collect();
    assert_eq!(
        attempts,
        [(1, "WorkflowTrap".into()), (2, "WorkflowTrap".into())]
    );
    // Final: nothing of it stays in memory.
    assert!(!f.rt.tracks("t"));
}

/// A gated instance waits `queued` while the pool is full; a pause request
/// ends its lifecycle there (`paused`, no permit taken), and a new
/// lifecycle after the resume runs it once a permit is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_instance_queues_and_pauses_before_it_runs() {
    let f = fixture(Duration::from_secs(5));
    f.create("q", r#"{"scenario":"loop-names","n":2}"#).await;
    let gate = Arc::new(gate(1));
    let taken = gate.pool.clone().acquire_owned().await.unwrap();

    let rt = f.rt.clone();
    let g = gate.clone();
    let life = tokio::spawn(async move { rt.live("q", Some(&g), None).await });
    f.until_status("q", Status::Queued).await;

    f.rt.control("q").set_pause(true);
    let ended = tokio::time::timeout(Duration::from_secs(10), life)
        .await
        .expect("the pause did not end the lifecycle")
        .unwrap()
        .unwrap();
    assert!(matches!(ended, Ended::Paused), "{ended:?}");
    assert_eq!(f.status("q").await, Status::Paused);
    assert_eq!(gate.pool.available_permits(), 0, "the test still holds it");

    f.rt.control("q").set_pause(false);
    drop(taken);
    let ended = f.rt.live("q", Some(&gate), None).await.unwrap();
    let Ended::Final(rec) = ended else {
        panic!("{ended:?}")
    };
    assert_eq!(rec.status, Status::Complete);
    // Every permit is back.
    assert_eq!(gate.pool.available_permits(), 1);
    assert_eq!(gate.resident.available_permits(), 16);
}

/// A sleep longer than `evict_after` evicts the instance: `waiting`, its
/// permits given back, then replayed when it wakes and completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_sleep_evicts_and_wakes() {
    let f = fixture(Duration::from_millis(100));
    f.create("s", r#"{"scenario":"sleep","ms":1500}"#).await;
    let gate = Arc::new(gate(1));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = f.rt.clone();
    let g = gate.clone();
    let life = tokio::spawn(async move { rt.live("s", Some(&g), Some(tx)).await });
    f.until_status("s", Status::Waiting).await;
    assert_eq!(
        gate.pool.available_permits(),
        1,
        "an evicted instance holds no permit"
    );
    let ended = tokio::time::timeout(Duration::from_secs(30), life)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Ended::Final(rec) = ended else {
        panic!("{ended:?}")
    };
    assert_eq!(rec.status, Status::Complete);
    let mut seen = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(match p {
            Progress::Evicted { .. } => "evicted",
            Progress::Replaying { .. } => "replaying",
            Progress::StepDone { .. } => "step",
            Progress::Sleeping { .. } => "sleeping",
            _ => "other",
        });
    }
    assert_eq!(
        seen,
        ["step", "sleeping", "evicted", "replaying", "step"],
        "progress of the lifecycle"
    );
}

/// A pause request reaches an instance that waits evicted: its lifecycle
/// ends `paused` without waiting for the wake time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_ends_an_evicted_wait() {
    let f = fixture(Duration::from_millis(100));
    f.create("w", r#"{"scenario":"sleep","ms":600000}"#).await;
    let rt = f.rt.clone();
    let life = tokio::spawn(async move { rt.live("w", None, None).await });
    f.until_status("w", Status::Waiting).await;
    f.rt.control("w").set_pause(true);
    let ended = tokio::time::timeout(Duration::from_secs(10), life)
        .await
        .expect("the pause did not end the wait")
        .unwrap()
        .unwrap();
    assert!(matches!(ended, Ended::Paused), "{ended:?}");
    assert_eq!(f.status("w").await, Status::Paused);
}

/// A deleted instance ends its lifecycle; `drive` says it is unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_instance_ends_its_lifecycle() {
    let f = fixture(Duration::from_secs(5));
    f.create("d", r#"{"scenario":"loop-names","n":1}"#).await;
    f.rt.journal.delete("d").await.unwrap();
    let ended = f.rt.live("d", None, None).await.unwrap();
    assert!(matches!(ended, Ended::Deleted), "{ended:?}");
    let e = f.rt.drive("d", None).await.unwrap_err();
    assert!(e.to_string().contains("no instance"), "{e:#}");
}
