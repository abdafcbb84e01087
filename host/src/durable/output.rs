//! Guest stdout and stderr: forwarded to the host's stderr (weft's stdout
//! carries the workflow's output), line by line, each line prefixed with the
//! instance's id, secrets redacted, silent while the guest replays, and
//! bounded: an instance may write [`BURST`] bytes at once and [`RATE`] per
//! second after that. What goes over is dropped, and a note says how much.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::Instance;
use super::shared::CurrentRun;

/// Bytes an instance may write at once.
pub const BURST: f64 = (1 << 20) as f64;
/// Bytes per second an instance may write after its burst.
pub const RATE: f64 = (64 << 10) as f64;
/// A line longer than this is cut here (and the rest counted as dropped).
const LONGEST_LINE: usize = 64 << 10;

/// What an instance may still write (a token bucket), shared by its stdout
/// and stderr.
pub struct Budget {
    tokens: f64,
    at: Instant,
    /// Bytes dropped since the last note.
    dropped: u64,
}

impl Budget {
    pub fn new() -> Arc<Mutex<Budget>> {
        Arc::new(Mutex::new(Budget {
            tokens: BURST,
            at: Instant::now(),
            dropped: 0,
        }))
    }

    /// Takes `n` bytes' worth, if there is that much.
    fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * RATE).min(BURST);
        self.at = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The guest's stdout or stderr.
pub(super) struct GuestOutput {
    /// Whose output it is: the instance's, or in a shared store the run
    /// the guest runs now.
    pub current: Arc<CurrentRun>,
    pub budget: Arc<Mutex<Budget>>,
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            current: self.current.clone(),
            budget: self.budget.clone(),
            pending: Vec::new(),
        })
    }
}

/// Writes whole lines only, so guest output never splits a line of weft's
/// own progress output on the shared stderr.
struct LineWriter {
    current: Arc<CurrentRun>,
    budget: Arc<Mutex<Budget>>,
    pending: Vec<u8>,
}

impl LineWriter {
    /// Writes the whole lines pending (all of it with `all`).
    fn emit(&mut self, all: bool) {
        let end = if all {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        let chunk: Vec<u8> = self.pending.drain(..end).collect();
        // A shared store's output while no run runs is nobody's: dropped.
        let Some(inst) = self.current.get() else {
            return;
        };
        if chunk.is_empty() || inst.replaying() {
            return;
        }
        let text = String::from_utf8_lossy(&chunk);
        let text = inst.policy.redact(&text);
        let mut out = String::with_capacity(text.len() + 32);
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        for line in text.split_inclusive('\n') {
            let line = line.strip_suffix('\n').unwrap_or(line);
            let (kept, cut) = match line.char_indices().nth(LONGEST_LINE) {
                Some((i, _)) => (&line[..i], line.len() - i),
                None => (line, 0),
            };
            if !budget.take(kept.len()) {
                budget.dropped += line.len() as u64 + 1;
                continue;
            }
            budget.dropped += cut as u64;
            if budget.dropped > 0 {
                out.push_str(&note(&inst.id, budget.dropped));
                budget.dropped = 0;
            }
            if crate::logs::json() {
                tracing::info!(
                    target: "weft::guest",
                    workflow = %inst.workflow,
                    instance = %inst.id,
                    "{kept}"
                );
                continue;
            }
            out.push_str(&format!("[{}] {kept}\n", inst.id));
        }
        drop(budget);
        write_out(&inst, &out);
    }
}

/// Writes lines of guest output (or notes about it) to stderr; in JSON
/// logs, as a warning event (the lines themselves are events already).
fn write_out(inst: &Instance, text: &str) {
    if text.is_empty() {
        return;
    }
    if crate::logs::json() {
        tracing::warn!(
            target: "weft::guest",
            workflow = %inst.workflow,
            instance = %inst.id,
            "{}",
            text.trim_end()
        );
        return;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn note(id: &str, dropped: u64) -> String {
    format!(
        "[{id}] (weft dropped {dropped} bytes of this instance's output: over its limit of {} KiB at once, then {} KiB/s)\n",
        BURST as u64 >> 10,
        RATE as u64 >> 10
    )
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit(true);
        let mut budget = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        // Output dropped at the end of a run is noted when the run ends.
        if budget.dropped > 0
            && let Some(inst) = self.current.get()
        {
            let text = note(&inst.id, budget.dropped);
            budget.dropped = 0;
            write_out(&inst, &text);
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        // A line longer than the longest kept is written (cut) as is.
        let all = self.pending.len() > LONGEST_LINE;
        self.emit(all);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.emit(true);
        std::task::Poll::Ready(Ok(()))
    }
}
