//! Damaged journal files: byte flips and overwritten 4 KiB pages at many
//! offsets of both files of real data dirs, one left by `kill -9` and one
//! closed cleanly. For every damaged copy, `weft history` must not panic,
//! and must print the same history as the undamaged dir or fail with a
//! message: never fewer or other entries with exit 0.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A small deterministic generator (xorshift), so every run damages the
/// same offsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The offsets of the log's records, and where the last ends (see
/// host/src/journal/wal.rs for the layout: a 16-byte header, then per
/// record a 24-byte header starting with `len: u64`, the body, and an
/// 8-byte trailer).
fn records(log: &[u8]) -> (Vec<usize>, usize) {
    let mut at = 16;
    let mut offsets = Vec::new();
    while at + 24 <= log.len() {
        let len = u64::from_le_bytes(log[at..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offsets.push(at);
        at += 24 + len + 8;
    }
    (offsets, at)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["journal.redb", "journal.wal"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

/// `weft history ID` in `dir`: exit code, stdout, stderr.
fn history(w: &Weft, dir: &Path, id: &str) -> Done {
    Done::from(
        w.cmd(&["history", id])
            .env("WEFT_DATA_DIR", dir)
            .output()
            .unwrap(),
    )
}

/// Damages copies of `dir` and checks each one. Returns (same, refused).
fn damage_and_check(w: &Weft, dir: &Path, id: &str, seed: u64, trials: usize) -> (usize, usize) {
    // Opening a data dir left by a crash applies its log and closes it:
    // read the history from a copy, and damage copies of the original.
    let pristine = w.dir.path().join(format!("pristine-{seed}"));
    copy_dir(dir, &pristine);
    let read = w.dir.path().join(format!("read-{seed}"));
    copy_dir(dir, &read);
    let original = history(w, &read, id);
    assert!(original.ok(), "{}", original.stderr);
    let mut rng = Rng(seed);
    let (mut same, mut refused) = (0, 0);
    for trial in 0..trials {
        let copy: PathBuf = w.dir.path().join(format!("damaged-{seed}-{trial}"));
        copy_dir(&pristine, &copy);
        let file = if rng.below(2) == 0 {
            "journal.redb"
        } else {
            "journal.wal"
        };
        let path = copy.join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let what = if file == "journal.wal" {
            // Most of a log is zeros ahead of its records: damage the
            // records and the zeros after them more often than not.
            let span = if rng.below(4) == 0 {
                bytes.len()
            } else {
                records(&bytes).1 + 64
            };
            let at = rng.below(span as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            format!("bit flip at byte {at} of {file}")
        } else if rng.below(3) == 0 {
            let pages = bytes.len() / 4096;
            let page = rng.below(pages as u64) as usize;
            for b in &mut bytes[page * 4096..(page + 1) * 4096] {
                *b = rng.next() as u8;
            }
            format!("page {page} of {file} overwritten")
        } else {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
            format!("bit flip at byte {at} of {file}")
        };
        std::fs::write(&path, &bytes).unwrap();
        let got = history(w, &copy, id);
        assert!(
            !got.stderr.contains("panicked") && got.code != Some(101),
            "{what}: weft panicked:\n{}",
            got.stderr
        );
        if got.ok() {
            assert_eq!(
                got.stdout, original.stdout,
                "{what}: exit 0 with another history"
            );
            same += 1;
        } else {
            assert!(
                got.stderr.contains("error:") && got.stderr.len() > 20,
                "{what}: failed without a message ({:?}): {}",
                got.code,
                got.stderr
            );
            refused += 1;
        }
        std::fs::remove_dir_all(&copy).unwrap();
    }
    (same, refused)
}

#[test]
fn damaged_journals_are_refused_never_misread() {
    let w = Weft::new();
    // A data dir left by `kill -9` in the middle of a long run: the last
    // steps are in the write-ahead log only.
    let input = r#"{"scenario":"long","n":60,"ms":40}"#;
    let mut run = w.spawn_scenario("run", "long", input);
    run.wait_stderr("25 steps", |t| t.matches("Step work-").count() >= 25);
    run.kill9();
    let crashed = w.dir.path().join("crashed");
    copy_dir(&w.data_dir(), &crashed);
    let (same, refused) = damage_and_check(&w, &crashed, "long", 0x9e37_79b9_7f4a_7c15, 120);
    eprintln!("after kill -9: {same} copies read the same, {refused} refused");
    assert!(refused > 20, "damage was found ({refused} of 120)");

    // The same data dir closed cleanly (opening it applied the log).
    let closed = w.dir.path().join("closed");
    copy_dir(&crashed, &closed);
    assert!(history(&w, &closed, "long").ok());
    let (same, refused) = damage_and_check(&w, &closed, "long", 0x2545_f491_4f6c_dd1d, 120);
    eprintln!("closed: {same} copies read the same, {refused} refused");
    assert!(refused > 4, "damage was found ({refused} of 120)");
}

/// The write-ahead log damage of the hostile test, each named with the file
/// and the offset, and `weft check` saying the same; `--repair` gives the
/// log up from there on and the data dir opens again.
#[test]
fn a_damaged_log_is_named_and_can_be_given_up() {
    let w = Weft::new();
    let input = r#"{"scenario":"long","n":40,"ms":40}"#;
    let mut run = w.spawn_scenario("run", "long", input);
    run.wait_stderr("20 steps", |t| t.matches("Step work-").count() >= 20);
    run.kill9();
    let crashed = w.dir.path().join("crashed");
    copy_dir(&w.data_dir(), &crashed);
    let wal = crashed.join("journal.wal");
    // The records' offsets, as the log lays them out.
    let bytes = std::fs::read(&wal).unwrap();
    let (offsets, _) = records(&bytes);
    assert!(offsets.len() > 12, "{} records", offsets.len());

    let damaged = |name: &str, f: &dyn Fn(&Path)| {
        let dir = w.dir.path().join(name);
        copy_dir(&crashed, &dir);
        f(&dir.join("journal.wal"));
        dir
    };
    let flipped = damaged("flipped", &|p| {
        let mut b = std::fs::read(p).unwrap();
        b[offsets[10] + 30] ^= 0xff;
        std::fs::write(p, b).unwrap();
    });
    let truncated = damaged("truncated", &|p| {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_len(offsets[12] as u64).unwrap();
    });
    let zeroed = damaged("zeroed", &|p| {
        let len = std::fs::metadata(p).unwrap().len();
        std::fs::write(p, vec![0u8; len as usize]).unwrap();
    });
    let deleted = damaged("deleted", &|p| std::fs::remove_file(p).unwrap());
    for (dir, offset) in [
        (&flipped, offsets[10]),
        (&truncated, offsets[12]),
        (&zeroed, 0),
        (&deleted, 0),
    ] {
        for verb in [&["history", "long"][..], &["status", "long"], &["list"]] {
            let got = Done::from(w.cmd(verb).env("WEFT_DATA_DIR", dir).output().unwrap());
            assert_eq!(got.code, Some(1), "{verb:?} in {dir:?}: {}", got.stderr);
            assert!(
                got.stderr.contains("journal.wal")
                    && got.stderr.contains(&format!("byte {offset} on")),
                "{verb:?} in {dir:?}: {}",
                got.stderr
            );
        }
        let check = Done::from(
            w.cmd(&["check"])
                .env("WEFT_DATA_DIR", dir)
                .output()
                .unwrap(),
        );
        assert_eq!(check.code, Some(1), "{}", check.stdout);
        assert!(check.stdout.contains("DAMAGED"), "{}", check.stdout);
    }
    // `weft resume` refuses too: nothing runs again on a damaged journal.
    let resumed = Done::from(
        w.cmd(&["resume", "long"])
            .env("WEFT_DATA_DIR", &flipped)
            .output()
            .unwrap(),
    );
    assert_eq!(resumed.code, Some(1), "{}", resumed.stderr);
    assert!(!resumed.stderr.contains("EXEC"), "{}", resumed.stderr);

    // Given up from record 10 on: the first 9 batches remain.
    let repaired = Done::from(
        w.cmd(&["check", "--repair"])
            .env("WEFT_DATA_DIR", &flipped)
            .output()
            .unwrap(),
    );
    assert!(repaired.ok(), "{}{}", repaired.stdout, repaired.stderr);
    let after = history(&w, &flipped, "long");
    assert!(after.ok(), "{}", after.stderr);
    let intact = history(&w, &crashed, "long");
    assert!(intact.stdout.starts_with(&after.stdout));
    assert!(after.stdout.lines().count() < intact.stdout.lines().count());
}
