//! Child workflows: the scheduler starts them for the instances it runs.

use super::*;

impl crate::runner::Children for Scheduler {
    fn start_child(
        &self,
        workflow: String,
        id: String,
        params: String,
        parent: String,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), crate::journal::ErrorInfo>> + Send + '_>,
    > {
        // Called within the parent's `child` span: the child's runs are
        // traced under it.
        let traceparent = crate::otel::current_traceparent();
        Box::pin(async move {
            use crate::journal::ErrorInfo;
            let wf = self.workflows.get(&workflow).ok_or_else(|| {
                ErrorInfo::new(
                    "ChildWorkflowNotFound",
                    format!("no workflow named `{workflow}` is deployed on this server"),
                )
            })?;
            let created = self
                .rt
                .create_traced(
                    &wf.name,
                    &wf.digest,
                    Some(id.clone()),
                    &params,
                    Some(parent),
                    traceparent,
                )
                .await
                .map_err(|e| ErrorInfo::new("ChildWorkflowError", format!("{e:#}")))?;
            let rec = match created {
                Created::New(rec) | Created::Existing(rec) => rec,
            };
            if !rec.status.is_final() {
                let me = self
                    .tasks
                    .lock()
                    .unwrap()
                    .get(&id)
                    .is_some_and(|t| !t.is_finished());
                if !me {
                    self.spawn_child(&id);
                }
            }
            Ok(())
        })
    }
}
