//! Opening a journal: checking the database, recovering the write-ahead
//! log after an unclean shutdown, and starting a new log.

use std::path::Path;

use redb::{Database, ReadableDatabase};

use super::wal::{self, Wal};
use super::writer::{Tables, WAL_BATCH};
use super::*;

/// Reads a `meta` value, if the table and the key exist.
pub(super) fn meta_value(db: &Database, key: &str) -> Result<Option<u64>, JournalError> {
    let txn = db.begin_read()?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta.get(key)?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Readies a just opened database and its write-ahead log for writing.
///
/// It first checks the whole database file: redb verifies each page's
/// checksum only in this check, not on reads, so without it a damaged
/// value could be read as a different one. (This reads the whole file:
/// about 250 ms for 140 MB here; see docs/durability.md.) After an unclean
/// shutdown (the format says the journal was open) it then reads the log
/// strictly (see [`wal::scan`]) and applies the batches redb lacks in one
/// durable commit, which also marks the journal closed: redb then holds
/// everything, so the log is no longer needed. The log then starts anew
/// (synced), and only then is the journal marked open, durably, so that a
/// crash from here on always finds a log with its header.
pub(super) fn open(mut db: Database, path: &Path) -> Result<(Database, Wal), JournalError> {
    match db.check_integrity() {
        Ok(true) => {}
        // Rolled back to the previous commit: if that lost batches, the log
        // no longer follows on from what redb holds, which is refused below.
        Ok(false) => tracing::warn!("redb found damage in {} and repaired it", path.display()),
        Err(e) => return Err(e.into()),
    }
    let format = meta_value(&db, FORMAT)?;
    let legacy = match format {
        None | Some(FORMAT_CLOSED) => None,
        Some(FORMAT_OPEN) => Some(false),
        Some(FORMAT_OPEN_LEGACY) => Some(true),
        Some(v) => {
            return Err(JournalError::Format(format!(
                "the data dir was written in journal format {v}; this weft reads formats {FORMAT_CLOSED} to {FORMAT_OPEN}"
            )));
        }
    };
    let wal_path = path.with_extension("wal");
    let mut after = meta_value(&db, WAL_BATCH)?.unwrap_or(0);
    if let Some(legacy) = legacy {
        match db.check_integrity() {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("redb repaired {} after an unclean shutdown", path.display())
            }
            Err(e) => return Err(e.into()),
        }
        let damaged = |offset: u64, what: String| JournalError::LogDamaged {
            path: wal_path.clone(),
            offset,
            what,
        };
        let Some(bytes) = wal::read(&wal_path)? else {
            return Err(damaged(
                0,
                "the file is missing, and the journal was not closed cleanly: the results since its last checkpoint are only in this log".into(),
            ));
        };
        let layout = if legacy {
            wal::Layout::Legacy
        } else {
            wal::Layout::Current
        };
        let scan = wal::scan(&bytes, after, layout).map_err(|d| damaged(d.offset, d.what))?;
        if let wal::Ending::Torn { offset } = scan.ending {
            tracing::warn!(
                "dropped the record at byte {offset} of {}: a write cut short by the crash, never acknowledged",
                wal_path.display()
            );
        }
        let txn = db.begin_write()?;
        {
            let mut t = Tables::new(&txn, None);
            for (_, body) in &scan.batches {
                for c in wal::changes(body)? {
                    t.replay(&c)?;
                }
            }
            if let Some((last, _)) = scan.batches.last() {
                after = *last;
                t.meta()?.insert(WAL_BATCH, after)?;
            }
            t.meta()?.insert(FORMAT, FORMAT_CLOSED)?;
        }
        txn.commit()?;
        if !scan.batches.is_empty() {
            tracing::info!(
                "applied {} batches of the write-ahead log after a crash",
                scan.batches.len()
            );
        }
    }
    let wal = Wal::create(&wal_path, after)?;
    let txn = db.begin_write()?;
    {
        txn.open_table(META)?.insert(FORMAT, FORMAT_OPEN)?;
        txn.open_table(INSTANCES)?;
        txn.open_table(JOURNAL)?;
        txn.open_table(INBOX)?;
    }
    txn.commit()?;
    Ok((db, wal))
}
