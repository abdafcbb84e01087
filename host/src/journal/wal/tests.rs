//! Tests of reading the log: what ends it, and that no damage short of a
//! torn last record is ever read as a shorter log.

use super::*;

/// Writes `n` records (batches `after + 1 ..`) to a new log and returns the
/// file's bytes and each record's offset.
fn log_of(dir: &Path, after: u64, n: usize) -> (Vec<u8>, Vec<usize>) {
    let path = dir.join("j.wal");
    let mut wal = Wal::create(&path, after).unwrap();
    let mut offsets = Vec::new();
    let mut changes = Changes::default();
    for i in 0..n {
        changes.clear();
        let value = format!("{{\"step\":{i},\"result\":\"{}\"}}", "x".repeat(i % 7));
        changes.record(PUT, TableId::Journal, "inst", i as u64, value.as_bytes());
        offsets.push(wal.end as usize);
        wal.write(&mut changes, i % 3 == 0).unwrap();
    }
    (std::fs::read(&path).unwrap(), offsets)
}

fn batches(scan: &Scan) -> Vec<u64> {
    scan.batches.iter().map(|(b, _)| *b).collect()
}

#[test]
fn a_sound_log_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = log_of(dir.path(), 10, 24);
    let scan = scan(&bytes, 10, Layout::Current).unwrap();
    assert_eq!(batches(&scan), (11..=34).collect::<Vec<_>>());
    assert_eq!(scan.ending, Ending::Clean);
    // What redb already holds is not applied again.
    let scan = super::scan(&bytes, 30, Layout::Current).unwrap();
    assert_eq!(batches(&scan), (31..=34).collect::<Vec<_>>());
    // A log that goes on past a gap after what redb holds is refused.
    let err = super::scan(&bytes, 5, Layout::Current).unwrap_err();
    assert!(err.what.contains("holds batches up to 5"), "{err:?}");
}

/// Every single-byte change anywhere in the header, the records and the
/// zeros after them: the log reads whole, or is refused. Never a shorter
/// log (a torn record is a prefix of a write, which no change makes).
#[test]
fn no_changed_byte_shortens_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, offsets) = log_of(dir.path(), 0, 24);
    let last = *offsets.last().unwrap();
    let end = last + HEADER + u64_at(&bytes, last) as usize + TRAILER;
    let mut refused = 0;
    for at in 0..end + HEADER + 8 {
        let mut copy = bytes.clone();
        copy[at] ^= 0x5a;
        match scan(&copy, 0, Layout::Current) {
            Err(_) => refused += 1,
            Ok(s) => assert_eq!(batches(&s).len(), 24, "a change at byte {at}"),
        }
    }
    assert!(refused > end / 2, "most changes are refused ({refused})");
}

#[test]
fn a_truncated_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, offsets) = log_of(dir.path(), 0, 24);
    for cut in [offsets[12], offsets[12] + 5, offsets[23] + 3, 10] {
        let err = scan(&bytes[..cut], 0, Layout::Current).unwrap_err();
        assert!(
            err.what.contains("truncated") || err.what.contains("header"),
            "cut at {cut}: {err:?}"
        );
    }
    // Cut inside the zeros after the last record: nothing is lost.
    let end = offsets[23] + 200;
    let scan = scan(&bytes[..end], 0, Layout::Current).unwrap();
    assert_eq!(scan.batches.len(), 24);
}

#[test]
fn a_zeroed_or_foreign_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, offsets) = log_of(dir.path(), 0, 24);
    let zeroed = vec![0u8; bytes.len()];
    let err = scan(&zeroed, 0, Layout::Current).unwrap_err();
    assert_eq!(err.offset, 0);
    assert!(err.what.contains("zeroed"), "{err:?}");
    // One record zeroed in the middle.
    let mut copy = bytes.clone();
    copy[offsets[10]..offsets[11]].fill(0);
    let err = scan(&copy, 0, Layout::Current).unwrap_err();
    assert_eq!(err.offset, offsets[10] as u64);
    assert!(err.what.contains("zeroed"), "{err:?}");
}

/// A record torn by a crash (a prefix of its write) over the zeros or over
/// the records of the log before it started over is dropped, with no
/// error: it was never acknowledged.
#[test]
fn a_torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.wal");
    let mut wal = Wal::create(&path, 0).unwrap();
    let mut changes = Changes::default();
    let mut put = |wal: &mut Wal, i: u64, size: usize| {
        changes.clear();
        changes.record(PUT, TableId::Journal, "i", i, &vec![b'v'; size]);
        wal.write(&mut changes, true).unwrap();
    };
    for i in 0..30 {
        put(&mut wal, i, 40);
    }
    // A checkpoint: the log starts over, over the old records.
    wal.restart();
    for i in 30..35 {
        put(&mut wal, i, 25);
    }
    let end = wal.end as usize;
    let bytes = std::fs::read(&path).unwrap();
    let sound = scan(&bytes, 30, Layout::Current).unwrap();
    assert_eq!(batches(&sound), (31..=35).collect::<Vec<_>>());
    assert_eq!(sound.ending, Ending::Clean);

    // Batch 36, torn: its header and part of its body reached the file.
    put(&mut wal, 35, 100);
    let full = std::fs::read(&path).unwrap();
    for keep in [HEADER, HEADER + 1, HEADER + 60] {
        let mut torn = bytes.clone();
        torn[end..end + keep].copy_from_slice(&full[end..end + keep]);
        let s = scan(&torn, 30, Layout::Current).unwrap();
        assert_eq!(batches(&s), (31..=35).collect::<Vec<_>>(), "keep {keep}");
        assert_eq!(s.ending, Ending::Torn { offset: end as u64 });
    }
}

#[test]
fn a_legacy_log_reads_as_before() {
    // Records from byte 0, `len, crc, batch` headers, no trailer, no zeros
    // after each: read up to the first record that is not whole.
    let mut log = Vec::new();
    let mut offsets = Vec::new();
    for batch in 1..=5u64 {
        let body = format!("body of batch {batch}");
        offsets.push(log.len());
        log.extend_from_slice(&(body.len() as u64).to_le_bytes());
        log.extend_from_slice(&crc(batch, body.as_bytes()).to_le_bytes());
        log.extend_from_slice(&batch.to_le_bytes());
        log.extend_from_slice(body.as_bytes());
    }
    log.resize(4096, 0);
    let s = scan(&log, 0, Layout::Legacy).unwrap();
    assert_eq!(batches(&s), [1, 2, 3, 4, 5]);
    assert_eq!(s.batches[1].1, b"body of batch 2");
    let mut copy = log.clone();
    copy[offsets[3] + 22] ^= 1;
    assert_eq!(batches(&scan(&copy, 0, Layout::Legacy).unwrap()), [1, 2, 3]);
}
