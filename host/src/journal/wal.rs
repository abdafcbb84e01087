//! The write-ahead log that makes the journal's batches durable.
//!
//! A batch's changes to the tables are committed to redb without waiting for
//! the disk (a non-durable commit, which redb keeps in its write buffer) and
//! appended to this log, which is then synced: one small sequential write
//! and one `fdatasync` per batch. A durable redb commit instead writes every
//! B-tree page the batch touched, and a batch of steps of different
//! instances touches a leaf page per instance (~95 pages of 4 KiB for 100
//! steps). Once the log passes [`CHECKPOINT_BYTES`], and when the journal
//! closes, redb commits durably (a checkpoint), writing its pages once for
//! many batches, and the log starts over after its header.
//!
//! Batches are numbered; each commit records its number in redb's `meta`
//! table, so the durable copy of redb knows the last batch it holds. When
//! the journal opens after a crash, it applies the log's later batches to
//! redb before anything reads it.
//!
//! Layout: a 16-byte header (`MAGIC`, then a CRC-32 of it), synced before
//! the journal is marked open, so that a log that is missing or zeroed
//! while the journal says it may need it is found out. Then records, each
//! a header `len: u64, batch: u64, crc: u32, head_crc: u32`, `len` bytes of
//! changes, and a trailer repeating `crc` and `head_crc`; little-endian.
//! `crc` is a CRC-32 of the batch number and the changes, `head_crc` one of
//! the header's first 20 bytes. Every write puts [`HEADER`] zero bytes
//! after its record, so the newest record is always followed by zeros; the
//! file grows in zero-filled chunks of [`GROW_BY`] ahead of its records.
//!
//! Reading ([`scan`]) takes records while each is whole and carries the
//! next batch number. What ends that run decides whether the log is sound:
//! - zeros: its end, unless a whole record of a later batch lies anywhere
//!   beyond (then the end is damage: a record zeroed);
//! - a sound header whose changes fail their CRC and whose trailer is not
//!   there: a record torn by the crash, dropped with a warning. A write is
//!   one `pwrite` of record and zeros, so what a crash cuts short is a
//!   prefix of the newest record, never acknowledged (and never followed
//!   by a later batch);
//! - anything else is damage: a record that was written whole (its
//!   trailer is there) and changed since, a damaged header, a record cut
//!   by the end of the file (truncated), a record of another batch.
//!
//! Records of earlier batches beyond the end are what is left of the log
//! before it last started over; they are not read.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::JournalError;

/// Log size past which the writer checkpoints. A checkpoint holds up the
/// writer while redb writes and syncs its pages: at 16 MiB, 40-60 ms on the
/// bench machine late in W2 at M = 20000 (~120 MB of journal; 4 MiB took
/// 10-30 ms, 47 MiB 96 ms), about once a second under full load.
pub(super) const CHECKPOINT_BYTES: u64 = 16 << 20;

/// Bytes of a record's header.
pub(super) const HEADER: usize = 24;
/// Bytes of a record's trailer.
pub(super) const TRAILER: usize = 8;
/// Bytes of a record's header in [`Layout::Legacy`].
const LEGACY_HEADER: usize = 20;

/// The log file's header: identifies a log of this layout.
const MAGIC: &[u8; 12] = b"weft-wal-v1\0";
/// Where the records start, after the file header (magic and its CRC).
pub(super) const LOG_START: u64 = 16;

/// The log file grows by zero-filled chunks of this size ahead of its
/// records: overwriting written blocks, `fdatasync` need not update the
/// file's size and block map, which makes each sync ~20% faster here.
const GROW_BY: u64 = 1 << 20;

/// Change kinds in a record.
pub(super) const PUT: u8 = 1;
pub(super) const REMOVE: u8 = 2;
/// Removes the keys `(id, from..)` of a table keyed by `(id, seq)`.
pub(super) const REMOVE_FROM: u8 = 3;

/// Tables, as named in a record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(super) enum TableId {
    Instances = 1,
    Journal = 2,
    Inbox = 3,
    Meta = 4,
}

impl TableId {
    fn from_u8(b: u8) -> Option<TableId> {
        Some(match b {
            1 => TableId::Instances,
            2 => TableId::Journal,
            3 => TableId::Inbox,
            4 => TableId::Meta,
            _ => return None,
        })
    }

    /// Whether keys are `(id, seq)` rather than a string.
    pub(super) fn sequenced(self) -> bool {
        matches!(self, TableId::Journal | TableId::Inbox)
    }
}

/// The changes of one batch, encoded as they are made, behind room for the
/// record header. The default holds no buffer, so taking it is free.
#[derive(Default)]
pub(super) struct Changes(Vec<u8>);

impl Changes {
    /// Empties the record (keeping its buffer); call before each batch.
    pub(super) fn clear(&mut self) {
        self.0.clear();
        self.0.resize(HEADER, 0);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.len() <= HEADER
    }

    /// Bytes of the record, header included.
    pub(super) fn record_len(&self) -> u64 {
        self.0.len() as u64
    }

    fn str(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Records a change. `seq` is the key's second half in sequenced
    /// tables (the first key removed for `REMOVE_FROM`); `value` is the
    /// value of a `PUT`.
    pub(super) fn record(&mut self, kind: u8, table: TableId, id: &str, seq: u64, value: &[u8]) {
        self.0.push(kind);
        self.0.push(table as u8);
        self.str(id);
        if table.sequenced() {
            self.0.extend_from_slice(&seq.to_le_bytes());
        }
        if kind == PUT {
            self.0
                .extend_from_slice(&(value.len() as u64).to_le_bytes());
            self.0.extend_from_slice(value);
        }
    }
}

/// One decoded change of a record.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Change<'a> {
    pub kind: u8,
    pub table: TableId,
    pub id: &'a str,
    pub seq: u64,
    pub value: &'a [u8],
}

/// Decodes the changes of a record.
pub(super) fn changes(mut b: &[u8]) -> Result<Vec<Change<'_>>, JournalError> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], JournalError> {
        if b.len() < n {
            return Err(JournalError::Format("a log record ends early".into()));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn u32_of(b: &mut &[u8]) -> Result<usize, JournalError> {
        Ok(u32::from_le_bytes(take(b, 4)?.try_into().expect("4 bytes")) as usize)
    }
    fn u64_of(b: &mut &[u8]) -> Result<usize, JournalError> {
        let n = u64::from_le_bytes(take(b, 8)?.try_into().expect("8 bytes"));
        usize::try_from(n).map_err(|_| JournalError::Format("a log value is too long".into()))
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let head = take(&mut b, 2)?;
        let (kind, table) = (head[0], TableId::from_u8(head[1]));
        let table = match table {
            Some(t) if (PUT..=REMOVE_FROM).contains(&kind) => t,
            _ => return Err(JournalError::Format("unknown change in the log".into())),
        };
        let n = u32_of(&mut b)?;
        let id = std::str::from_utf8(take(&mut b, n)?)
            .map_err(|_| JournalError::Format("a key in the log is not UTF-8".into()))?;
        let seq = if table.sequenced() {
            u64::from_le_bytes(take(&mut b, 8)?.try_into().expect("8 bytes"))
        } else {
            0
        };
        let value = if kind == PUT {
            let n = u64_of(&mut b)?;
            take(&mut b, n)?
        } else {
            &[]
        };
        out.push(Change {
            kind,
            table,
            id,
            seq,
            value,
        });
    }
    Ok(out)
}

pub(super) fn crc(batch: u64, changes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&batch.to_le_bytes());
    h.update(changes);
    h.finalize()
}

pub(super) fn file_header() -> [u8; LOG_START as usize] {
    let mut h = [0u8; LOG_START as usize];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    let sum = crc32fast::hash(MAGIC);
    h[MAGIC.len()..].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Fills in a record's header (and trailer) in `record`: `HEADER` bytes,
/// the body, then `TRAILER` bytes.
pub(super) fn seal(record: &mut [u8], batch: u64) {
    let body_end = record.len() - TRAILER;
    let body_len = (body_end - HEADER) as u64;
    let sum = crc(batch, &record[HEADER..body_end]);
    record[0..8].copy_from_slice(&body_len.to_le_bytes());
    record[8..16].copy_from_slice(&batch.to_le_bytes());
    record[16..20].copy_from_slice(&sum.to_le_bytes());
    let head_sum = crc32fast::hash(&record[0..20]);
    record[20..24].copy_from_slice(&head_sum.to_le_bytes());
    let (head, tail) = record.split_at_mut(body_end);
    tail.copy_from_slice(&head[16..24]);
}

mod scan;
#[cfg(test)]
use scan::Scan;
#[cfg(test)]
use scan::u64_at;
pub(super) use scan::{Ending, Layout, scan};

/// The log file.
pub(super) struct Wal {
    file: File,
    /// Where the next record goes.
    end: u64,
    /// Bytes of the file written so far (header, records or zeros).
    allocated: u64,
    /// The last batch written (or found in redb).
    batch: u64,
    /// Records written since the last sync.
    unsynced: bool,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> JournalError {
    JournalError::Io {
        what: format!("{what} {}", path.display()),
        error: e,
    }
}

/// Reads the whole log at `path`; `None` if there is no such file.
pub(super) fn read(path: &Path) -> Result<Option<Vec<u8>>, JournalError> {
    match File::open(path) {
        Ok(mut f) => {
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)
                .map_err(|e| io_error("reading", path, e))?;
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("opening", path, e)),
    }
}

impl Wal {
    /// Starts a new, empty log at `path` (redb must hold every batch up to
    /// `batch`), durably: header, one chunk of zeros, and the directory
    /// entry are synced before this returns.
    pub(super) fn create(path: &Path, batch: u64) -> Result<Wal, JournalError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| io_error("creating", path, e))?;
        let mut chunk = vec![0u8; GROW_BY as usize];
        chunk[..LOG_START as usize].copy_from_slice(&file_header());
        file.write_all_at(&chunk, 0)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("writing", path, e))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("syncing", dir, e))?;
        }
        Ok(Wal {
            file,
            end: LOG_START,
            allocated: GROW_BY,
            batch,
            unsynced: false,
        })
    }

    /// The number the next record will carry.
    pub(super) fn next_batch(&self) -> u64 {
        self.batch + 1
    }

    /// The last batch written.
    pub(super) fn batch(&self) -> u64 {
        self.batch
    }

    /// Bytes of records written since the log started over.
    pub(super) fn len(&self) -> u64 {
        self.end - LOG_START
    }

    /// Writes the changes as the next batch and, if `sync`, makes them (and
    /// every record before them) durable. On an error nothing counts as
    /// written: the next record goes in the same place.
    pub(super) fn write(&mut self, changes: &mut Changes, sync: bool) -> Result<(), JournalError> {
        let batch = self.next_batch();
        // The trailer, then the zeros that mark the log's end, go out in
        // the same write as the record.
        changes.0.resize(changes.0.len() + TRAILER, 0);
        seal(&mut changes.0, batch);
        let record_len = changes.0.len() as u64;
        changes.0.resize(changes.0.len() + HEADER, 0);
        let end = self.end + changes.0.len() as u64;
        if end > self.allocated {
            let grown = end.div_ceil(GROW_BY) * GROW_BY;
            let zeros = vec![0u8; (grown - self.allocated) as usize];
            self.file
                .write_all_at(&zeros, self.allocated)
                .map_err(|error| JournalError::Io {
                    what: "growing the write-ahead log".into(),
                    error,
                })?;
            self.allocated = grown;
        }
        let written = self.file.write_all_at(&changes.0, self.end);
        changes.0.truncate(record_len as usize);
        written.map_err(|error| JournalError::Io {
            what: "writing the write-ahead log".into(),
            error,
        })?;
        self.unsynced = true;
        if sync {
            self.sync()?;
        }
        self.end += record_len;
        self.batch = batch;
        Ok(())
    }

    /// Takes back the last record, `len` bytes, whose batch redb failed
    /// to commit: the next record overwrites it under the same number.
    pub(super) fn unwrite(&mut self, len: u64) {
        self.end -= len;
        self.batch -= 1;
    }

    /// Makes every record written so far durable.
    pub(super) fn sync(&mut self) -> Result<(), JournalError> {
        if self.unsynced {
            self.file.sync_data().map_err(|error| JournalError::Io {
                what: "syncing the write-ahead log".into(),
                error,
            })?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Starts over after the header, once redb holds every batch durably.
    /// The old records stay until overwritten; their batch numbers are all
    /// lower than the new ones', so they are never read as part of the log.
    pub(super) fn restart(&mut self) {
        self.end = LOG_START;
        self.unsynced = false;
    }
}

#[cfg(test)]
mod tests;
