//! What a write request gets back, held by a store's writer until its
//! batch commits, then sent to the caller (both stores).

use tokio::sync::oneshot;

use super::{Created, InstanceRecord, JournalError, WaitResult};

pub(super) enum Reply {
    Created(
        oneshot::Sender<Result<Created, JournalError>>,
        Result<Created, JournalError>,
    ),
    Unit(
        Option<oneshot::Sender<Result<(), JournalError>>>,
        Result<(), JournalError>,
    ),
    Wait(
        oneshot::Sender<Result<Option<WaitResult>, JournalError>>,
        Result<Option<WaitResult>, JournalError>,
    ),
    Record(
        Option<oneshot::Sender<Result<InstanceRecord, JournalError>>>,
        Result<InstanceRecord, JournalError>,
    ),
}

impl Reply {
    /// The error of a statement the database refused (not a request's own
    /// answer, such as an unknown instance).
    pub(super) fn database_error(&self) -> Option<String> {
        let e = match self {
            Reply::Created(_, Err(e)) | Reply::Unit(_, Err(e)) => e,
            Reply::Wait(_, Err(e)) | Reply::Record(_, Err(e)) => e,
            _ => return None,
        };
        matches!(e, JournalError::Storage(_) | JournalError::Format(_)).then(|| e.to_string())
    }

    /// Answers with `error` instead of what the request did.
    pub(super) fn fail(self, error: &str) {
        let e = || JournalError::Storage(error.to_owned());
        match self {
            Reply::Created(tx, _) => drop(tx.send(Err(e()))),
            Reply::Unit(Some(tx), _) => drop(tx.send(Err(e()))),
            Reply::Wait(tx, _) => drop(tx.send(Err(e()))),
            Reply::Record(Some(tx), _) => drop(tx.send(Err(e()))),
            Reply::Unit(None, _) | Reply::Record(None, _) => {}
        }
    }

    pub(super) fn send(self) {
        let logged = |r: Result<(), JournalError>| {
            if let Err(e) = r {
                tracing::error!("journal write failed: {e}");
            }
        };
        match self {
            Reply::Created(tx, r) => drop(tx.send(r)),
            Reply::Unit(Some(tx), r) => drop(tx.send(r)),
            Reply::Unit(None, r) => logged(r),
            Reply::Wait(tx, r) => drop(tx.send(r)),
            Reply::Record(Some(tx), r) => drop(tx.send(r)),
            Reply::Record(None, r) => logged(r.map(drop)),
        }
    }
}
