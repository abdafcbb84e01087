//! Tests of the journal's write paths.

use super::*;

fn nondet(nanos: u64) -> Entry {
    Entry::Nondet {
        value: Nondet::WallClock { nanos },
    }
}

fn nanos(e: &Entry) -> u64 {
    match e {
        Entry::Nondet {
            value: Nondet::WallClock { nanos },
        } => *nanos,
        other => panic!("unexpected entry {other:?}"),
    }
}

/// Many instances appending at once (through the journal thread) and
/// alone (committing on the caller's thread) keep each instance's
/// entries in order, lazy writes included, and every acknowledged
/// append is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_keep_their_order_whoever_commits_them() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("j.redb")).unwrap();
    // Alone: two lazy writes are queued, then a durable append commits
    // them before itself.
    journal.append_lazy("solo", vec![nondet(0)]);
    journal.append_lazy("solo", vec![nondet(1)]);
    journal.append("solo", vec![nondet(2)]).await.unwrap();
    let solo: Vec<u64> = journal
        .entries("solo")
        .unwrap()
        .iter()
        .map(|(_, e)| nanos(e))
        .collect();
    assert_eq!(solo, [0, 1, 2]);

    // Together: 50 instances, each alternating lazy and durable writes.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let j = journal.clone();
        tasks.spawn(async move {
            let id = format!("i{i}");
            for k in 0..20u64 {
                if k % 3 == 0 {
                    j.append_lazy(&id, vec![nondet(k)]);
                } else {
                    j.append(&id, vec![nondet(k)]).await.unwrap();
                }
            }
            // Acknowledged, so committed: visible to a new read.
            assert_eq!(j.entries(&id).unwrap().len(), 20);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..50 {
        let entries = journal.entries(&format!("i{i}")).unwrap();
        let seqs: Vec<u64> = entries.iter().map(|(s, _)| *s).collect();
        let values: Vec<u64> = entries.iter().map(|(_, e)| nanos(e)).collect();
        assert_eq!(seqs, (0..20).collect::<Vec<_>>());
        assert_eq!(values, (0..20).collect::<Vec<_>>());
    }
}

/// Dropping every handle ends the journal thread and releases the file.
#[tokio::test]
async fn the_last_handle_releases_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let journal = Journal::open(&path).unwrap();
    journal.append("a", vec![nondet(7)]).await.unwrap();
    let clone = journal.clone();
    drop(journal);
    assert!(matches!(Journal::open(&path), Err(JournalError::InUse)));
    drop(clone);
    // The thread lets go of the database as it ends; wait for it, up to
    // 10 s.
    let start = std::time::Instant::now();
    let reopened = loop {
        match Journal::open(&path) {
            Ok(j) => break j,
            Err(JournalError::InUse) if start.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(reopened.entries("a").unwrap().len(), 1);
}
