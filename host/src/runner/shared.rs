//! Shared instances (`isolation = "shared"`): runs of one workflow version
//! that share a small pool of warm component instances, each run a
//! concurrent `run-shared` call with its own `run` resource.
//!
//! A worker task owns one store and its instance and starts every run sent
//! to it. When the instance traps, the worker tells each of its runs
//! whether it caused the trap: that run is settled as a trap of its own
//! (its step attempt fails, as in the default mode); the others are run
//! again from their journals, on another instance, charged nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot, watch};

use super::{Control, Runtime};
use crate::bindings::types::{ErrorInfo, WorkflowEvent};
use crate::durable::{Instance, InstanceOptions};
use crate::engine::{GuestPre, LoadedComponent};
use crate::replay::Replay;

/// A worker with no run for this long drops its instance.
const IDLE: Duration = Duration::from_secs(30);

/// How a run in a shared instance ended.
pub(super) enum SharedEnd {
    /// `run-shared` returned this.
    Returned(Result<String, ErrorInfo>),
    /// The instance went down (trapped) under the run.
    Down {
        /// This run caused it: the trap, and whether the memory limit was
        /// hit. `None`: another run did.
        culprit: Option<(wasmtime::Error, bool)>,
    },
}

/// A run for a worker to start.
struct Job {
    inst: Arc<Instance>,
    event: WorkflowEvent,
    done: oneshot::Sender<SharedEnd>,
}

struct Worker {
    tx: mpsc::UnboundedSender<Job>,
    /// Runs sent to it and not ended.
    runs: Arc<AtomicUsize>,
    dead: Arc<AtomicBool>,
}

/// The shared pools of a runtime, by workflow and component.
#[derive(Default)]
pub(super) struct Pools {
    pools: Mutex<HashMap<(String, String), Vec<Worker>>>,
    /// Instances that took a shared instance down (`None`), or were taken
    /// down with one (how many times), until they end.
    trouble: Mutex<HashMap<String, Option<u32>>>,
}

/// Runs displaced this many times in a row run alone from then on: a trap
/// no run was charged for must not take the others down for ever.
const MAX_DISPLACED: u32 = 3;

impl Pools {
    /// Whether `id` must run in an instance of its own: it caused a trap of
    /// a shared instance (so a trap storm of its retries harms no other
    /// run), or was displaced too often.
    pub(super) fn isolated(&self, id: &str) -> bool {
        match self.trouble.lock().unwrap().get(id) {
            Some(None) => true,
            Some(Some(n)) => *n >= MAX_DISPLACED,
            None => false,
        }
    }

    /// `id` took its shared instance down.
    pub(super) fn culprit(&self, id: &str) {
        self.trouble.lock().unwrap().insert(id.to_owned(), None);
    }

    /// `id` went down with its shared instance.
    pub(super) fn displaced(&self, id: &str) {
        let mut t = self.trouble.lock().unwrap();
        if let Some(n) = t.entry(id.to_owned()).or_insert(Some(0)) {
            *n += 1;
        }
    }

    /// `id` ended.
    pub(super) fn forget(&self, id: &str) {
        let mut t = self.trouble.lock().unwrap();
        if !t.is_empty() {
            t.remove(id);
        }
    }
}

/// Workers (instances) per workflow version: one per core, at most 4.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4))
}

impl Runtime {
    /// Runs `inst` in a shared instance of `component`; returns once its
    /// `run-shared` call returned or its instance went down.
    pub(super) fn run_shared(
        self: &Runtime,
        component: &Arc<LoadedComponent>,
        inst: &Arc<Instance>,
        event: WorkflowEvent,
    ) -> oneshot::Receiver<SharedEnd> {
        let (done, rx) = oneshot::channel();
        let mut job = Job {
            inst: inst.clone(),
            event,
            done,
        };
        let key = (inst.workflow.clone(), component.digest.clone());
        let mut pools = self.shared.pools.lock().unwrap();
        let workers = pools.entry(key).or_default();
        workers.retain(|w| !w.dead.load(Ordering::Acquire));
        loop {
            let least = workers
                .iter()
                .min_by_key(|w| w.runs.load(Ordering::Relaxed));
            let worker = match least {
                Some(w) if workers.len() >= pool_size() || w.runs.load(Ordering::Relaxed) == 0 => w,
                _ => {
                    let policy = inst.policy.clone();
                    workers.push(self.start_worker(component.clone(), &inst.workflow, policy));
                    workers.last().unwrap()
                }
            };
            worker.runs.fetch_add(1, Ordering::Relaxed);
            match worker.tx.send(job) {
                Ok(()) => return rx,
                // It went down or idled out meanwhile.
                Err(mpsc::error::SendError(j)) => {
                    worker.runs.fetch_sub(1, Ordering::Relaxed);
                    worker.dead.store(true, Ordering::Release);
                    job = j;
                    workers.retain(|w| !w.dead.load(Ordering::Acquire));
                }
            }
        }
    }

    /// Starts a shared instance of `digest` for `workflow` unless one runs:
    /// a server does at deploy, so that the first run does not wait for
    /// an interpreter to start.
    pub fn warm_shared(&self, workflow: &str, digest: &str) -> anyhow::Result<()> {
        let component = self.components.load(digest)?;
        if !component.can_share() {
            return Ok(());
        }
        let policy = self.policy(workflow);
        let key = (workflow.to_owned(), digest.to_owned());
        let mut pools = self.shared.pools.lock().unwrap();
        let workers = pools.entry(key).or_default();
        workers.retain(|w| !w.dead.load(Ordering::Acquire));
        if workers.is_empty() {
            workers.push(self.start_worker(component, workflow, policy));
        }
        Ok(())
    }

    fn start_worker(
        &self,
        component: Arc<LoadedComponent>,
        workflow: &str,
        policy: Arc<crate::durable::policy::Policy>,
    ) -> Worker {
        let (tx, rx) = mpsc::unbounded_channel();
        let runs = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        // Answers `durable` calls (which a shared guest does not make) and
        // gives the store its policy.
        let placeholder = Instance::new(InstanceOptions {
            id: format!("shared-{workflow}"),
            workflow: workflow.to_owned(),
            span: tracing::Span::none(),
            journal: self.journal.clone(),
            replay: Replay::new(Vec::new()),
            seed: rand::random(),
            events: watch::channel(0).1,
            control: Arc::new(Control::default()),
            children: None,
            policy,
            progress: None,
            admission: None,
            dry_run: true,
        });
        let mut store = self.store_for(
            &component,
            crate::durable::HostState::shared(placeholder, rand::random()),
        );
        let (r, d) = (runs.clone(), dead.clone());
        let _resident = self.components.resident();
        tokio::spawn(async move {
            let _resident = _resident;
            let _counted = crate::metrics::Held::new(&crate::metrics::get().shared_instances);
            work(&mut store, &component, rx, &r).await;
            d.store(true, Ordering::Release);
        });
        Worker { tx, runs, dead }
    }
}

/// The worker's loop: starts the runs sent to it until it idles out or
/// its instance traps; then ends every run it still has.
async fn work(
    store: &mut wasmtime::Store<crate::durable::HostState>,
    component: &LoadedComponent,
    mut rx: mpsc::UnboundedReceiver<Job>,
    runs: &AtomicUsize,
) {
    let GuestPre::Shared(pre) = &component.pre else {
        unreachable!("only components with `run-shared` run shared");
    };
    let jobs: Mutex<HashMap<u32, Job>> = Mutex::new(HashMap::new());
    let ended = |job: Job, end: SharedEnd| {
        runs.fetch_sub(1, Ordering::Relaxed);
        let _ = job.done.send(end);
    };
    let trapped = match pre.instantiate_async(&mut *store).await {
        Err(e) => Some((e, None)),
        Ok(wf) => {
            let r = store
                .run_concurrent(async |acc| {
                    let mut running = FuturesUnordered::new();
                    loop {
                        tokio::select! {
                            job = rx.recv() => {
                                let job = job?;
                                let run = acc.with(|mut s| s.data_mut().add_run(job.inst.clone()));
                                let rep = run.rep();
                                let event = job.event.clone();
                                jobs.lock().unwrap().insert(rep, job);
                                let wf = &wf;
                                running.push(async move { (rep, wf.call_run_shared(acc, run, event).await) });
                            }
                            Some((rep, r)) = running.next(), if !running.is_empty() => {
                                let job = jobs.lock().unwrap().remove(&rep);
                                match r {
                                    Ok(out) => {
                                        if let Some(job) = job {
                                            job.inst.stop.stop();
                                            ended(job, SharedEnd::Returned(out));
                                        }
                                    }
                                    Err(trap) => {
                                        if let Some(job) = job {
                                            jobs.lock().unwrap().insert(rep, job);
                                        }
                                        return Some((trap, Some(rep)));
                                    }
                                }
                            }
                            _ = tokio::time::sleep(IDLE), if running.is_empty() => return None,
                        }
                    }
                })
                .await;
            match r {
                Ok(None) => None,
                Ok(Some((trap, rep))) => Some((trap, rep)),
                Err(trap) => Some((trap, None)),
            }
        }
    };
    rx.close();
    let mut jobs = jobs.into_inner().unwrap();
    // Runs sent but never started: run again elsewhere.
    while let Ok(job) = rx.try_recv() {
        ended(job, SharedEnd::Down { culprit: None });
    }
    let Some((trap, rep)) = trapped else {
        // Idled out with no runs.
        for (_, job) in jobs.drain() {
            ended(job, SharedEnd::Down { culprit: None });
        }
        return;
    };
    // The run the guest said it ran when it trapped caused it; failing
    // that, the run whose call the trap came out of.
    let current = store.data().current();
    let memory_hit = store.data().limiter.was_hit();
    let culprit = jobs
        .iter()
        .find(|(_, j)| current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &j.inst)))
        .map(|(rep, _)| *rep)
        .or(rep);
    tracing::debug!(
        "a shared instance of {} trapped with {} runs: {trap:?}",
        component.digest,
        jobs.len()
    );
    let mut trap = Some(trap);
    for (rep, job) in jobs.drain() {
        job.inst.stop.stop();
        let culprit = match (Some(rep) == culprit, trap.take()) {
            (true, Some(t)) => Some((t, memory_hit)),
            (_, t) => {
                trap = t;
                None
            }
        };
        ended(job, SharedEnd::Down { culprit });
    }
}
