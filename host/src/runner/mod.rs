//! Runs instances: the runtime of one data dir (journal, components, the
//! event channels and pause switches of live instances) and, in
//! `lifecycle.rs`, the one state machine that takes an instance from
//! admission to its end.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::durable::policy::Policy;
use crate::engine::Components;
use crate::journal::{Created, InstanceRecord, Journal, Notice, Status, now_ms, until_ms};

mod admission;
mod attempt;
mod evicted;
mod input;
mod lifecycle;
mod shared;
mod store;
mod upgrade;
mod watchdog;

pub use crate::durable::{Children, Control};
pub use admission::Admission;
pub use evicted::Wake;
pub use input::{InvalidInput, RequestError, make_event, new_id, parse_payload, valid_id};
pub use lifecycle::{Ended, Gate};

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
    /// Instances that runs of `isolation = "shared"` workflows share.
    shared: shared::Pools,
}

impl Runtime {
    /// Opens the data dir (creating it), its journal and component store.
    pub fn open(data_dir: &Path, evict_after: Duration) -> Result<Arc<Runtime>> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let journal = Journal::open(&data_dir.join("journal.redb"))?;
        Self::with_journal(data_dir, journal, evict_after)
    }

    /// Opens the data dir (for its component store, compile cache and
    /// control socket) with the journal in a shared store (`postgres://…`).
    /// The process registers as a host with a lease of `lease`, and events
    /// any host buffers for its instances wake them at once.
    pub async fn connect(
        data_dir: &Path,
        store: &str,
        evict_after: Duration,
        lease: Duration,
    ) -> Result<Arc<Runtime>> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
        let journal = Journal::connect(store, Some(lease)).await?;
        let rt = Self::with_journal(data_dir, journal, evict_after)?;
        if let Some(pg) = rt.journal.postgres() {
            let mut notices = pg.notices();
            let weak = Arc::downgrade(&rt);
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let notice = notices.recv().await;
                    let Some(rt) = weak.upgrade() else { return };
                    match notice {
                        Ok(Notice::Event(id)) => rt.wake(&id),
                        // Some were missed: wake every instance here to
                        // look at its inbox.
                        Ok(Notice::Reconnected) | Err(RecvError::Lagged(_)) => rt.notify_all(),
                        Ok(Notice::Work) => {}
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        }
        Ok(rt)
    }

    fn with_journal(
        data_dir: &Path,
        journal: Journal,
        evict_after: Duration,
    ) -> Result<Arc<Runtime>> {
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
            shared: Default::default(),
        }))
    }

    /// Stores a component: in the data dir and, with a shared store, there
    /// too, so that every host can load it. Returns its digest.
    pub async fn store_component(&self, bytes: &[u8]) -> Result<String> {
        let digest = self.components.store_bytes(bytes)?;
        if let Some(pg) = self.journal.postgres() {
            pg.put_component(&digest, bytes).await?;
        }
        Ok(digest)
    }

    /// Makes sure a component is in the data dir, fetching it from the
    /// shared store if another host stored it.
    pub async fn fetch_component(&self, digest: &str) -> Result<()> {
        if self.components.has(digest) {
            return Ok(());
        }
        if let Some(pg) = self.journal.postgres()
            && let Some(bytes) = pg.component(digest).await?
        {
            self.components.store_bytes(&bytes)?;
        }
        Ok(())
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
        self.create_traced(workflow, digest, id, input, None, None)
            .await
    }

    /// Like [`Runtime::create`], with the parent of a child workflow and the
    /// W3C trace context (`traceparent`) the instance is created under.
    pub async fn create_traced(
        &self,
        workflow: &str,
        digest: &str,
        id: Option<String>,
        input: &str,
        parent: Option<String>,
        traceparent: Option<String>,
    ) -> Result<Created, RequestError> {
        let id = id.unwrap_or_else(new_id);
        if !valid_id(&id) {
            return Err(InvalidInput(format!(
                "invalid instance id `{id}`: use 1 to 100 letters, digits, `_` or `-`, not starting with `-`"
            ))
            .into());
        }
        let input = parse_payload("input", input)?;
        // One trace per instance: a `create` span (under the caller's trace,
        // if it gave one) is the parent of all the instance's runs.
        let span = tracing::info_span!(
            target: "weft::trace",
            "create",
            otel.name = %format!("create {workflow}"),
            workflow,
            instance = %id,
        );
        if let Some(tp) = &traceparent {
            crate::otel::set_parent(&span, tp);
        }
        let traceparent = crate::otel::traceparent_of(&span).or(traceparent);
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
            traceparent,
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

    /// Wakes whatever waits on `id`'s events (a child finished), on
    /// whichever host runs it.
    pub fn notify(&self, id: &str) {
        if let Some(tx) = self.events.lock().unwrap().get(id) {
            tx.send_modify(|v| *v += 1);
        } else if let Some(pg) = self.journal.postgres() {
            // Not here: the host that runs it hears of it.
            let (pg, id) = (pg.clone(), id.to_owned());
            tokio::spawn(async move {
                if let Err(e) = pg.announce_event(&id).await {
                    tracing::warn!("waking instance {id} on its host: {e}");
                }
            });
        }
    }

    /// Wakes `id` if it is live here.
    fn wake(&self, id: &str) {
        if let Some(tx) = self.events.lock().unwrap().get(id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    /// Wakes every instance of this process that waits for an event.
    pub fn notify_all(&self) {
        for tx in self.events.lock().unwrap().values() {
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

    /// Bookkeeping for an instance found or made final.
    fn finish(&self, rec: InstanceRecord) -> InstanceRecord {
        if let Some(parent) = &rec.parent {
            self.notify(parent);
        }
        // Its event channel and pause switch are not needed any more (a
        // restart makes new ones); keeping them would grow these maps with
        // every instance a server ever ran.
        self.events.lock().unwrap().remove(&rec.id);
        self.controls.lock().unwrap().remove(&rec.id);
        self.shared.forget(&rec.id);
        self.finished
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rec
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
}

#[cfg(test)]
mod tests;
