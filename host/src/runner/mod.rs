//! Runs one instance to its end: instantiate, replay, do new work, evict
//! while waiting long, and journal the final state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{mpsc, watch};

use crate::durable::policy::Policy;
use crate::durable::{Instance, InstanceOptions, Progress, RunningStep, next_retry_ms};
use crate::engine::Components;
use crate::journal::{
    AttemptResult, Created, Entry, ErrorInfo, InstanceRecord, Journal, JournalError, Status,
    StatusUpdate, now_ms, until_ms,
};
use crate::replay::Replay;

mod admission;
mod evicted;
mod input;
mod store;
mod upgrade;
mod watchdog;

pub use crate::durable::{Children, Control};
pub use admission::Admission;
pub use evicted::Wake;
pub use input::{InvalidInput, RequestError, make_event, new_id, parse_payload, valid_id};
use store::workflow_event;

use watchdog::watchdog;

/// The engine, the journal and the live instances of one data dir.
pub struct Runtime {
    pub journal: Journal,
    pub components: Components,
    pub data_dir: PathBuf,
    events: Mutex<HashMap<String, watch::Sender<u64>>>,
    controls: Mutex<HashMap<String, Arc<Control>>>,
    /// Instances this process ran to a final state (for benchmarks and
    /// metrics).
    pub finished: std::sync::atomic::AtomicUsize,
    /// Policies by workflow name; `default_policy` for the others.
    policies: Mutex<HashMap<String, Arc<Policy>>>,
    pub default_policy: Mutex<Arc<Policy>>,
    /// Who starts child workflows (the scheduler of `weft serve`).
    pub children: std::sync::OnceLock<std::sync::Weak<dyn Children>>,
    /// An instance whose every pending call waits longer than this is
    /// evicted and replayed when it wakes.
    pub evict_after: Duration,
}

/// Why the runner stopped a live instance.
#[derive(Debug)]
enum Interrupt {
    /// A step ran past its timeout.
    Timeout(RunningStep),
    /// Every pending call waits long: drop the instance until it wakes.
    Evict(Wake),
    /// A pause was requested and no step is running.
    Pause,
}

impl Runtime {
    /// Opens the data dir (creating it), its journal and component store.
    pub fn open(data_dir: &Path, evict_after: Duration) -> Result<Arc<Runtime>> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let journal = Journal::open(&data_dir.join("journal.redb"))?;
        let components = Components::new(data_dir)?;
        Ok(Arc::new(Runtime {
            journal,
            components,
            data_dir: data_dir.to_owned(),
            events: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            children: std::sync::OnceLock::new(),
            finished: std::sync::atomic::AtomicUsize::new(0),
            policies: Mutex::new(HashMap::new()),
            default_policy: Mutex::new(Arc::new(Policy::default())),
            evict_after,
        }))
    }

    /// Notified whenever an event is sent to `id`.
    pub fn event_receiver(&self, id: &str) -> watch::Receiver<u64> {
        let mut map = self.events.lock().unwrap();
        map.entry(id.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Creates an instance of the stored component `digest`, or returns the
    /// existing one with that id.
    pub async fn create(
        &self,
        workflow: &str,
        digest: &str,
        id: Option<String>,
        input: &str,
    ) -> Result<Created, RequestError> {
        self.create_child(workflow, digest, id, input, None).await
    }

    /// Like [`Runtime::create`], recording the parent of a child workflow.
    pub async fn create_child(
        &self,
        workflow: &str,
        digest: &str,
        id: Option<String>,
        input: &str,
        parent: Option<String>,
    ) -> Result<Created, RequestError> {
        let id = id.unwrap_or_else(new_id);
        if !valid_id(&id) {
            return Err(InvalidInput(format!(
                "invalid instance id `{id}`: use 1 to 100 letters, digits, `_` or `-`, not starting with `-`"
            ))
            .into());
        }
        let input = parse_payload("input", input)?;
        let now = now_ms();
        let rec = InstanceRecord {
            id,
            workflow: workflow.to_owned(),
            digest: digest.to_owned(),
            input,
            status: Status::Queued,
            output: None,
            error: None,
            created_ms: now,
            updated_ms: now,
            parent,
            seed: rand::random(),
        };
        Ok(self.journal.create(rec).await?)
    }

    /// Sets the policy of a workflow.
    pub fn set_policy(&self, workflow: &str, policy: Policy) {
        self.policies
            .lock()
            .unwrap()
            .insert(workflow.to_owned(), Arc::new(policy));
    }

    /// The policy instances of `workflow` run under.
    pub fn policy(&self, workflow: &str) -> Arc<Policy> {
        match self.policies.lock().unwrap().get(workflow) {
            Some(p) => p.clone(),
            None => self.default_policy.lock().unwrap().clone(),
        }
    }

    /// Wakes whatever waits on `id`'s events (a child finished).
    pub fn notify(&self, id: &str) {
        if let Some(tx) = self.events.lock().unwrap().get(id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Buffers an event for an instance and wakes it if it is live.
    pub async fn send_event(
        &self,
        id: &str,
        event_type: &str,
        payload: &str,
    ) -> Result<(), RequestError> {
        let event = make_event(event_type, payload)?;
        self.journal.push_event(id, event).await?;
        if let Some(tx) = self.events.lock().unwrap().get(id) {
            tx.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Runs an instance until it is complete or errored, replaying its
    /// journal first. Returns its final record.
    pub async fn drive(
        &self,
        id: &str,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<InstanceRecord> {
        let mut events = self.event_receiver(id);
        loop {
            match self.run_until_idle(id, &progress, None).await? {
                Idle::Final(rec) => return Ok(rec),
                Idle::Evicted(wake) => self.sleep_evicted(id, &mut events, &wake).await?,
                // Nothing pauses an instance of `weft run`; go on.
                Idle::Paused => {}
            }
        }
    }

    /// Runs an instance until it is final, evicted (waiting long) or
    /// paused, replaying its journal first. With `admission` (a server's
    /// instance), its permits are held on entry, given back while the
    /// instance only waits and taken again when a wait ends.
    pub async fn run_until_idle(
        &self,
        id: &str,
        progress: &Option<mpsc::UnboundedSender<Progress>>,
        admission: Option<&Arc<Admission>>,
    ) -> Result<Idle> {
        let events = self.event_receiver(id);
        let control = self.control(id);
        loop {
            let rec = self
                .journal
                .instance(id)?
                .ok_or_else(|| JournalError::UnknownInstance(id.to_owned()))?;
            if rec.status.is_final() {
                return Ok(self.finish(rec));
            }
            if control.pause_requested() {
                self.set_status(id, Status::Paused, None, None).await?;
                return Ok(Idle::Paused);
            }
            if rec.status != Status::Running {
                // Not waited for: after a crash an instance found `queued`
                // is run all the same.
                self.journal.update_lazy(
                    id,
                    StatusUpdate {
                        status: Status::Running,
                        output: None,
                        error: None,
                    },
                );
            }
            match self
                .run_once(&rec, &events, &control, progress.clone(), admission)
                .await?
            {
                RunEnd::Final(rec) => return Ok(self.finish(rec)),
                RunEnd::Retry => continue,
                RunEnd::Paused => {
                    self.set_status(id, Status::Paused, None, None).await?;
                    return Ok(Idle::Paused);
                }
                RunEnd::Evicted(wake) => {
                    if control.pause_requested() {
                        // Paused while it ran: stay `paused`, not `waiting`.
                        self.set_status(id, Status::Paused, None, None).await?;
                        return Ok(Idle::Paused);
                    }
                    if let Some(tx) = progress {
                        let _ = tx.send(Progress::Evicted {
                            wake_ms: wake.at_ms,
                        });
                    }
                    self.set_status(id, Status::Waiting, None, None).await?;
                    return Ok(Idle::Evicted(wake));
                }
            }
        }
    }

    /// Bookkeeping for an instance found or made final.
    fn finish(&self, rec: InstanceRecord) -> Idle {
        if let Some(parent) = &rec.parent {
            self.notify(parent);
        }
        // Its event channel and pause switch are not needed any more (a
        // restart makes new ones); keeping them would grow these maps with
        // every instance a server ever ran.
        self.events.lock().unwrap().remove(&rec.id);
        self.controls.lock().unwrap().remove(&rec.id);
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Idle::Final(rec)
    }

    /// Instances with an event channel or a pause switch in memory (for
    /// tests and metrics): those live, paused or waiting on this process.
    pub fn tracked_instances(&self) -> usize {
        let events = self.events.lock().unwrap();
        let controls = self.controls.lock().unwrap();
        events.len() + controls.keys().filter(|k| !events.contains_key(*k)).count()
    }

    /// The pause switch of an instance.
    /// Whether this process runs (or keeps waiting, paused or evicted) the
    /// instance: `weft serve` tracks every unfinished one, `weft run` the
    /// one it drives and its children.
    pub fn tracks(&self, id: &str) -> bool {
        self.controls.lock().unwrap().contains_key(id)
            || self.events.lock().unwrap().contains_key(id)
    }

    pub fn control(&self, id: &str) -> Arc<Control> {
        self.controls
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    async fn set_status(
        &self,
        id: &str,
        status: Status,
        output: Option<Box<serde_json::value::RawValue>>,
        error: Option<ErrorInfo>,
    ) -> Result<InstanceRecord> {
        Ok(self
            .journal
            .update(
                id,
                StatusUpdate {
                    status,
                    output,
                    error,
                },
            )
            .await?)
    }

    async fn run_once(
        &self,
        rec: &InstanceRecord,
        events: &watch::Receiver<u64>,
        control: &Arc<Control>,
        progress: Option<mpsc::UnboundedSender<Progress>>,
        admission: Option<&Arc<Admission>>,
    ) -> Result<RunEnd> {
        let component = self.components.load(&rec.digest)?;
        let entries = self.journal.entries(&rec.id)?;
        if !entries.is_empty()
            && let Some(tx) = &progress
        {
            let _ = tx.send(Progress::Replaying {
                entries: entries.len(),
            });
        }
        let replay = Replay::new(entries);
        let inst = Instance::new(InstanceOptions {
            id: rec.id.clone(),
            journal: self.journal.clone(),
            replay,
            seed: rec.seed,
            events: events.clone(),
            control: control.clone(),
            children: self.children.get().and_then(|w| w.upgrade()),
            policy: self.policy(&rec.workflow),
            progress: progress.clone(),
            admission: admission.map(|a| a.clone() as Arc<dyn crate::durable::RunPermits>),
            dry_run: false,
        });
        let policy = inst.policy.clone();
        let _live = self.journal.live();
        let _resident = self.components.resident();
        let mut store = self.new_store(component.pre.engine(), &inst, rec.seed);
        let event = workflow_event(rec);
        let run = async {
            let wf = component.pre.instantiate_async(&mut store).await?;
            store
                .run_concurrent(async |acc| wf.call_run(acc, event).await)
                .await?
        };
        let ended = tokio::select! {
            r = run => Ok(r),
            i = watchdog(&inst, control, self.evict_after) => Err(i),
        };
        let memory_hit = store.data().limiter.was_hit();
        drop(store);
        let id = rec.id.as_str();
        let (fatal, host_error, paused) = {
            let st = inst.lock();
            (st.fatal.clone(), st.host_error.clone(), st.paused)
        };
        if let Some(e) = host_error {
            bail!("instance {id}: {e}");
        }
        if let Some(e) = fatal {
            let rec = self.set_status(id, Status::Errored, None, Some(e)).await?;
            return Ok(RunEnd::Final(rec));
        }
        if paused || matches!(ended, Err(Interrupt::Pause)) {
            return Ok(RunEnd::Paused);
        }
        match ended {
            Ok(Ok(Ok(json))) => {
                let json = policy.redact(&json);
                let rec = if let Err(e) = inst.check_finished() {
                    self.set_status(id, Status::Errored, None, Some(e)).await?
                } else {
                    match parse_payload("workflow output", &json) {
                        Ok(out) => {
                            self.set_status(id, Status::Complete, Some(out), None)
                                .await?
                        }
                        Err(e) => {
                            let e = ErrorInfo::new("InvalidOutput", format!("{e:#}"));
                            self.set_status(id, Status::Errored, None, Some(e)).await?
                        }
                    }
                };
                Ok(RunEnd::Final(rec))
            }
            Ok(Ok(Err(e))) => {
                let e = policy.redact_error(ErrorInfo::new(e.name, e.message));
                let e =
                    crate::durable::name_memory_error(e, memory_hit, policy.limits.memory_bytes);
                let rec = self.set_status(id, Status::Errored, None, Some(e)).await?;
                Ok(RunEnd::Final(rec))
            }
            // No room in the engine's pool: not the workflow's doing. The
            // instance task tries again later (nothing was journaled).
            Ok(Err(e)) if crate::engine::out_of_slots(&e) => {
                bail!("instance {id}: {e:#}")
            }
            Ok(Err(trap)) => {
                tracing::debug!("instance {id} trapped: {trap:?}");
                let what = match trap.downcast_ref::<wasmtime::Trap>() {
                    Some(t) => t.to_string(),
                    None => trap.to_string(),
                };
                let e = if memory_hit {
                    crate::durable::memory_limit_exceeded(policy.limits.memory_bytes)
                } else {
                    ErrorInfo::new(
                        "WorkflowTrap",
                        format!("the workflow trapped: {}", policy.redact(&what)),
                    )
                };
                // A trap inside a step body is a failed attempt of the
                // steps that were running; outside, it ends the instance.
                let running: Vec<RunningStep> = inst.lock().running.values().cloned().collect();
                if !running.is_empty() {
                    let now = now_ms();
                    let entries = running
                        .into_iter()
                        .map(|step| {
                            let retry_ms = next_retry_ms(&step.retries, step.attempt, now);
                            if let Some(tx) = &progress {
                                let _ = tx.send(Progress::StepFailed {
                                    name: step.name.clone(),
                                    attempt: step.attempt,
                                    error: e.clone(),
                                    retry_in_ms: retry_ms.map(|at| at - now),
                                });
                            }
                            Entry::Step {
                                name: step.name,
                                n: step.n,
                                attempt: step.attempt,
                                started_ms: step.started_ms,
                                ended_ms: now,
                                result: AttemptResult::Err {
                                    error: e.clone(),
                                    retry_ms,
                                },
                            }
                        })
                        .collect();
                    self.journal.append(id, entries).await?;
                    return Ok(RunEnd::Retry);
                }
                let rec = self.set_status(id, Status::Errored, None, Some(e)).await?;
                Ok(RunEnd::Final(rec))
            }
            Err(Interrupt::Timeout(step)) => {
                let now = now_ms();
                let retry_ms = next_retry_ms(&step.retries, step.attempt, now);
                let error = ErrorInfo::new(
                    "StepTimeout",
                    format!(
                        "step \"{}\" attempt {} ran past its timeout of {} ms",
                        step.name,
                        step.attempt,
                        now.saturating_sub(step.started_ms)
                    ),
                );
                if let Some(tx) = &progress {
                    let _ = tx.send(Progress::StepFailed {
                        name: step.name.clone(),
                        attempt: step.attempt,
                        error: error.clone(),
                        retry_in_ms: retry_ms.map(|at| at - now),
                    });
                }
                self.journal
                    .append(
                        id,
                        vec![Entry::Step {
                            name: step.name,
                            n: step.n,
                            attempt: step.attempt,
                            started_ms: step.started_ms,
                            ended_ms: now,
                            result: AttemptResult::Err { error, retry_ms },
                        }],
                    )
                    .await?;
                Ok(RunEnd::Retry)
            }
            Err(Interrupt::Evict(wake)) => Ok(RunEnd::Evicted(wake)),
            Err(Interrupt::Pause) => Ok(RunEnd::Paused),
        }
    }
}

/// Why [`Runtime::run_until_idle`] returned.
#[derive(Debug)]
pub enum Idle {
    /// The instance ended (complete, errored or terminated).
    Final(InstanceRecord),
    /// Everything it waits for is far away: it holds no memory until it
    /// wakes.
    Evicted(Wake),
    /// Paused on request; it stays paused until resumed.
    Paused,
}

enum RunEnd {
    /// The instance ended; its final record.
    Final(InstanceRecord),
    Retry,
    Paused,
    Evicted(Wake),
}
