//! Counts the primes in `[from, to)` in one step: the CPU-heavy child of the
//! mixed-language example.

use serde::Deserialize;
use serde_json::{Value, json};
use weft_sdk::{Error, WorkflowEvent, step};

#[derive(Deserialize)]
struct Range {
    from: u64,
    to: u64,
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

async fn primes(event: WorkflowEvent<Range>) -> Result<Value, Error> {
    let Range { from, to } = event.payload;
    let count: u64 = step("count", move || async move {
        Ok((from..to).filter(|n| is_prime(*n)).count() as u64)
    })
    .await?;
    Ok(json!({"from": from, "to": to, "primes": count}))
}

weft_sdk::workflow!(primes);
