//! The scheduler's in-process tests.

use super::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// An instance whose task fails on the host's side (here its component
/// is missing from the data dir) is not left `running` for good: the
/// task tries again, and the instance completes once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fails_on_the_host_side_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(&dir.path().join("data"), Duration::from_secs(5)).unwrap();
    // A variant of the test guest (a custom section appended), so that
    // no cache holds it compiled.
    let nonce = format!("{:x}", rand::random::<u64>());
    let bytes = weft_test_artifacts::with_custom_section(
        &std::fs::read(weft_test_artifacts::SCENARIOS).unwrap(),
        &nonce,
        0,
    );
    let digest = rt.components.store_bytes(&bytes).unwrap();
    let stored = dir
        .path()
        .join("data/components")
        .join(format!("{}.wasm", digest.trim_start_matches("sha256:")));
    std::fs::remove_file(&stored).unwrap();
    let sched = Scheduler::new(rt.clone(), vec![("rs".into(), digest, None)], 50);
    sched
        .create(
            "rs",
            Some("a".into()),
            r#"{"scenario":"loop-names","n":1}"#,
            None,
        )
        .await
        .unwrap();
    // The first attempt fails; put the component back before the next.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rt.finished.load(Relaxed), 0);
    rt.components.store_bytes(&bytes).unwrap();
    let start = Instant::now();
    while rt.finished.load(Relaxed) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the instance was not retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rec = rt.journal.instance("a").await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Complete);
}

/// A server that ran many instances to the end keeps no per-instance
/// state for them: no event channel, no pause switch, and task handles
/// only in proportion to the live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_instances_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open(&dir.path().join("data"), Duration::from_secs(5)).unwrap();
    let bytes = std::fs::read(weft_test_artifacts::SCENARIOS).unwrap();
    let digest = rt.components.store_bytes(&bytes).unwrap();
    let sched = Scheduler::new(rt.clone(), vec![("rs".into(), digest, None)], 50);
    let start = Instant::now();
    let round = 300;
    for r in 0..3 {
        for i in 0..round {
            let params = r#"{"scenario":"loop-names","n":1}"#;
            sched
                .create("rs", Some(format!("r{r}-{i}")), params, None)
                .await
                .unwrap();
        }
        while rt.finished.load(Relaxed) < (r + 1) * round {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "instances did not finish"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Tasks end just after their instance counts as finished.
    while sched
        .tasks
        .lock()
        .unwrap()
        .values()
        .any(|t| !t.is_finished())
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "tasks did not end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rt.tracked_instances(), 0);
    let handles = sched.tasks.lock().unwrap().len();
    assert!(
        handles < 2 * round,
        "{handles} task handles kept for 900 ended instances"
    );
}
