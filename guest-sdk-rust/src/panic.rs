//! Panics, CPU time and traps charged to the step that caused them: the
//! SDK tells the host which step body it polls, and a panic hook tells it
//! the panic's message and that step, before the guest traps.

use std::cell::Cell;
use std::future::Future;
use std::sync::Once;
use std::task::Poll;

use crate::wit::weft::workflow::durable;

thread_local! {
    /// The handle of the step whose body is being polled, if any.
    static CURRENT_STEP: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Installs the hook once; the previous hook (printing to stderr) still
/// runs after it.
pub(crate) fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload_as_str()
                .unwrap_or("a panic with a non-text payload");
            let message = match info.location() {
                Some(l) => format!("{message} (at {}:{}:{})", l.file(), l.line(), l.column()),
                None => message.to_owned(),
            };
            durable::panicked(CURRENT_STEP.get(), &message);
            previous(info);
        }));
    });
}

/// Runs a step body, marking it as the current step while it is polled,
/// for the panic hook and for the host (`running-step`), which charges the
/// CPU time spent, and a trap, to it.
pub(crate) async fn in_step<F: Future>(handle: u64, body: F) -> F::Output {
    let mut body = Box::pin(body);
    std::future::poll_fn(|cx| {
        let outer = CURRENT_STEP.replace(Some(handle));
        durable::running_step(Some(handle));
        let r: Poll<F::Output> = body.as_mut().poll(cx);
        CURRENT_STEP.set(outer);
        durable::running_step(outer);
        r
    })
    .await
}
