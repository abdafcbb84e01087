//! Write durable [weft](https://github.com/weft) workflows in Rust.
//!
//! A workflow is an `async fn` taking the instance's input and returning its
//! output. Inside it, [`step`] runs a piece of work whose result is
//! journaled by the host: after a crash or a long wait the host runs the
//! workflow again from the start, and every step that already finished
//! returns its recorded result without running again. [`sleep`] and
//! [`wait_for_event`] wait durably, for minutes or months, holding no memory
//! while they wait.
//!
//! ```no_run
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use weft_sdk::{Error, WorkflowEvent, step, sleep, wait_for_event};
//!
//! #[derive(Deserialize)]
//! struct Order { id: u64, amount: u64 }
//!
//! #[derive(Serialize)]
//! struct Receipt { charged: u64, approved_by: String }
//!
//! #[derive(Deserialize)]
//! struct Approval { by: String }
//!
//! async fn checkout(event: WorkflowEvent<Order>) -> Result<Receipt, Error> {
//!     let order = event.payload;
//!     // Retried up to 3 times, 1 s apart, doubling; each try may take 30 s.
//!     let charged: u64 = step("charge", || async { Ok(order.amount) })
//!         .retries(3)
//!         .delay(Duration::from_secs(1))
//!         .timeout(Duration::from_secs(30))
//!         .await?;
//!     sleep("cool-off", Duration::from_secs(10)).await;
//!     let approval = wait_for_event::<Approval>("approval", "approved")
//!         .timeout(Duration::from_secs(3600))
//!         .await?;
//!     Ok(Receipt { charged, approved_by: approval.payload.by })
//! }
//!
//! weft_sdk::workflow!(checkout);
//! ```
//!
//! # Rules of durable code
//!
//! The workflow body (everything outside step bodies) runs again on every
//! replay and must make the same durable calls in the same way each time:
//! derive step names from the input or from step results, never from the
//! clock or randomness read outside a step. Clocks and randomness read
//! outside steps are journaled by the host, so they replay the same values;
//! inside a step they are live, and the step's result is what is kept.
//! While any step body is running, the host cannot tell which branch reads
//! the clock, so reads are live: in concurrent code, read the clock or
//! randomness inside a step. Side effects (HTTP calls, writes) belong inside
//! steps.
//!
//! # Concurrency
//!
//! Durable calls are futures, so several run at once with [`join!`] or
//! [`join_all`]: two concurrent sleeps of one second take one second.

// Lets the generated bindings name this crate `weft_sdk` from inside it.
extern crate self as weft_sdk;

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use futures::future::{join_all, try_join_all};
pub use futures::{join, try_join};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// The generated bindings of the `weft:workflow` WIT package. Not part of
/// the stable API; use the functions of this crate instead.
#[doc(hidden)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:workflow/workflow",
        pub_export_macro: true,
        export_macro_name: "__export_weft_workflow",
        default_bindings_module: "weft_sdk::wit",
        runtime_path: "weft_sdk::__wit_bindgen::rt",
    });
}

use wit::weft::workflow::durable;
use wit::weft::workflow::types as w;

mod panic;
mod saga;
mod step;

pub use saga::Saga;
pub use step::{
    Backoff, DEFAULT_STEP_TIMEOUT, Plain, RetryPolicy, Step, StepBody, StepContext, WithContext,
    step, step_with,
};

/// Exports an `async fn(WorkflowEvent<I>) -> Result<O, Error>` as the
/// component's workflow. Use it once per component.
///
/// ```no_run
/// async fn hello(event: weft_sdk::WorkflowEvent<String>) -> Result<String, weft_sdk::Error> {
///     Ok(format!("hello, {}", event.payload))
/// }
/// weft_sdk::workflow!(hello);
/// ```
#[macro_export]
macro_rules! workflow {
    ($f:path) => {
        #[doc(hidden)]
        pub struct __WeftWorkflow;

        impl $crate::wit::Guest for __WeftWorkflow {
            async fn run(
                event: $crate::wit::weft::workflow::types::WorkflowEvent,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::wit::weft::workflow::types::ErrorInfo,
            > {
                $crate::__run_workflow(event, $f).await
            }
        }

        $crate::wit::__export_weft_workflow!(__WeftWorkflow with_types_in $crate::wit);
    };
}

/// The input of a workflow run.
#[derive(Debug, Clone)]
pub struct WorkflowEvent<T> {
    /// The payload the instance was created with.
    pub payload: T,
    /// When the instance was created (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
    /// The instance id.
    pub instance_id: String,
    /// The name the workflow runs under.
    pub workflow_name: String,
}

impl<T> WorkflowEvent<T> {
    /// When the instance was created.
    pub fn timestamp(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.timestamp_ms)
    }
}

#[doc(hidden)]
pub async fn __run_workflow<I, O, F, Fut>(
    event: w::WorkflowEvent,
    f: F,
) -> Result<String, w::ErrorInfo>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(WorkflowEvent<I>) -> Fut,
    Fut: Future<Output = Result<O, Error>>,
{
    panic::install_hook();
    let payload: I = serde_json::from_str(&event.payload).map_err(|e| w::ErrorInfo {
        name: "InvalidInput".into(),
        message: format!("the workflow input does not match the expected type: {e}"),
    })?;
    let input = WorkflowEvent {
        payload,
        timestamp_ms: event.timestamp_ms,
        instance_id: event.instance_id,
        workflow_name: event.workflow_name,
    };
    match f(input).await {
        Ok(out) => serde_json::to_string(&out).map_err(|e| w::ErrorInfo {
            name: "InvalidOutput".into(),
            message: format!("the workflow output cannot be serialized: {e}"),
        }),
        Err(e) => Err(e.into_info()),
    }
}

/// An error of a step, a wait or a workflow: a type name and a message.
///
/// Any `std::error::Error` converts into it with `?`, taking its message.
/// [`Error::non_retryable`] makes a step fail at once, without retries.
#[derive(Clone)]
pub struct Error {
    name: String,
    message: String,
    retryable: bool,
}

impl Error {
    /// A retryable error named `Error`.
    pub fn new(message: impl Into<String>) -> Error {
        Error::named("Error", message)
    }

    /// A retryable error with a type name of your choosing.
    pub fn named(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            name: name.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that ends a step's retries at once (`NonRetryableError`).
    pub fn non_retryable(message: impl Into<String>) -> Error {
        Error {
            name: "NonRetryableError".into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// An error with a type name that ends a step's retries at once.
    pub fn non_retryable_named(name: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            name: name.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The error's type name, e.g. `NonRetryableError` or `WaitTimeout`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a step failing with this error is retried.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether this is a [`wait_for_event`] timeout.
    pub fn is_timeout(&self) -> bool {
        self.name == "WaitTimeout"
    }

    fn from_info(e: w::ErrorInfo) -> Error {
        Error {
            retryable: e.name != "NonRetryableError",
            name: e.name,
            message: e.message,
        }
    }

    fn into_info(self) -> w::ErrorInfo {
        w::ErrorInfo {
            name: self.name,
            message: self.message,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for Error {
    fn from(e: E) -> Error {
        let full = std::any::type_name::<E>();
        let short = full.split('<').next().unwrap_or(full);
        let short = short.rsplit("::").next().unwrap_or(short);
        Error::named(short, e.to_string())
    }
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, Error> {
    serde_json::from_str(json).map_err(|e| {
        Error::named(
            "DecodeError",
            format!("the journaled result of {what} does not match the expected type: {e}"),
        )
    })
}

/// Sleeps durably for `duration` (at most 365 days). The wake time is
/// journaled when the sleep starts, so a restart does not make it longer.
pub async fn sleep(name: impl Into<String>, duration: Duration) {
    durable::sleep(name.into(), ms(duration)).await
}

/// Sleeps durably until `time`.
pub async fn sleep_until(name: impl Into<String>, time: SystemTime) {
    let unix_ms = time.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0);
    durable::sleep_until(name.into(), unix_ms).await
}

/// Reads a secret or config value of the workflow (`[workflows.NAME.secrets]`
/// in `weft.toml`, `--secret` for `weft run`). Only inside a step body: the
/// value is never journaled, and weft redacts it from results and output.
pub fn secret(name: &str) -> Result<String, Error> {
    durable::secret(name).map_err(Error::from_info)
}

/// Outgoing HTTP from step bodies.
///
/// ```no_run
/// # async fn f() -> Result<(), weft_sdk::Error> {
/// use weft_sdk::{http::Request, step};
/// let n: usize = step("count", || async {
///     let page = weft_sdk::http::fetch(Request::get("https://example.com/")).await?;
///     Ok(page.text()?.len())
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// Requests are allowed only inside a step body and only to the hosts of
/// the workflow's allow-list (`allow_hosts` in `weft.toml`, `--allow-host`
/// for `weft run`). A finished step's requests are not sent again on replay.
pub mod http;

/// A child workflow run; created by [`run_workflow`].
#[must_use = "a child workflow does nothing until it is awaited"]
pub struct RunWorkflow<T> {
    name: String,
    workflow: String,
    params: Result<String, Error>,
    _out: PhantomData<fn() -> T>,
}

/// Starts an instance of the deployed workflow `workflow` (in any
/// language) with `params` and waits for its output, as one durable call.
///
/// The child's id is derived from this instance's id and the call, so a
/// replay never starts a second child. The journal key is `workflow` plus
/// its occurrence unless [`RunWorkflow::name`] sets another name. Needs a
/// server (`weft serve`) that deploys `workflow`.
///
/// ```no_run
/// # async fn f() -> Result<(), weft_sdk::Error> {
/// let total: u64 = weft_sdk::run_workflow("sum", &vec![1, 2, 3]).await?;
/// # Ok(()) }
/// ```
pub fn run_workflow<T: DeserializeOwned>(
    workflow: impl Into<String>,
    params: &impl Serialize,
) -> RunWorkflow<T> {
    let workflow = workflow.into();
    RunWorkflow {
        name: workflow.clone(),
        params: serde_json::to_string(params).map_err(|e| {
            Error::non_retryable(format!(
                "the params of workflow `{workflow}` cannot be serialized: {e}"
            ))
        }),
        workflow,
        _out: PhantomData,
    }
}

impl<T> RunWorkflow<T> {
    /// The name under which the call is journaled (default: the workflow).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl<T: DeserializeOwned + 'static> IntoFuture for RunWorkflow<T> {
    type Output = Result<T, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, Error>>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let params = self.params?;
            match durable::run_workflow(self.name.clone(), self.workflow.clone(), params).await {
                Ok(json) => decode(&format!("child workflow `{}`", self.workflow), &json),
                Err(e) => Err(Error::from_info(e)),
            }
        })
    }
}

/// Waits `duration` without journaling anything: a plain timer for use
/// inside step bodies (polling, pacing). Outside steps use [`sleep`], which
/// is durable; a `delay` in the workflow body runs again on every replay.
pub async fn delay(duration: Duration) {
    durable::delay(ms(duration)).await
}

/// An event received by [`wait_for_event`].
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// The type it was sent with.
    pub event_type: String,
    /// Its payload.
    pub payload: T,
    /// When the host accepted it (milliseconds since the Unix epoch).
    pub timestamp_ms: u64,
}

/// A durable wait for an event; created by [`wait_for_event`].
#[must_use = "a wait does nothing until it is awaited"]
pub struct WaitForEvent<T> {
    name: String,
    event_type: String,
    timeout: Option<Duration>,
    _out: PhantomData<fn() -> T>,
}

/// Waits for an event of `event_type` sent to this instance
/// (`weft send-event <id> <type> <json>`), and decodes its payload as `T`.
///
/// Events sent before the wait starts are kept until a wait takes them;
/// each event goes to exactly one wait. Without an event before the timeout
/// (default 24 hours) this returns an error for which
/// [`Error::is_timeout`] is true; the workflow may catch it.
pub fn wait_for_event<T: DeserializeOwned>(
    name: impl Into<String>,
    event_type: impl Into<String>,
) -> WaitForEvent<T> {
    WaitForEvent {
        name: name.into(),
        event_type: event_type.into(),
        timeout: None,
        _out: PhantomData,
    }
}

impl<T> WaitForEvent<T> {
    /// How long to wait (default 24 hours).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<T: DeserializeOwned + 'static> IntoFuture for WaitForEvent<T> {
    type Output = Result<Event<T>, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<Event<T>, Error>>>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let r = durable::wait_for_event(
                self.name.clone(),
                self.event_type.clone(),
                self.timeout.map(ms),
            )
            .await;
            match r {
                Ok(e) => Ok(Event {
                    payload: decode(&format!("event `{}`", e.event_type), &e.payload)?,
                    event_type: e.event_type,
                    timestamp_ms: e.timestamp_ms,
                }),
                Err(w::WaitError::Timeout) => Err(Error::named(
                    "WaitTimeout",
                    format!(
                        "no event of type `{}` arrived for wait \"{}\" before its timeout",
                        self.event_type, self.name
                    ),
                )),
            }
        })
    }
}
