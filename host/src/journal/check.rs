//! `weft check`: verifies a journal's files without opening it for writing.
//!
//! It checks the whole redb file (every page's checksum, through redb's own
//! integrity check), reads the write-ahead log the way opening would after a
//! crash, and decodes every instance, journal entry and buffered event. Each
//! finding is a line of the report; the journal is sound when none is a
//! problem.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::recover::meta_value;
use super::*;

/// One line of a check's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Something checked and found sound.
    Ok(String),
    /// Something that may need the user, but loses nothing.
    Note(String),
    /// Damage.
    Problem(String),
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Where the write-ahead log stops being trustworthy, if it does.
    pub log_damage_at: Option<u64>,
}

impl Report {
    /// Whether nothing damaged was found.
    pub fn sound(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| matches!(f, Finding::Problem(_)))
    }

    fn ok(&mut self, s: String) {
        self.findings.push(Finding::Ok(s));
    }
    fn note(&mut self, s: String) {
        self.findings.push(Finding::Note(s));
    }
    fn problem(&mut self, s: String) {
        self.findings.push(Finding::Problem(s));
    }
}

/// Checks the journal at `path` (the `.redb` file; the log is beside it).
/// Fails only when the file cannot be examined at all (missing, or held by
/// another process); damage is reported in the [`Report`].
pub fn check(path: &Path) -> Result<Report, JournalError> {
    let mut report = Report::default();
    if !path.exists() {
        return Err(JournalError::Storage(format!(
            "there is no journal at {}",
            path.display()
        )));
    }
    let mut db = match Database::open(path).map_err(JournalError::from) {
        Ok(db) => db,
        Err(JournalError::InUse) => return Err(JournalError::InUse),
        Err(e) => {
            report.problem(format!("{}: redb cannot open it: {e}", path.display()));
            return Ok(report);
        }
    };
    match db.check_integrity().map_err(JournalError::from) {
        Ok(true) => report.ok(format!(
            "{}: every page's checksum verifies",
            path.display()
        )),
        Ok(false) => report.note(format!(
            "{}: redb repaired its allocation state (as after an unclean shutdown)",
            path.display()
        )),
        Err(e) => {
            report.problem(format!("{}: {e}", path.display()));
            return Ok(report);
        }
    }
    let meta = |key| meta_value(&db, key);
    let (format, after) = match (meta(FORMAT), meta(writer::WAL_BATCH)) {
        (Ok(f), Ok(a)) => (f, a.unwrap_or(0)),
        (Err(e), _) | (_, Err(e)) => {
            report.problem(format!("{}: reading its meta table: {e}", path.display()));
            return Ok(report);
        }
    };
    check_log(path, format, after, &mut report);
    if let Err(e) = check_records(&db, &mut report) {
        report.problem(format!("{}: {e}", path.display()));
    }
    Ok(report)
}

fn check_log(path: &Path, format: Option<u64>, after: u64, report: &mut Report) {
    let wal_path = path.with_extension("wal");
    let shown = wal_path.display();
    let legacy = match format {
        None | Some(FORMAT_CLOSED) => {
            report.ok(format!(
                "{shown}: not needed, the journal was closed cleanly (redb holds every batch)"
            ));
            return;
        }
        Some(FORMAT_OPEN) => false,
        Some(FORMAT_OPEN_LEGACY) => true,
        Some(v) => {
            report.problem(format!(
                "{}: journal format {v}, which this weft does not read",
                path.display()
            ));
            return;
        }
    };
    let bytes = match wal::read(&wal_path) {
        Ok(Some(b)) => b,
        Ok(None) => {
            report.log_damage_at = Some(0);
            report.problem(format!(
                "{shown}: missing, but the journal was not closed cleanly, so it may hold results redb lacks"
            ));
            return;
        }
        Err(e) => {
            report.problem(format!("{shown}: {e}"));
            return;
        }
    };
    let layout = if legacy {
        wal::Layout::Legacy
    } else {
        wal::Layout::Current
    };
    match wal::scan(&bytes, after, layout) {
        Ok(scan) => {
            report.ok(format!(
                "{shown}: {} whole records; {} batches to apply to redb when weft next opens the data dir \
                 (the counts below are of redb alone)",
                scan.records,
                scan.batches.len()
            ));
            for (batch, body) in &scan.batches {
                if let Err(e) = wal::changes(body) {
                    report.problem(format!("{shown}: batch {batch} does not decode: {e}"));
                }
            }
            if let wal::Ending::Torn { offset } = scan.ending {
                report.note(format!(
                    "{shown}: the record at byte {offset} was torn by the crash (never acknowledged); it will be dropped"
                ));
            }
        }
        Err(d) => {
            report.log_damage_at = Some(d.offset);
            report.problem(format!(
                "{shown}: cannot be trusted from byte {} on: {}",
                d.offset, d.what
            ));
        }
    }
}

/// Decodes every record and checks that journals and inboxes belong to an
/// instance.
fn check_records(db: &Database, report: &mut Report) -> Result<(), JournalError> {
    let txn = db.begin_read()?;
    let mut ids = BTreeSet::new();
    let mut bad = 0;
    let instances = match txn.open_table(INSTANCES) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    for row in instances.iter().flat_map(|t| t.iter()).flatten() {
        let (k, v) = row?;
        match decode::<InstanceRecord>(v.value()) {
            Ok(rec) if rec.id == k.value() => {
                ids.insert(rec.id);
            }
            Ok(rec) => {
                bad += 1;
                report.problem(format!(
                    "instance `{}` is stored under the key `{}`",
                    rec.id,
                    k.value()
                ));
            }
            Err(e) => {
                bad += 1;
                report.problem(format!("instance `{}` does not decode: {e}", k.value()));
            }
        }
    }
    report.ok(format!("{} instances decode", ids.len()));
    for (def, what, entries) in [
        (JOURNAL, "journal entries", true),
        (INBOX, "buffered events", false),
    ] {
        let table = match txn.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut n = 0u64;
        for row in table.iter()? {
            let (k, v) = row?;
            let (id, seq) = k.value();
            let decoded = if entries {
                decode::<Entry>(v.value()).map(drop)
            } else {
                decode::<EventRecord>(v.value()).map(drop)
            };
            if let Err(e) = decoded {
                bad += 1;
                report.problem(format!("{what}: `{id}` #{seq} does not decode: {e}"));
            } else if !ids.contains(id) {
                bad += 1;
                report.problem(format!("{what}: `{id}` #{seq} belongs to no instance"));
            }
            n += 1;
            if bad > 20 {
                report.problem("more damage not listed".into());
                return Ok(());
            }
        }
        report.ok(format!("{n} {what} decode"));
    }
    Ok(())
}

/// Gives up the write-ahead log from byte `offset` on (zeroes it), so that
/// the journal opens with the batches before it. The results logged from
/// there on are lost; that is the point of asking the user first.
pub fn discard_log_from(path: &Path, offset: u64) -> Result<(), JournalError> {
    use std::os::unix::fs::FileExt;
    let wal_path = path.with_extension("wal");
    if offset < wal::LOG_START || !wal_path.exists() {
        // Nothing of it can be trusted: a new, empty log.
        return wal::Wal::create(&wal_path, 0).map(drop);
    }
    let io = |error: std::io::Error| JournalError::Io {
        what: wal_path.display().to_string(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&wal_path)
        .map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    // Zeros from `offset` to a whole chunk past it: the log then ends there.
    let end = (len.max(offset) + wal::HEADER as u64).div_ceil(1 << 20) * (1 << 20);
    file.write_all_at(&vec![0u8; (end - offset) as usize], offset)
        .map_err(io)?;
    file.sync_all().map_err(io)
}
