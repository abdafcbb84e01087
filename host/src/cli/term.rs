//! Progress lines on stderr: a right-aligned verb, then the message
//! (bold/coloured only when stderr is a terminal).

use std::io::IsTerminal;

fn styled(verb: &str, color: &str) -> String {
    if std::io::stderr().is_terminal() {
        format!("\x1b[1;{color}m{verb:>12}\x1b[0m")
    } else {
        format!("{verb:>12}")
    }
}

/// Prints `   Verb message` in green.
pub fn status(verb: &str, msg: &str) {
    eprintln!("{} {msg}", styled(verb, "32"));
}

/// Prints `   Verb message` in yellow.
pub fn warn(verb: &str, msg: &str) {
    eprintln!("{} {msg}", styled(verb, "33"));
}

/// Prints `error: message` in red.
pub fn error(msg: &str) {
    let label = if std::io::stderr().is_terminal() {
        "\x1b[1;31merror\x1b[0m".to_string()
    } else {
        "error".to_string()
    };
    eprintln!("{label}: {msg}");
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
