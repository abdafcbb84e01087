//! Durable steps: [`step`], [`step_with`], their retry policy and the
//! [`StepContext`] a body may take.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, decode, durable, ms, panic, w};

/// How the delay between step attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// Always the base delay.
    Constant,
    /// Base delay times the retry number.
    Linear,
    /// Base delay doubled with each retry (the default).
    Exponential,
}

/// A step's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 5; 0 never retries).
    pub limit: u32,
    /// Base delay between attempts (default 10 s).
    pub delay: Duration,
    /// Growth of the delay (default exponential).
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            limit: 5,
            delay: Duration::from_secs(10),
            backoff: Backoff::Exponential,
        }
    }
}

/// Default timeout of one step attempt: 10 minutes.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(600);

/// A durable step; created by [`step`] or [`step_with`], configured with
/// its methods, run by `.await`.
#[must_use = "a step does nothing until it is awaited"]
///
/// `'a` is how long the body may borrow from: a body may use the
/// workflow's locals by reference, as long as the step is awaited while
/// they live.
pub struct Step<'a, T, B> {
    pub(crate) name: String,
    pub(crate) retries: RetryPolicy,
    pub(crate) timeout: Duration,
    body: B,
    _out: PhantomData<fn() -> T>,
    _borrows: PhantomData<&'a ()>,
}

/// What a step's body knows of the attempt it runs as (Python's `ctx`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepContext {
    /// The step's name.
    pub name: String,
    /// 1 for the first attempt, 2 for the first retry, and so on. It is the
    /// host's count, journaled: after a crash it goes on where it was.
    pub attempt: u32,
    /// The step's retry policy.
    pub retries: RetryPolicy,
    /// The longest duration of one attempt.
    pub timeout: Duration,
}

/// A step body: a closure with no argument ([`step`]) or one taking the
/// [`StepContext`] ([`step_with`]).
pub trait StepBody {
    /// The future of one attempt.
    type Attempt;
    /// Makes the future of one attempt.
    fn attempt(&mut self, ctx: StepContext) -> Self::Attempt;
}

/// The body of [`step`]: a closure with no argument.
pub struct Plain<F>(F);

/// The body of [`step_with`]: a closure taking the [`StepContext`].
pub struct WithContext<F>(F);

impl<F: FnMut() -> Fut, Fut> StepBody for Plain<F> {
    type Attempt = Fut;
    fn attempt(&mut self, _: StepContext) -> Fut {
        (self.0)()
    }
}

impl<F: FnMut(StepContext) -> Fut, Fut> StepBody for WithContext<F> {
    type Attempt = Fut;
    fn attempt(&mut self, ctx: StepContext) -> Fut {
        (self.0)(ctx)
    }
}

/// Runs `body` as a durable step named `name`.
///
/// The body's result is journaled before the workflow goes on; on replay the
/// journaled result is returned and the body does not run. A failed attempt
/// is retried according to the retry policy (default: 5 retries, 10 s
/// apart, doubling). The journal key is the name plus its occurrence count,
/// so the same name may be used in a loop.
///
/// The body may borrow the workflow's locals (no `move`, no clones): the
/// step is awaited while they live.
///
/// ```no_run
/// # async fn f() -> Result<(), weft_sdk::Error> {
/// use std::time::Duration;
/// use weft_sdk::{step, Backoff, Error};
/// let total: u64 = step("sum", || async { Ok(1 + 2) }).await?;
/// let page: String = step("fetch", || async {
///         Err::<String, _>(Error::new("upstream is down"))
///     })
///     .retries(2)
///     .delay(Duration::from_millis(500))
///     .backoff(Backoff::Linear)
///     .await?;
/// let skus = vec!["mug".to_string(), "tee".to_string()];
/// // Borrows `skus`; both steps run at once.
/// let (a, b): (usize, usize) = futures::join!(
///     step("count", || async { Ok(skus.len()) }),
///     step("longest", || async { Ok(skus.iter().map(|s| s.len()).max().unwrap_or(0)) }),
/// );
/// # let _ = (a, b);
/// # Ok(()) }
/// ```
pub fn step<'a, T, F, Fut>(name: impl Into<String>, body: F) -> Step<'a, T, Plain<F>>
where
    T: Serialize + DeserializeOwned + 'a,
    F: FnMut() -> Fut + 'a,
    Fut: Future<Output = Result<T, Error>> + 'a,
{
    Step {
        name: name.into(),
        retries: RetryPolicy::default(),
        timeout: DEFAULT_STEP_TIMEOUT,
        body: Plain(body),
        _out: PhantomData,
        _borrows: PhantomData,
    }
}

/// Like [`step`], with a body that takes the [`StepContext`]: the attempt
/// number (journaled by the host, so it survives a crash during a retry
/// delay), the step's name and its config.
///
/// ```no_run
/// # async fn f() -> Result<(), weft_sdk::Error> {
/// use weft_sdk::{step_with, Error, StepContext};
/// let charged: u32 = step_with("charge", |ctx: StepContext| async move {
///     if ctx.attempt < 3 {
///         return Err(Error::new("the payment service is warming up"));
///     }
///     Ok(ctx.attempt)
/// })
/// .retries(5)
/// .await?;
/// # Ok(()) }
/// ```
pub fn step_with<'a, T, F, Fut>(name: impl Into<String>, body: F) -> Step<'a, T, WithContext<F>>
where
    T: Serialize + DeserializeOwned + 'a,
    F: FnMut(StepContext) -> Fut + 'a,
    Fut: Future<Output = Result<T, Error>> + 'a,
{
    Step {
        name: name.into(),
        retries: RetryPolicy::default(),
        timeout: DEFAULT_STEP_TIMEOUT,
        body: WithContext(body),
        _out: PhantomData,
        _borrows: PhantomData,
    }
}

impl<T, B> Step<'_, T, B> {
    /// How many times a failed attempt is retried (default 5).
    pub fn retries(mut self, limit: u32) -> Self {
        self.retries.limit = limit;
        self
    }

    /// Base delay between attempts (default 10 s).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.retries.delay = delay;
        self
    }

    /// How the delay grows (default [`Backoff::Exponential`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.retries.backoff = backoff;
        self
    }

    /// The whole retry policy at once.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retries = policy;
        self
    }

    /// Longest duration of one attempt (default 10 min). An attempt past it
    /// is abandoned and counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<'a, T, B> IntoFuture for Step<'a, T, B>
where
    T: Serialize + DeserializeOwned + 'a,
    B: StepBody + 'a,
    B::Attempt: Future<Output = Result<T, Error>> + 'a,
{
    type Output = Result<T, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, Error>> + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run_step(self))
    }
}

async fn run_step<T, B>(mut s: Step<'_, T, B>) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    B: StepBody,
    B::Attempt: Future<Output = Result<T, Error>>,
{
    let config = w::StepConfig {
        retries: w::RetryPolicy {
            limit: s.retries.limit,
            delay_ms: ms(s.retries.delay),
            backoff: match s.retries.backoff {
                Backoff::Constant => w::Backoff::Constant,
                Backoff::Linear => w::Backoff::Linear,
                Backoff::Exponential => w::Backoff::Exponential,
            },
        },
        timeout_ms: ms(s.timeout),
    };
    let what = format!("step \"{}\"", s.name);
    let run = match durable::step_begin(&s.name, config) {
        w::StepStart::Cached(Ok(json)) => return decode(&what, &json),
        w::StepStart::Cached(Err(e)) => return Err(Error::from_info(e)),
        w::StepStart::Run(run) => run,
    };
    if !run.started {
        durable::step_ready(run.handle).await;
    }
    let mut attempt = run.attempt;
    loop {
        let ctx = StepContext {
            name: s.name.clone(),
            attempt,
            retries: s.retries,
            timeout: s.timeout,
        };
        let outcome = match panic::in_step(run.handle, s.body.attempt(ctx)).await {
            Ok(value) => match serde_json::to_string(&value) {
                Ok(json) => w::StepOutcome::Ok(json),
                Err(e) => w::StepOutcome::NonRetryable(w::ErrorInfo {
                    name: "SerializationError".into(),
                    message: format!("{what} returned a value that cannot be serialized: {e}"),
                }),
            },
            Err(e) if !e.retryable => w::StepOutcome::NonRetryable(e.into_info()),
            Err(e) => w::StepOutcome::Err(e.into_info()),
        };
        match durable::step_end(run.handle, outcome).await {
            w::StepVerdict::Done(Ok(json)) => return decode(&what, &json),
            w::StepVerdict::Done(Err(e)) => return Err(Error::from_info(e)),
            w::StepVerdict::Retry(next) => attempt = next,
        }
    }
}
