//! `weft check`: verifies a data dir and says what it found.

use std::path::Path;

use anyhow::{Result, bail};

use super::term::{self, outln};
use crate::journal::{self, Finding, JournalError};

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// When the write-ahead log is damaged, give up the log from the damaged
    /// byte on (the results logged from there on are lost), so that the
    /// data dir opens with everything before it.
    #[arg(long)]
    pub repair: bool,
}

pub fn check(data_dir: &Path, args: CheckArgs) -> Result<i32> {
    let path = data_dir.join("journal.redb");
    if !path.exists() {
        bail!(
            "no weft data dir at {} (set --data-dir or WEFT_DATA_DIR)",
            data_dir.display()
        );
    }
    let report = match journal::check(&path) {
        Err(JournalError::InUse) => bail!(
            "the data dir {} is in use by a weft process; stop it, then check",
            data_dir.display()
        ),
        other => other?,
    };
    print(&report);
    if report.sound() {
        outln!("the data dir {} is sound", data_dir.display());
        return Ok(0);
    }
    match (report.log_damage_at, args.repair) {
        (Some(offset), true) => {
            journal::discard_log_from(&path, offset)?;
            term::warn(
                "Repaired",
                &format!("gave up the write-ahead log from byte {offset} on; checking again"),
            );
            let again = journal::check(&path)?;
            print(&again);
            if again.sound() {
                outln!("the data dir {} is sound", data_dir.display());
                return Ok(0);
            }
        }
        (Some(_), false) => term::warn(
            "Hint",
            "`weft check --repair` gives up the log from the damaged byte on (losing the results logged there); \
             keep a copy of the data dir first",
        ),
        (None, _) => {}
    }
    term::error(&format!(
        "the data dir {} is damaged; restore it from a backup",
        data_dir.display()
    ));
    Ok(1)
}

fn print(report: &journal::Report) {
    for f in &report.findings {
        match f {
            Finding::Ok(s) => outln!("ok       {s}"),
            Finding::Note(s) => outln!("note     {s}"),
            Finding::Problem(s) => outln!("DAMAGED  {s}"),
        }
    }
}
