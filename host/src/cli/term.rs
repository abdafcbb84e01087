//! Progress lines on stderr: a right-aligned verb, then the message
//! (bold/coloured only when stderr is a terminal).

use std::io::{IsTerminal, Write};

/// `println!` for a command's output on stdout. When stdout is a pipe
/// that was closed (`weft history ID | head -1`), the process ends quietly
/// with exit code 0, as cargo and ripgrep do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::term::out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes a line to stdout (see [`outln!`]).
pub fn out(line: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(line)
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Nowhere left to say it but stderr, which may be gone too.
        let _ = writeln!(std::io::stderr(), "error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Writes a line to stderr, ignoring a closed stderr: progress is never
/// worth a panic.
fn err_line(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

fn styled(verb: &str, color: &str) -> String {
    if std::io::stderr().is_terminal() {
        format!("\x1b[1;{color}m{verb:>12}\x1b[0m")
    } else {
        format!("{verb:>12}")
    }
}

/// Prints `   Verb message` in green.
pub fn status(verb: &str, msg: &str) {
    if crate::logs::json() {
        tracing::info!(target: "weft::status", verb = verb.trim(), "{msg}");
        return;
    }
    err_line(format_args!("{} {msg}", styled(verb, "32")));
}

/// Prints `   Verb message` in yellow.
pub fn warn(verb: &str, msg: &str) {
    if crate::logs::json() {
        tracing::warn!(target: "weft::status", verb = verb.trim(), "{msg}");
        return;
    }
    err_line(format_args!("{} {msg}", styled(verb, "33")));
}

/// Prints `error: message` in red.
pub fn error(msg: &str) {
    if crate::logs::json() {
        tracing::error!(target: "weft::status", "{msg}");
        return;
    }
    let label = if std::io::stderr().is_terminal() {
        "\x1b[1;31merror\x1b[0m".to_string()
    } else {
        "error".to_string()
    };
    err_line(format_args!("{label}: {msg}"));
}

/// Formats milliseconds for people: `850 ms`, `12.3 s`, `5 min 3 s`, `2 h 5 min`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else if ms < 86_400_000 {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    } else {
        format!("{} d {} h", ms / 86_400_000, (ms % 86_400_000) / 3_600_000)
    }
}
