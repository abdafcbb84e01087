//! Rollback (sagas): steps that can be undone, and undoing them newest
//! first, each undo a durable step of its own (Python's `with_rollback`,
//! `undo` and `rollback_all`).

use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, RetryPolicy, Step, StepBody, StepContext, step_with};

type UndoFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, Error>> + 'a>>;

/// A completed step's undo, ready to run.
struct Undo<'a> {
    step: String,
    retries: RetryPolicy,
    timeout: Duration,
    run: Box<dyn FnMut(Option<Error>) -> UndoFuture<'a> + 'a>,
}

/// Steps that can be undone, and their undos. Steps and undos may borrow
/// what lives longer than the saga (`'a`).
///
/// ```no_run
/// # async fn f() -> Result<(), weft_sdk::Error> {
/// use serde_json::{json, Value};
/// use weft_sdk::{step, Error, Saga};
/// let saga = Saga::new();
/// let seat: Value = saga
///     .run(step("reserve", || async { Ok(json!({"seat": "12A"})) }), |_why, seat: Value| async move {
///         Ok(json!({"released": seat["seat"]}))
///     })
///     .await?;
/// let shipped: Result<(), Error> = step("ship", || async { Err(Error::non_retryable("no stock")) }).await;
/// if let Err(e) = shipped {
///     // Runs each undo as the step "<name>:undo", newest first.
///     let undone: Vec<(String, Value)> = saga.rollback_all(Some(&e)).await?;
/// }
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Saga<'a> {
    undos: RefCell<Vec<Undo<'a>>>,
}

impl<'a> Saga<'a> {
    pub fn new() -> Saga<'a> {
        Saga::default()
    }

    /// Runs `step` and, once it has succeeded, keeps `undo` to compensate
    /// it. The undo gets the error the rollback was for (if any) and the
    /// step's result; what it returns is journaled (JSON, as a step's
    /// result). It runs as the step `<name>:undo`, with the step's retry
    /// policy and timeout. Steps of one saga may run concurrently.
    pub async fn run<T, B, U, UFut, R>(
        &self,
        step: Step<'a, T, B>,
        mut undo: U,
    ) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned + Clone + 'a,
        B: StepBody + 'a,
        B::Attempt: Future<Output = Result<T, Error>> + 'a,
        U: FnMut(Option<Error>, T) -> UFut + 'a,
        UFut: Future<Output = Result<R, Error>> + 'a,
        R: Serialize,
    {
        let (name, retries, timeout) = (step.name.clone(), step.retries, step.timeout);
        let value = step.into_future().await?;
        let kept = value.clone();
        let run = Box::new(move |why: Option<Error>| -> UndoFuture<'a> {
            let fut = undo(why, kept.clone());
            Box::pin(async move {
                let r = fut.await?;
                serde_json::to_value(r).map_err(|e| {
                    Error::non_retryable(format!("an undo returned a value that is not JSON: {e}"))
                })
            })
        });
        self.undos.borrow_mut().push(Undo {
            step: name,
            retries,
            timeout,
            run,
        });
        Ok(value)
    }

    /// Runs the undo of every completed step of the saga, newest first,
    /// each as a durable step `<name>:undo`. Returns each step's name and
    /// what its undo returned, in the order they ran; a replay gives the
    /// same. Stops at the first undo that fails for good.
    pub async fn rollback_all(&self, why: Option<&Error>) -> Result<Vec<(String, Value)>, Error> {
        self.rollback(why, false).await
    }

    /// Like [`Saga::rollback_all`], but runs every undo even when some fail,
    /// then returns the first failure (Python's `continue_on_error=True`).
    pub async fn rollback_all_continuing(
        &self,
        why: Option<&Error>,
    ) -> Result<Vec<(String, Value)>, Error> {
        self.rollback(why, true).await
    }

    async fn rollback(
        &self,
        why: Option<&Error>,
        go_on: bool,
    ) -> Result<Vec<(String, Value)>, Error> {
        let mut done = Vec::new();
        let mut first_failure = None;
        loop {
            let Some(mut u) = self.undos.borrow_mut().pop() else {
                break;
            };
            let why = why.cloned();
            let name = format!("{}:undo", u.step);
            let r: Result<Value, Error> =
                step_with(name, move |_: StepContext| (u.run)(why.clone()))
                    .retry_policy(u.retries)
                    .timeout(u.timeout)
                    .await;
            match r {
                Ok(v) => done.push((u.step, v)),
                Err(e) if go_on => {
                    first_failure.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        match first_failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}
