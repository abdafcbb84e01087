//! The scheduler of `weft serve`: one lightweight task per unfinished
//! instance, a bounded pool of running instances, per-workflow concurrency
//! limits with FIFO queueing, eviction while waiting long, pause, resume,
//! terminate and restart.
//!
//! An instance holds a pool permit (and its workflow's permit) only while it
//! works: a wait in memory (a short sleep, an event, a retry delay) gives
//! them back until it ends, as Cloudflare counts concurrency. Instances in
//! memory are bounded by the engine's instance slots. Evicted, paused and
//! waiting instances hold no permit and no guest memory: only a parked task
//! with a timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::journal::{Created, InstanceRecord, JournalError, Owner, Status};
use crate::runner::{Ended, Gate, RequestError, Runtime};

mod children;
mod cluster;
pub mod cron;

/// First and longest delay before an instance's task that failed (not its
/// workflow: the host) tries again.
const RETRY_TASK_MIN: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_TASK_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// A workflow deployed on the server.
pub struct Deployed {
    pub name: String,
    /// The newest version; new instances start on it.
    pub digest: String,
    /// At most this many instances of the workflow run at once.
    pub concurrency: Option<usize>,
}

/// Owns the live instance tasks of a server.
pub struct Scheduler {
    pub rt: Arc<Runtime>,
    workflows: HashMap<String, Deployed>,
    /// When instances may run: `max_running`, the workflows' `concurrency`,
    /// and the engine's instance slots for those in memory.
    gate: Gate,
    tasks: Mutex<HashMap<String, Task>>,
    /// Live tasks after the last pruning of `tasks`.
    tasks_pruned_at: AtomicUsize,
    me: std::sync::OnceLock<std::sync::Weak<Scheduler>>,
    /// On a shared store, the task that claims instances for this host.
    claimer: Mutex<Option<JoinHandle<()>>>,
    /// The cron schedules, and the task that fires them.
    schedules: std::sync::OnceLock<Arc<Vec<cron::Schedule>>>,
    cron: Mutex<Option<JoinHandle<()>>>,
}

/// An instance's task, and the lease generation it was started under.
struct Task {
    handle: JoinHandle<()>,
    lease: u64,
}

impl Task {
    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    fn abort(&self) {
        self.handle.abort();
    }
}

/// Why a request to the scheduler failed; the API maps each to an HTTP
/// status, with no downcasting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("no workflow named `{0}` is deployed")]
    UnknownWorkflow(String),
    #[error("no instance with id `{0}`")]
    UnknownInstance(String),
    /// A transition the instance's status does not allow, an id of another
    /// workflow.
    #[error("{0}")]
    Conflict(String),
    /// Input the caller got wrong.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another live host runs the instance (on a shared store): the
    /// request goes to it.
    #[error("instance is run by host `{}`", .0.host)]
    OwnedElsewhere(Owner),
    /// weft's own failure (a component that does not load, I/O).
    #[error("{0:#}")]
    Host(#[from] anyhow::Error),
}

impl From<RequestError> for Error {
    fn from(e: RequestError) -> Error {
        match e {
            RequestError::Invalid(i) => Error::Invalid(i.0),
            RequestError::Journal(j) => Error::from(j),
        }
    }
}

/// What an upgrade did to one instance.
#[derive(Debug)]
pub enum Upgrade {
    /// Moved to this version (or already on it).
    Moved(String),
    /// Left on its version, for this reason.
    Refused(String),
}

impl Scheduler {
    /// Creates a scheduler; `max_running` bounds the instances working at
    /// once (waiting ones give their permit back).
    pub fn new(
        rt: Arc<Runtime>,
        workflows: Vec<(String, String, Option<usize>)>,
        max_running: usize,
    ) -> Arc<Scheduler> {
        let limits = workflows
            .iter()
            .filter_map(|(name, _, c)| Some((name.clone(), Arc::new(Semaphore::new((*c)?.max(1))))))
            .collect();
        let workflows = workflows
            .into_iter()
            .map(|(name, digest, concurrency)| {
                let d = Deployed {
                    name: name.clone(),
                    digest,
                    concurrency,
                };
                (name, d)
            })
            .collect();
        Arc::new(Scheduler {
            rt,
            workflows,
            gate: Gate {
                resident: Arc::new(Semaphore::new(crate::engine::MAX_RESIDENT)),
                pool: Arc::new(Semaphore::new(max_running.max(1))),
                workflows: limits,
            },
            tasks: Mutex::new(HashMap::new()),
            tasks_pruned_at: AtomicUsize::new(0),
            me: std::sync::OnceLock::new(),
            claimer: Mutex::new(None),
            schedules: std::sync::OnceLock::new(),
            cron: Mutex::new(None),
        })
    }

    /// Instances held in memory now (engine instance slots in use).
    pub fn in_memory(&self) -> usize {
        crate::engine::MAX_RESIDENT.saturating_sub(self.gate.resident.available_permits())
    }

    pub fn workflows(&self) -> impl Iterator<Item = &Deployed> {
        self.workflows.values()
    }

    pub fn workflow(&self, name: &str) -> Result<&Deployed, Error> {
        self.workflows
            .get(name)
            .ok_or_else(|| Error::UnknownWorkflow(name.to_owned()))
    }

    /// Resumes every unfinished, unpaused instance (at start-up). On a
    /// shared store, hosts claim instead (see `cluster.rs`).
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize> {
        if self.shared().is_some() {
            return Ok(0);
        }
        let mut n = 0;
        for rec in self.rt.journal.list(None).await? {
            if !rec.status.is_final() && rec.status != Status::Paused {
                self.spawn(&rec.id);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Creates an instance of `workflow` (or returns the existing one with
    /// that id) and starts it; `traceparent` is the W3C trace context it is
    /// created under, if any.
    pub async fn create(
        self: &Arc<Self>,
        workflow: &str,
        id: Option<String>,
        params: &str,
        traceparent: Option<String>,
    ) -> Result<(bool, InstanceRecord), Error> {
        let wf = self.workflow(workflow)?;
        let created = self
            .rt
            .create_traced(&wf.name, &wf.digest, id, params, None, traceparent)
            .await?;
        match created {
            Created::New(rec) => {
                if self.full().await {
                    // Another host with room takes it.
                    self.let_go(&rec.id).await;
                } else {
                    self.spawn(&rec.id);
                }
                Ok((true, rec))
            }
            Created::Existing(rec) if rec.workflow != workflow => Err(Error::Conflict(format!(
                "instance `{}` exists and belongs to workflow `{}`",
                rec.id, rec.workflow
            ))),
            Created::Existing(rec) => Ok((false, rec)),
        }
    }

    /// Whether the instance's task is running (working, waiting or parked
    /// in memory).
    fn has_task(&self, id: &str) -> bool {
        self.tasks
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|t| !t.is_finished())
    }

    /// Starts the task of an instance unless it has one.
    pub fn spawn(self: &Arc<Self>, id: &str) {
        let mut tasks = self.tasks.lock().unwrap();
        let lease = self.lease_generation();
        if let Some(t) = tasks.get(id).filter(|t| !t.is_finished()) {
            if t.lease == lease {
                return;
            }
            // A task from before this host lost its lease: it may not go
            // on under the new one.
            t.abort();
        }
        // Forget ended tasks now and then, so that the map holds about as
        // many entries as there are live tasks, not every instance ever run.
        if tasks.len() >= 2 * self.tasks_pruned_at.load(Ordering::Relaxed).max(256) {
            tasks.retain(|_, t| !t.is_finished());
            self.tasks_pruned_at.store(tasks.len(), Ordering::Relaxed);
        }
        let me = self.clone();
        let id2 = id.to_owned();
        let handle = tokio::spawn(async move { me.instance_task(&id2).await });
        tasks.insert(id.to_owned(), Task { handle, lease });
    }

    /// The task of one instance: its lifecycle, gated by the server's
    /// limits.
    async fn instance_task(self: Arc<Self>, id: &str) {
        // A failure of the host's own (I/O, loading the component) is
        // retried, as workflow engines retry their tasks: the instance
        // would otherwise stay `running` with nothing running it.
        let mut delay = RETRY_TASK_MIN;
        loop {
            match self.rt.live(id, Some(&self.gate), None).await {
                Ok(Ended::Paused) => {
                    // A resume that came while the lifecycle ended found
                    // this task live and started none: go on if the pause
                    // is lifted. Checked under the lock `spawn` takes, so
                    // either this task goes on or `spawn` starts another.
                    {
                        let mut tasks = self.tasks.lock().unwrap();
                        if !self.rt.control(id).pause_requested() {
                            continue;
                        }
                        tasks.remove(id);
                    }
                    // Paused: whichever host resumes it takes it.
                    self.let_go(id).await;
                    return;
                }
                Ok(Ended::Final(_) | Ended::Deleted) => {
                    if let Some(pg) = self.shared() {
                        pg.disown(id);
                    }
                    return;
                }
                Err(e) => {
                    match e.downcast_ref::<JournalError>() {
                        Some(JournalError::Closed) => return,
                        Some(JournalError::Fenced(_)) => {
                            // Another host took it (this host's lease ran
                            // out): it runs it now; this host lets go.
                            tracing::warn!("instance {id}: {e:#}");
                            if let Some(pg) = self.shared() {
                                pg.disown(id);
                            }
                            self.tasks.lock().unwrap().remove(id);
                            return;
                        }
                        _ => {}
                    }
                    tracing::error!("instance {id}: {e:#}; trying again in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_TASK_MAX);
                }
            }
        }
    }

    fn spawn_child(&self, id: &str) {
        if let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) {
            me.spawn(id);
        }
    }

    /// Stops the instance's task and waits until it has stopped, so that
    /// nothing it was doing writes after what the caller writes next.
    async fn stop(&self, id: &str) {
        let task = self.tasks.lock().unwrap().remove(id);
        if let Some(t) = task {
            t.abort();
            let _ = t.handle.await;
        }
    }

    async fn instance(&self, id: &str) -> Result<InstanceRecord, Error> {
        self.rt
            .journal
            .instance(id)
            .await?
            .ok_or_else(|| Error::UnknownInstance(id.to_owned()))
    }

    /// Pauses an instance: it is `paused` at once and starts nothing new. A
    /// step already running finishes and is journaled first.
    pub async fn pause(&self, id: &str) -> Result<InstanceRecord, Error> {
        self.instance(id).await?;
        self.here(id).await?;
        let rec = self.instance(id).await?;
        if rec.status.is_final() || rec.status == Status::Paused {
            return Err(Error::Conflict(format!(
                "instance `{id}` is {}; only a queued, running or waiting instance can be paused",
                rec.status.as_str()
            )));
        }
        self.rt.control(id).set_pause(true);
        // The record as this request left it (the instance may move on at
        // once, as a resumed one does).
        let rec = self.rt.set_status(id, Status::Paused).await?;
        self.let_go(id).await;
        Ok(rec)
    }

    /// Resumes a paused instance: it is `queued` for a place to run, or
    /// `running` if it was still finishing the step it was paused in.
    pub async fn resume(self: &Arc<Self>, id: &str) -> Result<InstanceRecord, Error> {
        self.instance(id).await?;
        self.here(id).await?;
        let rec = self.instance(id).await?;
        let control = self.rt.control(id);
        if rec.status != Status::Paused && !control.pause_requested() {
            return Err(Error::Conflict(format!(
                "instance `{id}` is {}; only a paused instance can be resumed",
                rec.status.as_str()
            )));
        }
        control.set_pause(false);
        let live = self.has_task(id);
        let status = if live {
            Status::Running
        } else {
            Status::Queued
        };
        let rec = self.rt.set_status(id, status).await?;
        self.spawn(id);
        Ok(rec)
    }

    /// Ends an instance for good; in-flight work is abandoned.
    pub async fn terminate(&self, id: &str) -> Result<InstanceRecord, Error> {
        self.instance(id).await?;
        self.here(id).await?;
        let rec = self.instance(id).await?;
        if rec.status.is_final() {
            return Err(Error::Conflict(format!(
                "instance `{id}` is already {}",
                rec.status.as_str()
            )));
        }
        self.stop(id).await;
        let rec = self.rt.set_status(id, Status::Terminated).await?;
        self.rt.control(id).set_pause(false);
        if let Some(pg) = self.shared() {
            pg.disown(id);
        }
        if let Some(parent) = &rec.parent {
            self.rt.notify(parent);
        }
        Ok(rec)
    }

    /// Runs an instance again from the start, or from occurrence `count`
    /// (1-based) of step `from`, keeping the journal before it.
    pub async fn restart(
        self: &Arc<Self>,
        id: &str,
        from: Option<(String, u32)>,
    ) -> Result<InstanceRecord, Error> {
        self.instance(id).await?;
        self.here(id).await?;
        let keep_before = match &from {
            None => 0,
            Some((_, 0)) => {
                return Err(Error::Invalid(
                    "`count` is the step's occurrence, counted from 1".into(),
                ));
            }
            Some((name, count)) => {
                let n = count - 1;
                let entries = self.rt.journal.entries(id).await?;
                entries
                    .iter()
                    .find(|(_, e)| e.call() == Some((name.as_str(), n)))
                    .map(|(seq, _)| *seq)
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "instance `{id}` has no step \"{name}\" occurrence {count} in its journal"
                        ))
                    })?
            }
        };
        self.stop(id).await;
        self.rt.control(id).set_pause(false);
        self.rt.journal.truncate(id, keep_before).await?;
        // Queued, with no output or error.
        let rec = self.rt.set_status(id, Status::Queued).await?;
        self.spawn(id);
        Ok(rec)
    }

    /// Moves an instance to the newest version of its workflow if its
    /// journal replays on it; otherwise leaves it unchanged and says why.
    pub async fn upgrade(self: &Arc<Self>, id: &str) -> Result<Upgrade, Error> {
        self.instance(id).await?;
        if let Err(Error::OwnedElsewhere(o)) = self.here(id).await {
            return Ok(Upgrade::Refused(format!(
                "instance `{id}` runs on host `{}`; upgrade it there",
                o.host
            )));
        }
        let rec = self.instance(id).await?;
        let wf = self.workflow(&rec.workflow)?;
        if rec.digest == wf.digest {
            return Ok(Upgrade::Moved(rec.digest));
        }
        if rec.status.is_final() {
            return Ok(Upgrade::Refused(format!(
                "instance `{id}` is {}",
                rec.status.as_str()
            )));
        }
        let live = self.has_task(id);
        self.stop(id).await;
        let check = self.rt.check_replay(id, &wf.digest).await;
        let result = match check {
            Ok(Ok(())) => {
                self.rt.journal.set_version(id, &wf.digest).await?;
                Upgrade::Moved(wf.digest.clone())
            }
            Ok(Err(e)) => Upgrade::Refused(format!("{}: {}", e.name, e.message)),
            Err(e) => Upgrade::Refused(format!("{e:#}")),
        };
        if live || rec.status != Status::Paused {
            self.spawn(id);
        } else {
            self.let_go(id).await;
        }
        Ok(result)
    }

    /// Deletes an instance and its journal, stopping it first.
    pub async fn delete(&self, id: &str) -> Result<(), Error> {
        self.instance(id).await?;
        self.here(id).await?;
        self.stop(id).await;
        self.rt.journal.delete(id).await?;
        Ok(())
    }

    /// Makes this scheduler start the child workflows of its instances.
    pub fn install_children(self: &Arc<Self>) {
        let weak: std::sync::Weak<dyn crate::runner::Children> = Arc::downgrade(self) as _;
        let _ = self.rt.children.set(weak);
        let _ = self.me.set(Arc::downgrade(self));
    }

    /// Stops every instance task; the journal keeps each one resumable.
    /// On a shared store, the host then leaves it: other hosts take its
    /// instances at once instead of when its lease runs out.
    pub async fn shutdown(&self) {
        if let Some(t) = self.claimer.lock().unwrap().take() {
            t.abort();
        }
        if let Some(t) = self.cron.lock().unwrap().take() {
            t.abort();
        }
        let tasks: Vec<_> = self.tasks.lock().unwrap().drain().map(|(_, t)| t).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.handle.await;
        }
        if let Some(pg) = self.shared()
            && let Err(e) = pg.leave().await
        {
            tracing::warn!("leaving the store: {e}");
        }
    }

    /// Stops every instance task (this host lost its lease and owns
    /// nothing any more).
    pub fn stop_tasks(&self) {
        for (_, t) in self.tasks.lock().unwrap().drain() {
            t.abort();
        }
    }

    /// Stops the tasks started before this host last lost its lease.
    fn stop_stale_tasks(&self) {
        let lease = self.lease_generation();
        self.tasks.lock().unwrap().retain(|_, t| {
            if t.lease != lease {
                t.abort();
            }
            t.lease == lease
        });
    }

    /// How many times this host has lost its lease (0 on the embedded
    /// journal).
    fn lease_generation(&self) -> u64 {
        self.shared()
            .and_then(|pg| pg.host_lease())
            .map_or(0, |l| l.generation())
    }
}

#[cfg(test)]
mod tests;
