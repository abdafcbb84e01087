//! Checking that an instance's journal replays on another component
//! version, without doing new work or writing anything.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::sync::watch;

use super::store::workflow_event;
use super::{Control, Runtime};
use crate::durable::{Instance, InstanceOptions};
use crate::journal::{ErrorInfo, JournalError};
use crate::replay::Replay;

impl Runtime {
    /// Replays an instance's journal against component `digest` without
    /// doing any new work or writing anything: `Ok(Err(e))` when the new
    /// code does not make the journaled calls.
    pub async fn check_replay(&self, id: &str, digest: &str) -> Result<Result<(), ErrorInfo>> {
        let rec = self
            .journal
            .instance(id)
            .await?
            .ok_or_else(|| JournalError::UnknownInstance(id.to_owned()))?;
        let component = self.components.load(digest)?;
        let replay = Replay::new(self.journal.entries(id).await?);
        let events = watch::channel(0).1;
        let inst = Instance::new(InstanceOptions {
            id: rec.id.clone(),
            workflow: rec.workflow.clone(),
            span: tracing::Span::none(),
            journal: self.journal.clone(),
            replay,
            seed: rec.seed,
            events,
            control: Arc::new(Control::default()),
            children: None,
            policy: self.policy(&rec.workflow),
            progress: None,
            admission: None,
            dry_run: true,
        });
        let mut store = self.new_store(&component, &inst, rec.seed);
        let event = workflow_event(&rec);
        let run = component.run(&mut store, event);
        // The replay is done when every journaled call was made again.
        let caught_up = async {
            loop {
                {
                    let st = inst.lock();
                    if st.fatal.is_some() || (!st.replay.is_replaying() && st.busy == 0) {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), async {
            tokio::select! {
                r = run => Some(r),
                _ = caught_up => None,
            }
        })
        .await;
        drop(store);
        let st = inst.lock();
        if let Some(e) = &st.fatal {
            return Ok(Err(e.clone()));
        }
        match outcome {
            Err(_) => Ok(Err(ErrorInfo::new(
                "UpgradeTimeout",
                "the replay did not catch up within 60 s",
            ))),
            Ok(Some(Ok(Ok(_)))) | Ok(Some(Ok(Err(_)))) => {
                drop(st);
                Ok(inst.check_finished())
            }
            Ok(_) if !st.replay.is_replaying() => Ok(Ok(())),
            // No room in the engine's pool says nothing of the new version.
            Ok(Some(Err(e))) if crate::engine::out_of_slots(&e) => {
                anyhow::bail!("instance {}: {e:#}", rec.id)
            }
            Ok(Some(Err(trap))) => Ok(Err(ErrorInfo::new(
                "WorkflowTrap",
                format!("the new version trapped while replaying: {trap:#}"),
            ))),
            Ok(None) => Ok(Ok(())),
        }
    }
}
