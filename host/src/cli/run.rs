//! `weft run` and `weft resume`: execute an instance in this process.

use super::term::outln;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::sync::mpsc;

use super::open::{open_runtime, store_and_load};
use super::{ExecOptions, term};
use crate::api::Api;
use crate::control;
use crate::durable::Progress;
use crate::journal::{Created, InstanceRecord, Status, now_ms};
use crate::runner::Runtime;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The workflow component (a `.wasm` file built for wasm32-wasip2).
    pub component: PathBuf,
    /// The instance's input payload, as JSON (or `@file` to read it).
    #[arg(long, default_value = "null")]
    pub input: String,
    /// The instance id (default: a random one). Running an id that exists
    /// continues that instance instead of starting a second one.
    #[arg(long)]
    pub id: Option<String>,
    /// The workflow name (default: the component's file name).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub exec: ExecOptions,
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The workflow component.
    pub component: PathBuf,
}

/// Stores, compiles and links a component, reporting problems the way
/// `weft run` would, so a later run loads it in milliseconds.
pub async fn compile(data_dir: &Path, args: CompileArgs) -> Result<i32> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let rt = open_runtime(data_dir, &ExecOptions::default()).await?;
    store_and_load(&rt, &args.component, &bytes, "Compiled").await?;
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// The instance id.
    pub id: String,
    /// Move the instance to this component (a new version of its workflow)
    /// before resuming: its journal is replayed against the new code, and a
    /// replay that does not match stops it with a non-determinism error.
    #[arg(long)]
    pub component: Option<PathBuf>,
    #[command(flatten)]
    pub exec: ExecOptions,
    #[command(flatten)]
    pub server: super::client::ServerOptions,
}

pub async fn run(data_dir: &Path, args: RunArgs) -> Result<i32> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workflow".into()),
    };
    let rt = open_runtime(data_dir, &args.exec).await?;
    let input = super::json_arg(&args.input)?;
    // The instance exists, and the control socket answers, before the
    // component is compiled (seconds for a large one): an event sent from
    // another terminal meanwhile is buffered, not refused.
    let digest = rt.store_component(&bytes).await?;
    let (rec, new) = match rt.create(&name, &digest, args.id.clone(), &input).await? {
        Created::New(rec) => (rec, true),
        Created::Existing(rec) => {
            existing(&rec, &name, &input, &digest)?;
            (rec, false)
        }
    };
    let socket = control::serve(Api {
        rt: rt.clone(),
        scheduler: None,
        token: None,
    })?;
    if new {
        term::status(
            "Started",
            &format!("instance {} of workflow {}", rec.id, rec.workflow),
        );
    }
    let loaded = store_and_load(&rt, &args.component, &bytes, "Loaded")
        .await
        .and_then(|digest| check_shareable(&rt, &digest, &args.component));
    if let Err(e) = loaded {
        socket.abort();
        let _ = std::fs::remove_file(control::socket_path(data_dir));
        if new {
            // It never ran: leave no instance behind on a component that
            // does not load.
            rt.journal.delete(&rec.id).await?;
        }
        return Err(e);
    }
    drive(rt, data_dir, &rec.id, socket).await
}

/// `weft run --id ID` when ID exists: the same workflow with the same input
/// continues it (running it again is idempotent); anything else is refused,
/// as the API refuses an id owned by another workflow.
fn existing(rec: &InstanceRecord, name: &str, input: &str, digest: &str) -> Result<()> {
    if rec.workflow != name {
        bail!(
            "instance {} already exists and belongs to workflow `{}`, not `{name}`; choose another --id",
            rec.id,
            rec.workflow
        );
    }
    let same_input = serde_json::from_str::<serde_json::Value>(input).ok()
        == serde_json::from_str::<serde_json::Value>(rec.input.get()).ok();
    if !same_input {
        bail!(
            "instance {} already exists with another input; choose another --id, or continue it with `weft resume {}`",
            rec.id,
            rec.id
        );
    }
    term::warn(
        "Existing",
        &format!(
            "instance {} already exists ({}); continuing it instead of starting a second run",
            rec.id,
            rec.status.as_str()
        ),
    );
    if rec.digest != digest {
        term::warn(
            "Pinned",
            &format!(
                "the instance keeps the version it started on ({})",
                &rec.digest[..19]
            ),
        );
    }
    Ok(())
}

pub async fn resume(data_dir: &Path, args: ResumeArgs) -> Result<i32> {
    let rt = open_runtime(data_dir, &args.exec).await?;
    let Some(rec) = rt.journal.instance(&args.id).await? else {
        bail!(
            "no instance with id `{}` in {}",
            args.id,
            data_dir.display()
        );
    };
    if !rec.status.is_final() {
        take(&rt, &rec.id).await?;
    }
    if let Some(path) = &args.component {
        if rec.status.is_final() {
            bail!(
                "instance {} is {}; it cannot move to another version",
                rec.id,
                rec.status.as_str()
            );
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let digest = store_and_load(&rt, path, &bytes, "Loaded").await?;
        if digest != rec.digest {
            rt.journal.set_version(&rec.id, &digest).await?;
            term::warn(
                "Upgraded",
                &format!(
                    "instance {} from {} to {}",
                    rec.id,
                    &rec.digest[..19],
                    &digest[..19]
                ),
            );
        }
    }
    if !rec.status.is_final() {
        let n = rt.journal.entries(&rec.id).await?.len();
        term::status(
            "Resuming",
            &format!(
                "instance {} of workflow {} ({n} journal entries)",
                rec.id, rec.workflow
            ),
        );
    }
    let socket = control::serve(Api {
        rt: rt.clone(),
        scheduler: None,
        token: None,
    })?;
    drive(rt, data_dir, &rec.id, socket).await
}

/// On a shared store, takes the instance for this process: at once if no
/// live host owns it; if a `weft run` that stopped renewing owns it, once its
/// lease runs out. A server's instance is left to the server.
async fn take(rt: &Runtime, id: &str) -> Result<()> {
    let Some(pg) = rt.journal.postgres() else {
        return Ok(());
    };
    let mut said = false;
    let mut last_until = None;
    loop {
        if pg.claim_one(id).await? {
            return Ok(());
        }
        let Some(owner) = pg.owner(id).await? else {
            continue;
        };
        if let Some(api) = &owner.api {
            bail!(
                "instance {id} is run by the server at {api} (host `{}`); pause, resume or \
                 restart it there",
                owner.host
            );
        }
        if last_until.is_some_and(|u| u != owner.lease_until_ms) {
            bail!(
                "instance {id} is being run by another `weft run` (host `{}`)",
                owner.host
            );
        }
        last_until = Some(owner.lease_until_ms);
        if !said {
            term::status(
                "Waiting",
                &format!(
                    "for the lease of host `{}`, which ran instance {id}, to run out",
                    owner.host
                ),
            );
            said = true;
        }
        let left = crate::journal::until_ms(owner.lease_until_ms);
        tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    }
}

/// Drives an instance to its end in this process, with the control socket
/// (`socket`) serving meanwhile, and prints the outcome. Returns the exit
/// code.
async fn drive(
    rt: Arc<Runtime>,
    data_dir: &Path,
    id: &str,
    server: tokio::task::JoinHandle<()>,
) -> Result<i32> {
    let (tx, rx) = mpsc::unbounded_channel();
    let printer = tokio::spawn(print_progress(rx, id.to_owned(), data_dir.to_owned()));
    let started = Instant::now();
    let result = tokio::select! {
        r = rt.drive(id, Some(tx)) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    server.abort();
    let _ = std::fs::remove_file(control::socket_path(data_dir));
    let _ = printer.await;
    // On a shared store, what this process owned goes back to the hosts.
    if let Some(pg) = rt.journal.postgres()
        && let Err(e) = pg.leave().await
    {
        term::warn("Store", &format!("leaving the store: {e}"));
    }
    let Some(result) = result else {
        term::warn(
            "Interrupted",
            &format!("instance {id} is saved; continue it with `weft resume {id}`"),
        );
        return Ok(130);
    };
    let rec = result?;
    let took = term::human_ms(started.elapsed().as_millis() as u64);
    match rec.status {
        Status::Complete => {
            term::status("Complete", &format!("instance {id} in {took}"));
            outln!(
                "{}",
                rec.output.as_deref().map(|o| o.get()).unwrap_or("null")
            );
            Ok(0)
        }
        status => {
            let err = rec
                .error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "no error recorded".into());
            term::error(&format!("instance {id} {}: {err}", status.as_str()));
            if let Some(tb) = rec.error.as_ref().and_then(|e| e.traceback.as_deref()) {
                eprintln!("{}", tb.trim_end());
            }
            Ok(1)
        }
    }
}

async fn print_progress(mut rx: mpsc::UnboundedReceiver<Progress>, id: String, data_dir: PathBuf) {
    let dir_flag = if data_dir == Path::new(".weft") {
        String::new()
    } else {
        format!("--data-dir {} ", data_dir.display())
    };
    while let Some(p) = rx.recv().await {
        match p {
            Progress::StepDone {
                name,
                attempt,
                elapsed_ms,
            } => {
                let tries = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                term::status(
                    "Step",
                    &format!("{name} done in {}{tries}", term::human_ms(elapsed_ms)),
                );
            }
            Progress::StepFailed {
                name,
                attempt,
                error,
                retry_in_ms: Some(ms),
            } => term::warn(
                "Retry",
                &format!(
                    "{name} attempt {attempt} failed: {error}; retrying in {}",
                    term::human_ms(ms)
                ),
            ),
            Progress::StepFailed {
                name,
                attempt,
                error,
                retry_in_ms: None,
            } => term::warn(
                "Failed",
                &format!("{name} attempt {attempt} failed for good: {error}"),
            ),
            Progress::Sleeping { name, wake_ms } => term::status(
                "Sleeping",
                &format!(
                    "{name} for {}",
                    term::human_ms(wake_ms.saturating_sub(now_ms()))
                ),
            ),
            Progress::Waiting {
                name,
                event_type,
                deadline_ms,
            } => term::status(
                "Waiting",
                &format!(
                    "for event `{event_type}` ({name}, times out in {}); send it with:\n{:>12} weft {dir_flag}send-event {id} {event_type} '<json>'",
                    term::human_ms(deadline_ms.saturating_sub(now_ms())),
                    ""
                ),
            ),
            Progress::EventReceived { name, event_type } => {
                term::status("Received", &format!("event `{event_type}` ({name})"))
            }
            Progress::Evicted { wake_ms } => term::status(
                "Evicted",
                &format!(
                    "instance {id} from memory while it waits (wakes in {} or on an event)",
                    term::human_ms(wake_ms.saturating_sub(now_ms()))
                ),
            ),
            Progress::Replaying { entries } => term::status(
                "Replaying",
                &format!("instance {id} from {entries} journal entries"),
            ),
        }
    }
}

/// With `--isolation shared`, the component must be able to run shared.
fn check_shareable(rt: &Runtime, digest: &str, path: &Path) -> Result<()> {
    let shared =
        rt.default_policy.lock().unwrap().isolation == crate::durable::policy::Isolation::Shared;
    if shared && !rt.components.load(digest)?.can_share() {
        bail!(
            "--isolation shared needs a component that exports `run-shared`: a Python workflow built with `weft build --isolation shared`; {} is not one",
            path.display()
        );
    }
    Ok(())
}
