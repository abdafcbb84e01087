//! Reading a write-ahead log after a crash: the run of whole records, and
//! what ends it (see the module doc of [`super`]).

use super::{HEADER, LEGACY_HEADER, LOG_START, TRAILER, crc, file_header};

/// A batch found in the log: its number and its changes.
pub(in crate::journal) type Batch = (u64, Vec<u8>);

/// How a log ends (see the module doc).
#[derive(Debug, PartialEq, Eq)]
pub(in crate::journal) enum Ending {
    /// Zeros after the last record.
    Clean,
    /// A record torn by the crash at this offset, dropped: it was never
    /// acknowledged.
    Torn { offset: u64 },
}

/// What reading a log found.
#[derive(Debug)]
pub(in crate::journal) struct Scan {
    /// The batches after the one redb holds, in order.
    pub batches: Vec<Batch>,
    /// Every whole record of the run, those redb holds included.
    pub records: usize,
    pub ending: Ending,
}

/// Why a log cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::journal) struct Damage {
    /// Offset of the first byte that cannot be trusted.
    pub offset: u64,
    pub what: String,
}

pub(in crate::journal) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// How the records of a log are laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(in crate::journal) enum Layout {
    /// This weft's: see the module doc.
    Current,
    /// weft's before the file header: `len: u64, crc: u32, batch: u64`,
    /// then the body; no trailer, no zeros after each record.
    Legacy,
}

/// What is at an offset where a record may start.
enum At {
    /// A whole record: its batch, and where its body and the record end.
    Whole {
        batch: u64,
        body: std::ops::Range<usize>,
        end: usize,
    },
    /// A sound header whose body fails its CRC; `complete` when its
    /// trailer is there, i.e. the whole write reached the file.
    BadBody { complete: bool },
    /// A sound header whose record runs past the end of the file.
    PastEnd,
    /// No sound header.
    BadHeader,
}

fn record_at(b: &[u8], at: usize, layout: Layout) -> At {
    let header = match layout {
        Layout::Current => HEADER,
        Layout::Legacy => LEGACY_HEADER,
    };
    let Some(h) = at.checked_add(header).and_then(|end| b.get(at..end)) else {
        return At::BadHeader;
    };
    let (len, batch, sum) = match layout {
        Layout::Current => {
            if crc32fast::hash(&h[0..20]) != u32_at(h, 20) {
                return At::BadHeader;
            }
            (u64_at(h, 0), u64_at(h, 8), u32_at(h, 16))
        }
        Layout::Legacy => (u64_at(h, 0), u64_at(h, 12), u32_at(h, 8)),
    };
    let trailer = if layout == Layout::Current {
        TRAILER
    } else {
        0
    };
    let Some(end) = usize::try_from(len)
        .ok()
        .and_then(|len| (at + header).checked_add(len)?.checked_add(trailer))
    else {
        return At::PastEnd;
    };
    if end > b.len() {
        return At::PastEnd;
    }
    let body = at + header..end - trailer;
    if len == 0 && layout == Layout::Legacy {
        return At::BadHeader;
    }
    if crc(batch, &b[body.clone()]) == sum {
        At::Whole { batch, body, end }
    } else {
        let complete = trailer > 0 && b[end - trailer..end] == h[16..24];
        At::BadBody { complete }
    }
}

/// The first whole record at or after `from` whose batch is `min` or later:
/// its offset and batch. Batches far beyond `min` are not looked for, which
/// keeps the search to a cheap test at most offsets.
fn later_record(b: &[u8], from: usize, min: u64) -> Option<(usize, u64)> {
    const AHEAD: u64 = 1 << 32;
    (from..b.len().saturating_sub(HEADER - 1)).find_map(|at| {
        let batch = u64_at(b, at + 8);
        if batch < min || batch - min >= AHEAD {
            return None;
        }
        match record_at(b, at, Layout::Current) {
            At::Whole { batch, .. } => Some((at, batch)),
            _ => None,
        }
    })
}

/// Reads the log `b` (the whole file) given that redb holds every batch up
/// to `after`. A [`Layout::Legacy`] log is read as weft read it then: up to
/// the first record that is not whole.
pub(in crate::journal) fn scan(b: &[u8], after: u64, layout: Layout) -> Result<Scan, Damage> {
    let start = match layout {
        Layout::Legacy => 0,
        Layout::Current => {
            if b.len() < LOG_START as usize || b[..LOG_START as usize] != file_header() {
                let what = if b.iter().all(|&x| x == 0) {
                    "the log is empty or zeroed"
                } else {
                    "the log's header is not weft's"
                };
                return Err(Damage {
                    offset: 0,
                    what: what.into(),
                });
            }
            LOG_START as usize
        }
    };
    let mut at = start;
    let mut prev: Option<u64> = None;
    let mut batches = Vec::new();
    let mut records = 0;
    while let At::Whole { batch, body, end } = record_at(b, at, layout) {
        if prev.is_some_and(|p| batch != p + 1) {
            break;
        }
        if batch > after {
            if batches.is_empty() && batch != after + 1 {
                return Err(Damage {
                    offset: at as u64,
                    what: format!(
                        "the log goes on from batch {batch}, but the journal holds batches up to {after} only"
                    ),
                });
            }
            batches.push((batch, b[body].to_vec()));
        }
        records += 1;
        prev = Some(batch);
        at = end;
    }
    let ending = match layout {
        Layout::Legacy => Ending::Clean,
        Layout::Current => ending(b, at, prev, after)?,
    };
    Ok(Scan {
        batches,
        records,
        ending,
    })
}

/// How the log ends at `at`, where the run of records (whose last batch is
/// `prev`) ended.
fn ending(b: &[u8], at: usize, prev: Option<u64>, after: u64) -> Result<Ending, Damage> {
    let damage = |what: String| {
        Err(Damage {
            offset: at as u64,
            what,
        })
    };
    let next = prev.map_or(after + 1, |p| (p + 1).max(after + 1));
    let zeros = b
        .get(at..at + HEADER)
        .is_some_and(|h| h.iter().all(|&x| x == 0));
    // Every later batch beyond the end means that the end is damage.
    if let Some((later, batch)) = later_record(b, at + 1, next) {
        let how = if zeros { "zeroed" } else { "damaged" };
        return damage(format!(
            "the record of batch {next} is {how}, but the log goes on with batch {batch} at byte {later}"
        ));
    }
    if zeros {
        return Ok(Ending::Clean);
    }
    match record_at(b, at, Layout::Current) {
        At::BadBody { complete: false } => Ok(Ending::Torn { offset: at as u64 }),
        At::BadBody { complete: true } => damage(format!(
            "the record of batch {next} was written whole, and has changed since"
        )),
        At::PastEnd => damage("the log ends inside a record: it was truncated".into()),
        At::BadHeader if at + HEADER > b.len() => {
            damage("the log ends at a record's end, without the zeros that follow the last one: it was truncated".into())
        }
        At::BadHeader => damage(format!("the header of the record of batch {next} is damaged")),
        At::Whole { batch, .. } => damage(format!(
            "a record of batch {batch} where batch {next} was expected"
        )),
    }
}
