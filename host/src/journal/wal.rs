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
//! many batches, and the log starts over from its first byte.
//!
//! Batches are numbered; each commit records its number in redb's `meta`
//! table, so the durable copy of redb knows the last batch it holds. When
//! the journal opens, it applies the log's later batches to redb before
//! anything reads it.
//!
//! A record is `len: u64, crc: u32, batch: u64`, then `len` bytes of
//! changes, little-endian; the CRC-32 covers the batch number and the
//! changes. The file grows in zero-filled chunks ahead of its records.
//! Reading stops at the first record that is short, fails its CRC or does
//! not carry the next batch number: zeros, a write torn by a crash, or an
//! older record beyond the end of a log that started over.

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

const HEADER: usize = 20;

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

fn crc(batch: u64, changes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&batch.to_le_bytes());
    h.update(changes);
    h.finalize()
}

/// A batch found in the log: its number and its changes.
pub(super) type Batch = (u64, Vec<u8>);

/// The log file.
pub(super) struct Wal {
    file: File,
    /// Where the next record goes.
    end: u64,
    /// Bytes of the file written so far (records or zeros).
    allocated: u64,
    /// The last batch written (or found in redb).
    batch: u64,
    /// Records written since the last sync.
    unsynced: bool,
}

impl Wal {
    /// Opens (or creates) the log and reads the batches after `after`, the
    /// last batch the durable redb holds, each with its changes.
    pub(super) fn open(path: &Path, after: u64) -> Result<(Wal, Vec<Batch>), JournalError> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| JournalError::Storage(format!("opening {}: {e}", path.display())))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| JournalError::Storage(format!("reading {}: {e}", path.display())))?;
        let mut found = Vec::new();
        let mut at = 0;
        let mut prev: Option<u64> = None;
        while bytes.len() - at >= HEADER {
            let h = &bytes[at..at + HEADER];
            let len = u64::from_le_bytes(h[0..8].try_into().expect("8 bytes"));
            let sum = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
            let batch = u64::from_le_bytes(h[12..20].try_into().expect("8 bytes"));
            let Some(body) = usize::try_from(len)
                .ok()
                .and_then(|len| bytes.get(at + HEADER..(at + HEADER).checked_add(len)?))
            else {
                break;
            };
            if crc(batch, body) != sum || prev.is_some_and(|p| batch != p + 1) {
                break;
            }
            if batch > after {
                if found.is_empty() && batch != after + 1 {
                    return Err(JournalError::Format(format!(
                        "the write-ahead log {} starts at batch {batch}, but the journal holds batches up to {after}",
                        path.display()
                    )));
                }
                found.push((batch, body.to_vec()));
            }
            prev = Some(batch);
            at += HEADER + body.len();
        }
        let batch = found.last().map_or(after, |(b, _)| *b);
        let wal = Wal {
            file,
            end: 0,
            allocated: bytes.len() as u64,
            batch,
            unsynced: false,
        };
        Ok((wal, found))
    }

    /// The number the next record will carry.
    pub(super) fn next_batch(&self) -> u64 {
        self.batch + 1
    }

    /// The last batch written.
    pub(super) fn batch(&self) -> u64 {
        self.batch
    }

    /// Bytes written since the log started over.
    pub(super) fn len(&self) -> u64 {
        self.end
    }

    /// Writes the changes as the next batch and, if `sync`, makes them (and
    /// every record before them) durable. On an error nothing counts as
    /// written: the next record goes in the same place.
    pub(super) fn write(&mut self, changes: &mut Changes, sync: bool) -> Result<(), JournalError> {
        let batch = self.next_batch();
        let body_len = changes.0.len() - HEADER;
        let sum = crc(batch, &changes.0[HEADER..]);
        let h = &mut changes.0[..HEADER];
        h[0..8].copy_from_slice(&(body_len as u64).to_le_bytes());
        h[8..12].copy_from_slice(&sum.to_le_bytes());
        h[12..20].copy_from_slice(&batch.to_le_bytes());
        let end = self.end + changes.0.len() as u64;
        if end > self.allocated {
            let grown = end.div_ceil(GROW_BY) * GROW_BY;
            let zeros = vec![0u8; (grown - self.allocated) as usize];
            self.file
                .write_all_at(&zeros, self.allocated)
                .map_err(|e| JournalError::Storage(format!("growing the write-ahead log: {e}")))?;
            self.allocated = grown;
        }
        self.file
            .write_all_at(&changes.0, self.end)
            .map_err(|e| JournalError::Storage(format!("writing the write-ahead log: {e}")))?;
        self.unsynced = true;
        if sync {
            self.sync()?;
        }
        self.end += changes.0.len() as u64;
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
            self.file
                .sync_data()
                .map_err(|e| JournalError::Storage(format!("syncing the write-ahead log: {e}")))?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Starts over from the first byte, once redb holds every batch durably.
    pub(super) fn restart(&mut self) {
        self.end = 0;
        self.unsynced = false;
    }
}
