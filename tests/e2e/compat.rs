//! Data dirs written by the previous release (tests/fixtures/journal-v0.1):
//! one closed cleanly, one left by `kill -9` with results only in its
//! write-ahead log of the old layout. This weft opens both with the same
//! history that release printed, nothing lost.

use crate::common::*;

fn fixture(w: &Weft, name: &str) -> std::path::PathBuf {
    let from = repo_root().join("tests/fixtures/journal-v0.1").join(name);
    let to = w.dir.path().join(name);
    std::fs::create_dir_all(&to).unwrap();
    for f in ["journal.redb", "journal.wal"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to
}

fn expected(name: &str) -> String {
    std::fs::read_to_string(
        repo_root()
            .join("tests/fixtures/journal-v0.1")
            .join(name)
            .join("history.jsonl"),
    )
    .unwrap()
}

fn run_in(w: &Weft, dir: &std::path::Path, args: &[&str]) -> Done {
    Done::from(w.cmd(args).env("WEFT_DATA_DIR", dir).output().unwrap())
}

#[test]
fn data_dirs_of_the_previous_release_open_with_nothing_lost() {
    let w = Weft::new();
    let closed = fixture(&w, "closed");
    let d = run_in(&w, &closed, &["history", "done"]);
    assert!(d.ok(), "{}", d.stderr);
    assert_eq!(d.stdout, expected("closed"));

    let crashed = fixture(&w, "crashed");
    // Its log holds results redb lacks: `weft check` reads it as the old
    // layout and says how many batches opening will apply.
    let check = run_in(&w, &crashed, &["check"]);
    assert!(check.ok(), "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("26 whole records") && !check.stdout.contains(" 0 batches to apply"),
        "{}",
        check.stdout
    );
    let d = run_in(&w, &crashed, &["history", "long"]);
    assert!(d.ok(), "{}", d.stderr);
    assert_eq!(d.stdout, expected("crashed"));
    assert_eq!(d.stdout.lines().count(), 24);
    // Opened once, it is this weft's format: it opens again the same.
    let again = run_in(&w, &crashed, &["history", "long"]);
    assert_eq!(again.stdout, expected("crashed"));
}
