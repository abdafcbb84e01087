//! The shortest useful weft workflow: two steps around a durable sleep.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_sdk::{Error, WorkflowEvent, sleep, step};

#[derive(Deserialize)]
struct Input {
    name: String,
}

#[derive(Serialize)]
struct Output {
    greeting: String,
    letters: usize,
}

async fn hello(event: WorkflowEvent<Input>) -> Result<Output, Error> {
    let name = event.payload.name;
    let greeting: String = step("greet", move || {
        let name = name.clone();
        async move { Ok(format!("Hello, {name}!")) }
    })
    .await?;
    sleep("pause", Duration::from_secs(1)).await;
    let g = greeting.clone();
    let letters: usize = step("count", move || {
        let g = g.clone();
        async move { Ok(g.chars().filter(|c| c.is_alphabetic()).count()) }
    })
    .await?;
    Ok(Output { greeting, letters })
}

weft_sdk::workflow!(hello);
