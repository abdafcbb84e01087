//! Matching a guest's durable calls against the journal.
//!
//! A durable call is identified by its name and occurrence (how many calls
//! with that name came before it). On replay each call the guest makes is
//! looked up by that key: a journaled call returns its recorded outcome; a
//! call of another kind under the same key is non-determinism. Because calls
//! can run concurrently, order is not checked call by call. Instead, when the
//! guest is about to do new work, every journaled call must have been made
//! again ([`Replay::unreplayed`]); otherwise the workflow took another path.

use std::collections::{BTreeMap, HashMap};

use crate::journal::{AttemptResult, ChildResult, Entry, ErrorInfo, Nondet, UnixMs, WaitResult};

/// The kind of a durable call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Step,
    Sleep,
    Wait,
    Child,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Step => "step",
            Kind::Sleep => "sleep",
            Kind::Wait => "wait-for-event",
            Kind::Child => "run-workflow",
        }
    }
}

/// What the journal knows about one durable call.
#[derive(Clone, Debug)]
pub enum CallRecord {
    Step {
        /// Number of attempts journaled.
        attempts: u32,
        /// The final result, if the step is finished.
        outcome: Option<Result<serde_json::Value, ErrorInfo>>,
        /// When the next attempt may start (after a failed attempt).
        retry_ms: Option<UnixMs>,
    },
    Sleep {
        wake_ms: UnixMs,
    },
    Wait {
        event_type: String,
        deadline_ms: UnixMs,
        result: Option<WaitResult>,
    },
    Child {
        child_id: String,
        result: Option<ChildResult>,
    },
}

impl CallRecord {
    pub fn kind(&self) -> Kind {
        match self {
            CallRecord::Step { .. } => Kind::Step,
            CallRecord::Sleep { .. } => Kind::Sleep,
            CallRecord::Wait { .. } => Kind::Wait,
            CallRecord::Child { .. } => Kind::Child,
        }
    }
}

/// A replay that went another way than the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonDeterminism(pub String);

impl NonDeterminism {
    pub fn into_error(self) -> ErrorInfo {
        ErrorInfo::new("NonDeterminismError", self.0)
    }
}

fn describe(kind: Kind, name: &str, n: u32) -> String {
    format!("{} \"{}\" (occurrence {})", kind.as_str(), name, n)
}

/// The replay index of one instance run.
#[derive(Default)]
pub struct Replay {
    calls: HashMap<(String, u32), (u64, CallRecord)>,
    /// Journaled calls not yet made again, by the sequence number of their
    /// first entry.
    unreplayed: BTreeMap<u64, (String, u32)>,
    occurrences: HashMap<String, u32>,
    nondet: Vec<Nondet>,
    nondet_pos: usize,
    /// When the replay started, until it caught up (for the metrics).
    started: Option<std::time::Instant>,
    /// The replay's trace span, closed when it catches up.
    span: Option<tracing::Span>,
}

impl Replay {
    /// Builds the index from an instance's journal.
    pub fn new(entries: Vec<(u64, Entry)>) -> Replay {
        let mut r = Replay {
            started: (!entries.is_empty()).then(std::time::Instant::now),
            ..Replay::default()
        };
        for (seq, entry) in entries {
            match entry {
                Entry::Nondet { value } => r.nondet.push(value),
                Entry::Step {
                    name,
                    n,
                    attempt,
                    result,
                    ..
                } => {
                    let rec = r.record(seq, &name, n, || CallRecord::Step {
                        attempts: 0,
                        outcome: None,
                        retry_ms: None,
                    });
                    if let CallRecord::Step {
                        attempts,
                        outcome,
                        retry_ms,
                    } = rec
                    {
                        // The first final outcome wins; a late attempt entry
                        // (a timeout racing a result) cannot replace it.
                        if outcome.is_some() {
                            continue;
                        }
                        *attempts = (*attempts).max(attempt);
                        match result {
                            AttemptResult::Ok { value } => *outcome = Some(Ok(value)),
                            AttemptResult::Err {
                                error,
                                retry_ms: None,
                            } => *outcome = Some(Err(error)),
                            AttemptResult::Err {
                                retry_ms: Some(at), ..
                            } => *retry_ms = Some(at),
                        }
                    }
                }
                Entry::Sleep {
                    name, n, wake_ms, ..
                } => {
                    r.record(seq, &name, n, || CallRecord::Sleep { wake_ms });
                }
                Entry::WaitStart {
                    name,
                    n,
                    event_type,
                    deadline_ms,
                    ..
                } => {
                    r.record(seq, &name, n, || CallRecord::Wait {
                        event_type,
                        deadline_ms,
                        result: None,
                    });
                }
                Entry::ChildStart {
                    name, n, child_id, ..
                } => {
                    r.record(seq, &name, n, || CallRecord::Child {
                        child_id,
                        result: None,
                    });
                }
                Entry::ChildEnd {
                    name, n, result, ..
                } => {
                    if let Some((_, CallRecord::Child { result: r2, .. })) =
                        r.calls.get_mut(&(name, n))
                    {
                        *r2 = Some(result);
                    }
                }
                Entry::WaitEnd {
                    name, n, result, ..
                } => {
                    if let Some((_, CallRecord::Wait { result: r2, .. })) =
                        r.calls.get_mut(&(name, n))
                    {
                        *r2 = Some(result);
                    }
                }
            }
        }
        r
    }

    fn record(
        &mut self,
        seq: u64,
        name: &str,
        n: u32,
        make: impl FnOnce() -> CallRecord,
    ) -> &mut CallRecord {
        let key = (name.to_owned(), n);
        if !self.calls.contains_key(&key) {
            self.unreplayed.insert(seq, key.clone());
        }
        &mut self.calls.entry(key).or_insert_with(|| (seq, make())).1
    }

    /// Assigns the occurrence number of the next call named `name`.
    pub fn occurrence(&mut self, name: &str) -> u32 {
        let c = self.occurrences.entry(name.to_owned()).or_insert(0);
        let n = *c;
        *c += 1;
        n
    }

    /// Traces the replay as a child of `run` (a span from now until it
    /// catches up), if there is anything to replay.
    pub fn trace(&mut self, run: &tracing::Span) {
        if self.started.is_some() {
            self.span = Some(tracing::info_span!(
                target: "weft::trace",
                parent: run,
                "replay",
                calls = self.unreplayed.len(),
            ));
        }
    }

    /// Looks up the journaled record of a call and marks it replayed.
    /// `Ok(None)` means the call is new.
    pub fn take(
        &mut self,
        kind: Kind,
        name: &str,
        n: u32,
    ) -> Result<Option<CallRecord>, NonDeterminism> {
        let key = (name.to_owned(), n);
        let Some((seq, rec)) = self.calls.get(&key) else {
            return Ok(None);
        };
        if rec.kind() != kind {
            return Err(NonDeterminism(format!(
                "the journal has {} but the workflow now calls {} under that name; \
                 the workflow code changed or is not deterministic",
                describe(rec.kind(), name, n),
                describe(kind, name, n)
            )));
        }
        self.unreplayed.remove(seq);
        if self.unreplayed.is_empty()
            && let Some(started) = self.started.take()
        {
            crate::metrics::get()
                .replay_duration
                .observe(started.elapsed().as_secs_f64());
            self.span = None;
        }
        Ok(Some(rec.clone()))
    }

    /// Whether journaled calls remain that the guest has not made again.
    pub fn is_replaying(&self) -> bool {
        !self.unreplayed.is_empty()
    }

    /// Checks, when the guest is about to do new work `(kind, name, n)`
    /// (or has finished, with `None`), that nothing journaled was skipped.
    pub fn check_caught_up(
        &self,
        new_call: Option<(Kind, &str, u32)>,
    ) -> Result<(), NonDeterminism> {
        let Some((_, key)) = self.unreplayed.iter().next() else {
            return Ok(());
        };
        let expected = describe(self.calls[key].1.kind(), &key.0, key.1);
        Err(NonDeterminism(match new_call {
            Some((kind, name, n)) => format!(
                "the journal expects {expected} next, but the workflow called {}, which is not in the journal; \
                 the workflow code changed or is not deterministic",
                describe(kind, name, n)
            ),
            None => format!(
                "the workflow returned, but the journal expects {expected} next; \
                 the workflow code changed or is not deterministic"
            ),
        }))
    }

    /// The next journaled nondeterministic value, if it is of the same
    /// source as `probe`.
    pub fn next_nondet(&mut self, same_source: impl Fn(&Nondet) -> bool) -> Option<Nondet> {
        let v = self.nondet.get(self.nondet_pos)?;
        if same_source(v) {
            self.nondet_pos += 1;
            Some(v.clone())
        } else {
            None
        }
    }
}

/// The delay before retry number `n` (1 for the first retry).
pub fn retry_delay_ms(delay_ms: u64, backoff: Backoff, n: u32) -> u64 {
    let n = n.max(1);
    match backoff {
        Backoff::Constant => delay_ms,
        Backoff::Linear => delay_ms.saturating_mul(n as u64),
        Backoff::Exponential => {
            delay_ms.saturating_mul(1u64.checked_shl(n - 1).unwrap_or(u64::MAX))
        }
    }
}

/// Backoff strategy (mirrors the WIT enum, independent of bindings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backoff {
    Constant,
    Linear,
    Exponential,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, n: u32, attempt: u32, result: AttemptResult) -> Entry {
        Entry::Step {
            name: name.into(),
            n,
            attempt,
            started_ms: 0,
            ended_ms: 0,
            result,
        }
    }

    #[test]
    fn backoff_delays() {
        assert_eq!(retry_delay_ms(100, Backoff::Constant, 3), 100);
        assert_eq!(retry_delay_ms(100, Backoff::Linear, 3), 300);
        assert_eq!(retry_delay_ms(100, Backoff::Exponential, 1), 100);
        assert_eq!(retry_delay_ms(100, Backoff::Exponential, 4), 800);
        assert_eq!(retry_delay_ms(100, Backoff::Exponential, 200), u64::MAX);
    }

    #[test]
    fn replays_by_name_and_occurrence_and_detects_kind_change() {
        let ok = |v: &str| AttemptResult::Ok {
            value: serde_json::from_str(v).unwrap(),
        };
        let entries = vec![
            (0, step("a", 0, 1, ok("1"))),
            (
                1,
                step(
                    "a",
                    1,
                    1,
                    AttemptResult::Err {
                        error: ErrorInfo::new("E", "x"),
                        retry_ms: Some(5),
                    },
                ),
            ),
            (
                2,
                Entry::Sleep {
                    name: "s".into(),
                    n: 0,
                    started_ms: 0,
                    wake_ms: 9,
                },
            ),
        ];
        let mut r = Replay::new(entries);
        assert!(r.is_replaying());
        let n = r.occurrence("a");
        match r.take(Kind::Step, "a", n).unwrap() {
            Some(CallRecord::Step {
                outcome: Some(Ok(v)),
                ..
            }) => assert_eq!(v, 1),
            other => panic!("{other:?}"),
        }
        let n = r.occurrence("a");
        match r.take(Kind::Step, "a", n).unwrap() {
            Some(CallRecord::Step {
                attempts: 1,
                outcome: None,
                retry_ms: Some(5),
            }) => {}
            other => panic!("{other:?}"),
        }
        // A new call while the sleep is unreplayed is non-determinism.
        let err = r.check_caught_up(Some((Kind::Step, "b", 0))).unwrap_err();
        assert!(err.0.contains("sleep \"s\""), "{}", err.0);
        assert!(err.0.contains("step \"b\""), "{}", err.0);
        let n = r.occurrence("s");
        let err = r.take(Kind::Step, "s", n).unwrap_err();
        assert!(err.0.contains("journal has sleep \"s\""), "{}", err.0);
        assert!(r.take(Kind::Sleep, "s", n).unwrap().is_some());
        assert!(!r.is_replaying());
        r.check_caught_up(None).unwrap();
    }
}
