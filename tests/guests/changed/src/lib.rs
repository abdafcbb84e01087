//! The `events` scenario of `scenarios`, changed: it waits for an event
//! under another name first. Resuming an instance of `scenarios` on this
//! component must stop it with a non-determinism error.

use serde_json::{Value, json};
use weft_sdk::{Error, WorkflowEvent, wait_for_event};

async fn run(_event: WorkflowEvent<Value>) -> Result<Value, Error> {
    let renamed = wait_for_event::<Value>("wait-renamed", "second").await?;
    Ok(json!({ "renamed": renamed.payload }))
}

weft_sdk::workflow!(run);
