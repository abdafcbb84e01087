//! Tests of the journal's write paths.

use super::*;
use redb::{Database, ReadableDatabase};

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
        .await
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
            assert_eq!(j.entries(&id).await.unwrap().len(), 20);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..50 {
        let entries = journal.entries(&format!("i{i}")).await.unwrap();
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
    let reopened = reopen(&path, || {});
    assert_eq!(reopened.entries("a").await.unwrap().len(), 1);
}

/// Opens the journal at `path` once the journal thread of its last handle
/// has let go of it, calling `before` before each try.
fn reopen(path: &Path, before: impl Fn()) -> Journal {
    when_released(
        || {
            before();
            Journal::open(path)
        },
        |e| matches!(e, JournalError::InUse),
    )
}

/// Tries `open` until it stops failing with an error that `in_use` says
/// means the file is still held (the journal thread lets go of the database
/// as it ends), for up to 10 s.
fn when_released<T, E: std::fmt::Display>(
    open: impl Fn() -> Result<T, E>,
    in_use: impl Fn(&E) -> bool,
) -> T {
    let start = std::time::Instant::now();
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if in_use(&e) && start.elapsed() < std::time::Duration::from_secs(10) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A crash loses nothing acknowledged. The files are copied while the
/// journal is open, as a `kill -9` leaves them: redb on disk lacks the
/// batches since its last checkpoint, the write-ahead log holds them, and
/// opening applies them. A torn record at the log's end is dropped; a
/// missing log is refused, not read as an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_crash_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let journal = Journal::open(&path).unwrap();
    for i in 0..20u64 {
        journal
            .append(&format!("i{i}"), vec![nondet(i)])
            .await
            .unwrap();
    }
    journal.append("i3", vec![nondet(33)]).await.unwrap();
    journal.truncate("i4", 0).await.unwrap();

    let crash = |name: &str, with_log: bool| {
        let to = dir.path().join(name);
        std::fs::create_dir(&to).unwrap();
        std::fs::copy(&path, to.join("j.redb")).unwrap();
        if with_log {
            std::fs::copy(dir.path().join("j.wal"), to.join("j.wal")).unwrap();
        }
        to.join("j.redb")
    };
    let without_log = crash("no-log", false);
    let with_log = crash("log", true);
    // A record torn by the crash, just after the last whole one (the log
    // is zero-filled ahead of its records).
    let log_path = dir.path().join("log/j.wal");
    let mut log = std::fs::read(&log_path).unwrap();
    let mut end = wal::LOG_START as usize;
    loop {
        let len = u64::from_le_bytes(log[end..end + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        end += wal::HEADER + len + wal::TRAILER;
    }
    assert!(end > wal::LOG_START as usize, "the log holds records");
    // The next record, of which only a prefix reached the file.
    let mut next = vec![0u8; wal::HEADER + 40 + wal::TRAILER];
    next[wal::HEADER..wal::HEADER + 40].fill(7);
    wal::seal(&mut next, 1_000);
    log[end..end + wal::HEADER + 10].copy_from_slice(&next[..wal::HEADER + 10]);
    std::fs::write(&log_path, &log).unwrap();

    // The log is what carries the writes: redb alone has not got them, so
    // without it the journal does not open.
    match Journal::open(&without_log) {
        Err(JournalError::LogDamaged {
            offset: 0, what, ..
        }) => {
            assert!(what.contains("missing"), "{what}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a crashed journal opened without its log"),
    }

    let recovered = Journal::open(&with_log).unwrap();
    let check = async |j: &Journal| {
        for i in 0..20u64 {
            let values: Vec<u64> = j
                .entries(&format!("i{i}"))
                .await
                .unwrap()
                .iter()
                .map(|(_, e)| nanos(e))
                .collect();
            match i {
                3 => assert_eq!(values, [3, 33]),
                4 => assert!(values.is_empty()),
                _ => assert_eq!(values, [i]),
            }
        }
    };
    check(&recovered).await;
    // Writes go on after the recovered batches.
    recovered.append("i5", vec![nondet(55)]).await.unwrap();
    assert_eq!(recovered.entries("i5").await.unwrap().len(), 2);
    drop(recovered);
    drop(journal);
}

/// A closed journal leaves everything in redb: reopened without its log,
/// nothing is missing.
#[tokio::test]
async fn closing_checkpoints_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let journal = Journal::open(&path).unwrap();
    journal.append("a", vec![nondet(1)]).await.unwrap();
    journal.append("a", vec![nondet(2)]).await.unwrap();
    drop(journal);
    let reopened = reopen(&path, || {
        std::fs::remove_file(dir.path().join("j.wal")).ok();
    });
    assert_eq!(reopened.entries("a").await.unwrap().len(), 2);
}

/// The journal's format says whether redb alone is the whole journal: 3
/// from opening on (so a crash leaves 2, which a weft from before the log
/// refuses, rather than opening the data dir without the log's batches), 1
/// once it is closed.
#[tokio::test]
async fn the_format_marks_a_journal_that_may_need_its_log() {
    let format_of = |path: &Path| {
        let db = when_released(
            || Database::open(path),
            |e| matches!(e, redb::DatabaseError::DatabaseAlreadyOpen),
        );
        let txn = db.begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(FORMAT).unwrap().map(|v| v.value())
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    let journal = Journal::open(&path).unwrap();
    journal.append("a", vec![nondet(1)]).await.unwrap();
    let crashed = dir.path().join("crashed.redb");
    std::fs::copy(&path, &crashed).unwrap();
    std::fs::copy(path.with_extension("wal"), crashed.with_extension("wal")).unwrap();
    assert_eq!(format_of(&crashed), Some(FORMAT_OPEN));
    drop(journal);
    assert_eq!(format_of(&path), Some(FORMAT_CLOSED));
    // A crashed journal opens (its log applied) and closes as format 1.
    drop(Journal::open(&crashed).unwrap());
    assert_eq!(format_of(&crashed), Some(FORMAT_CLOSED));
}

/// Checkpoints along the way: the log starts over after each, so a crash
/// finds the newest records at its start and older ones beyond them, which
/// must not be applied again. Each instance's entries come back whole and
/// in order whatever the crash point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_checkpoints_recovers_from_a_log_that_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.redb");
    // A checkpoint after every ~2 KiB of log: many over the run.
    let journal = Journal::open_checkpointing_at(&path, 2048).unwrap();
    let mut crashes = Vec::new();
    for k in 0..60u64 {
        for i in 0..5u64 {
            journal
                .append(&format!("i{i}"), vec![nondet(k)])
                .await
                .unwrap();
        }
        if k % 7 == 3 {
            // Truncation is logged too: i4 keeps only what came after.
            journal.truncate("i4", 0).await.unwrap();
        }
        if k % 9 == 8 {
            let to = dir.path().join(format!("crash{k}"));
            std::fs::create_dir(&to).unwrap();
            std::fs::copy(&path, to.join("j.redb")).unwrap();
            std::fs::copy(dir.path().join("j.wal"), to.join("j.wal")).unwrap();
            crashes.push((k, to.join("j.redb")));
        }
    }
    let last_truncate = |k: u64| (0..=k).filter(|x| x % 7 == 3).max();
    for (k, copy) in crashes {
        let j = Journal::open(&copy).unwrap();
        for i in 0..5u64 {
            let entries = j.entries(&format!("i{i}")).await.unwrap();
            let values: Vec<u64> = entries.iter().map(|(_, e)| nanos(e)).collect();
            let first = match (i, last_truncate(k)) {
                (4, Some(t)) => t + 1,
                _ => 0,
            };
            assert_eq!(
                values,
                (first..=k).collect::<Vec<_>>(),
                "i{i} after a crash at {k}"
            );
        }
    }
}
