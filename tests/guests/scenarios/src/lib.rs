//! A test workflow whose behaviour is chosen by `payload.scenario`. Each
//! scenario exercises one semantic of weft; tests/e2e drives them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};
use weft_sdk::{
    Backoff, Error, Saga, StepContext, WorkflowEvent, join, sleep, step, step_with,
    wait_for_event,
};

#[derive(Deserialize)]
struct Input {
    scenario: String,
    #[serde(default)]
    n: u64,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    child: Option<String>,
    #[serde(default)]
    url: Option<String>,
}

async fn run(event: WorkflowEvent<Input>) -> Result<Value, Error> {
    let input = event.payload;
    match input.scenario.as_str() {
        "basic" => basic(&event.instance_id).await,
        "retries" => retries().await,
        "backoff" => backoff().await,
        "exhausted" => exhausted().await,
        "non-retryable" => non_retryable().await,
        "timeout" => timeout().await,
        "too-large" => too_large().await,
        "sleep" => sleep_then_step(input.ms).await,
        "slow-step-sleep" => slow_step_sleep(input.ms).await,
        "events" => events().await,
        "event-timeout" => event_timeout(input.ms).await,
        "concurrent" => concurrent(input.ms).await,
        "nondet" => nondet(input.ms).await,
        "long" => long(input.n, input.ms).await,
        "loop-names" => loop_names(input.n).await,
        "fail" => Err(Error::named("InvalidOrder", "order 42 has no items")),
        "parent" => parent(input.child.as_deref().unwrap_or("scenarios")).await,
        "fetch" => fetch_twice(input.url.as_deref().unwrap_or_default(), input.ms).await,
        "cluster" => {
            let url = input.url.as_deref().unwrap_or_default();
            cluster(url, &event.instance_id, input.n, input.ms).await
        }
        "secret" => secret_use().await,
        "step-context" => step_context(input.ms).await,
        "saga" => saga(input.ms).await,
        "borrow" => borrow(input.ms).await,
        "step-cpu" => step_cpu(input.url.as_deref().unwrap_or_default()).await,
        "spin-body" => loop {
            std::hint::black_box(0u64);
        },
        "memory-bomb" => memory_bomb().await,
        "memory-bomb-body" => {
            let mut hog: Vec<Vec<u8>> = Vec::new();
            loop {
                hog.push(vec![1u8; 16 << 20]);
            }
        }
        "many-steps" => loop_names(input.n).await,
        "steps-then-wait" => {
            let done = loop_names(input.n).await?;
            let ev = wait_for_event::<Value>("go", "go").await?;
            // When the step after the replay started, for the benchmark.
            let last: u64 = step("last", || async { Ok(unix_us()) }).await?;
            Ok(json!({"steps": done.as_array().map(|a| a.len()), "event": ev.payload, "last": last}))
        }
        "step-trap" => step_trap().await,
        "panic-sibling" => panic_sibling().await,
        "config-ids" => config_ids(input.n),
        "loud" => loud(input.n).await,
        "trap" => {
            step("before-trap", || async { Ok(1) }).await?;
            panic!("deliberate guest panic")
        }
        other => Err(Error::non_retryable(format!("unknown scenario {other}"))),
    }
}

weft_sdk::workflow!(run);

/// A step that prints `n` lines of 1 KiB.
async fn loud(n: u64) -> Result<Value, Error> {
    step("shout", move || async move {
        let line = "x".repeat(1023);
        for i in 0..n {
            println!("{i:08} {line}");
        }
        Ok(n)
    })
    .await
    .map(|n: u64| json!(n))
}

async fn basic(id: &str) -> Result<Value, Error> {
    let a: u64 = step("a", || async { Ok(20) }).await?;
    let b: u64 = step("b", || async { Ok(a + 22) }).await?;
    // Borrows `id`: no clone, no `move`.
    let greeting: String = step("greet", || async { Ok(format!("hello {id}")) }).await?;
    Ok(json!({ "a": a, "b": b, "greeting": greeting }))
}

/// Fails twice, then succeeds: three attempts, 100 ms apart.
async fn retries() -> Result<Value, Error> {
    let mut tries = 0;
    let v: u32 = step("flaky", move || {
        tries += 1;
        let t = tries;
        async move {
            if t < 3 {
                Err(Error::new(format!("flaky failure {t}")))
            } else {
                Ok(t)
            }
        }
    })
    .retries(5)
    .delay(Duration::from_millis(100))
    .backoff(Backoff::Constant)
    .await?;
    Ok(json!({ "attempts": v }))
}

/// Three steps failing three times each with linear and exponential
/// backoff; the journal shows the delays.
async fn backoff() -> Result<Value, Error> {
    for (name, backoff) in [
        ("linear", Backoff::Linear),
        ("exponential", Backoff::Exponential),
    ] {
        let mut tries = 0;
        step(name, move || {
            tries += 1;
            let t = tries;
            async move {
                if t <= 3 {
                    Err(Error::new("not yet"))
                } else {
                    Ok(t)
                }
            }
        })
        .retries(3)
        .delay(Duration::from_millis(40))
        .backoff(backoff)
        .await?;
    }
    Ok(json!("ok"))
}

/// Always fails: the workflow catches the final error.
async fn exhausted() -> Result<Value, Error> {
    let r: Result<u32, Error> = step("doomed", || async {
        Err(Error::named("UpstreamDown", "503 from upstream"))
    })
    .retries(2)
    .delay(Duration::from_millis(10))
    .backoff(Backoff::Constant)
    .await;
    let e = r.unwrap_err();
    Ok(json!({ "caught": e.name(), "message": e.message() }))
}

async fn non_retryable() -> Result<Value, Error> {
    let r: Result<u32, Error> = step("card", || async {
        Err(Error::non_retryable("card declined"))
    })
    .retries(5)
    .delay(Duration::from_millis(10))
    .await;
    let e = r.unwrap_err();
    Ok(json!({ "caught": e.name(), "message": e.message() }))
}

/// A step that never finishes; times out on both attempts.
async fn timeout() -> Result<Value, Error> {
    let r: Result<u32, Error> = step("spin", || async {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
            if x == u64::MAX {
                break;
            }
        }
        Ok(1)
    })
    .retries(1)
    .delay(Duration::from_millis(10))
    .timeout(Duration::from_millis(300))
    .await;
    let e = r.unwrap_err();
    let after: u32 = step("after", || async { Ok(7) }).await?;
    Ok(json!({ "caught": e.name(), "after": after }))
}

async fn too_large() -> Result<Value, Error> {
    let r: Result<String, Error> = step("huge", || async { Ok("x".repeat(2 << 20)) }).await;
    let e = r.unwrap_err();
    Ok(json!({ "caught": e.name(), "message": e.message() }))
}

async fn sleep_then_step(ms: u64) -> Result<Value, Error> {
    let before: u64 = step("before", || async { Ok(1) }).await?;
    sleep("nap", Duration::from_millis(ms)).await;
    let after: u64 = step("after", || async { Ok(2) }).await?;
    Ok(json!({ "before": before, "after": after }))
}

/// A step whose body takes `ms` (the instance works), then a durable sleep
/// of 2 s (it only waits), then a step.
async fn slow_step_sleep(ms: u64) -> Result<Value, Error> {
    let before: u64 = step("work", move || async move {
        weft_sdk::delay(Duration::from_millis(ms)).await;
        Ok(1)
    })
    .await?;
    sleep("nap", Duration::from_millis(2000)).await;
    let after: u64 = step("after", || async { Ok(2) }).await?;
    Ok(json!({ "before": before, "after": after }))
}

#[derive(Deserialize, serde::Serialize)]
struct Approval {
    by: String,
}

/// Waits for `second` first and `first` second: a test sends `first`
/// before `second`, so `first` is buffered before its wait starts.
async fn events() -> Result<Value, Error> {
    let second = wait_for_event::<Value>("wait-second", "second").await?;
    let first = wait_for_event::<Approval>("wait-first", "first").await?;
    Ok(json!({ "first": first.payload.by, "second": second.payload, "type": first.event_type }))
}

async fn event_timeout(ms: u64) -> Result<Value, Error> {
    let r = wait_for_event::<Value>("approval", "approve")
        .timeout(Duration::from_millis(ms))
        .await;
    match r {
        Ok(e) => Ok(json!({ "got": e.payload })),
        Err(e) if e.is_timeout() => Ok(json!({ "timedOut": true, "error": e.name() })),
        Err(e) => Err(e),
    }
}

/// Two sleeps, a wait and two steps at once.
async fn concurrent(ms: u64) -> Result<Value, Error> {
    let (_, _, ev, a, b) = join!(
        sleep("left", Duration::from_millis(ms)),
        sleep("right", Duration::from_millis(ms)),
        wait_for_event::<Value>("go", "go").into_future(),
        step("a", || async { Ok(1u32) }).into_future(),
        step("b", || async { Ok(2u32) }).into_future(),
    );
    Ok(json!({ "event": ev?.payload, "sum": a? + b? }))
}

use std::future::IntoFuture;

/// Reads the clock and randomness outside steps, sleeps (long enough to be
/// evicted), and returns what it read: a replay must see the same values.
async fn nondet(ms: u64) -> Result<Value, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut bytes = [0u8; 8];
    getrandom_fill(&mut bytes);
    let random = u64::from_le_bytes(bytes);
    let name = format!("nap-{}", random % 1000);
    sleep(name.clone(), Duration::from_millis(ms)).await;
    Ok(json!({ "now": now, "random": random.to_string(), "sleep": name }))
}

fn getrandom_fill(buf: &mut [u8]) {
    // std's RandomState is seeded once; use the WASI random import through
    // the hash of a fresh RandomState plus the system time as a portable
    // source that goes through `wasi:random`.
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    buf.copy_from_slice(&h.finish().to_le_bytes());
}

/// `n` steps of about `ms` milliseconds of work each, printing a line per
/// execution to stdout (a side effect outside the journal).
async fn long(n: u64, ms: u64) -> Result<Value, Error> {
    println!("BODY-START");
    let mut acc: u64 = 17;
    for i in 0..n {
        let prev = acc;
        acc = step(format!("work-{i}"), move || async move {
            println!("EXEC work-{i}");
            let until = std::time::Instant::now() + Duration::from_millis(ms);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            Ok(prev.wrapping_mul(6364136223846793005).wrapping_add(i))
        })
        .await?;
    }
    Ok(json!({ "acc": acc.to_string(), "steps": n }))
}

/// The same step name used in a loop.
async fn loop_names(n: u64) -> Result<Value, Error> {
    let mut seen = Vec::new();
    for i in 0..n {
        let v: u64 = step("tick", move || async move { Ok(i * 10) }).await?;
        seen.push(v);
    }
    Ok(json!(seen))
}

/// Runs `child` twice as a child workflow: once to completion, once to an
/// error the parent catches.
async fn parent(child: &str) -> Result<Value, Error> {
    let ok: Value = weft_sdk::run_workflow(child, &json!({"scenario": "basic"})).await?;
    let failed = weft_sdk::run_workflow::<Value>(child, &json!({"scenario": "fail"})).await;
    let e = failed.unwrap_err();
    Ok(json!({"child": ok, "error": [e.name(), e.message()]}))
}

/// Two concurrent steps each fetch `url`; a fetch outside a step is
/// refused; then a durable sleep (a test kills or evicts the host there).
async fn fetch_twice(url: &str, ms: u64) -> Result<Value, Error> {
    use weft_sdk::http::{Request, fetch};
    let get = |name: &'static str| {
        let url = url.to_owned();
        step(name, move || {
            let url = url.clone();
            async move {
                let r = fetch(Request::get(url)).await?;
                Ok(json!({"status": r.status, "body": r.text()?}))
            }
        })
        .retries(0)
        .into_future()
    };
    let (a, b) = join!(get("get-a"), get("get-b"));
    let outside = fetch(Request::get(url)).await.unwrap_err();
    sleep("after-fetch", Duration::from_millis(ms)).await;
    let denied: Result<Value, Error> = step("denied", || async {
        let r = fetch(Request::get("http://example.invalid/")).await?;
        Ok(json!(r.status))
    })
    .await;
    Ok(json!({
        "a": a?, "b": b?,
        "outside": outside.name(),
        "denied": denied.unwrap_err().name(),
    }))
}

/// For the multi-host test: `n` steps that each count themselves at the
/// loopback counter service `url` (returning the count, which the journal
/// keeps), a durable sleep, an event, and a last counted step. The output
/// is the same however often hosts die.
async fn cluster(url: &str, id: &str, n: u64, ms: u64) -> Result<Value, Error> {
    use weft_sdk::http::{Request, fetch};
    let hit = |name: String| {
        let url = format!("{url}/{id}/{name}");
        step(name, move || {
            let url = url.clone();
            async move {
                let r = fetch(Request::get(url)).await?;
                Ok(r.text()?.trim().parse::<u64>().unwrap_or(0))
            }
        })
    };
    let mut sum = 0;
    for i in 0..n {
        let count: u64 = hit(format!("s{i}")).await?;
        sum += i * i + count.min(1);
    }
    sleep("nap", Duration::from_millis(ms)).await;
    let ev = wait_for_event::<Value>("go", "go").await?;
    let last: u64 = hit("after".into()).await?;
    Ok(json!({"steps": n, "sum": sum, "event": ev.payload, "after": last.min(1)}))
}

/// A step that fails its first two attempts, counted by the host's
/// attempt number (which survives a crash in the retry delay).
async fn step_context(ms: u64) -> Result<Value, Error> {
    step_with("flaky", |ctx: StepContext| async move {
        println!("EXEC flaky {}", ctx.attempt);
        if ctx.attempt < 3 {
            return Err(Error::new(format!("attempt {} fails", ctx.attempt)));
        }
        Ok(json!({
            "attempt": ctx.attempt,
            "name": ctx.name,
            "retries": ctx.retries.limit,
            "timeoutMs": ctx.timeout.as_millis() as u64,
        }))
    })
    .retries(4)
    .delay(Duration::from_millis(ms))
    .backoff(Backoff::Constant)
    .timeout(Duration::from_secs(30))
    .await
}

/// Two steps that can be undone, a step that fails for good, a durable
/// sleep (a test kills the run there), and the rollback: undos newest
/// first, each a step, their results returned.
async fn saga(ms: u64) -> Result<Value, Error> {
    let saga = Saga::new();
    let reserve = step("reserve", || async { Ok(json!({"seat": "12A"})) });
    let _: Value = saga
        .run(reserve, |why: Option<Error>, seat: Value| async move {
            println!("EXEC reserve:undo");
            let why = why.map(|e| e.message().to_owned());
            Ok(json!({"released": seat["seat"], "why": why}))
        })
        .await?;
    let charge = step("charge", || async { Ok("c-1".to_owned()) });
    let _: String = saga
        .run(charge, |_, id: String| async move {
            println!("EXEC charge:undo");
            Ok(json!({"refund": format!("r-{id}")}))
        })
        .await?;
    let shipped: Result<Value, Error> =
        step("ship", || async { Err(Error::non_retryable("no stock")) }).await;
    let e = shipped.unwrap_err();
    sleep("before-rollback", Duration::from_millis(ms)).await;
    let undone = saga.rollback_all(Some(&e)).await?;
    Ok(json!({ "undone": undone }))
}

/// Step bodies and undos that borrow the workflow's locals, concurrently,
/// across a sleep (so a replay borrows them again).
async fn borrow(ms: u64) -> Result<Value, Error> {
    let skus: Vec<String> = ["mug", "tee", "cap"].map(String::from).to_vec();
    let (count, longest) = join!(
        step("count", || async { Ok(skus.len()) }).into_future(),
        step("longest", || async {
            Ok(skus.iter().map(String::len).max().unwrap_or(0))
        })
        .into_future(),
    );
    // What a saga's steps and undos borrow lives longer than the saga. A
    // `move` closure (the undo takes `r`) copies references in.
    let all = &skus;
    let saga = Saga::new();
    for sku in all {
        let reserve = step("reserve", move || async move { Ok(format!("r-{sku}")) });
        let _: String = saga
            .run(reserve, move |_, r: String| async move {
                Ok(format!("released {r} of {sku} ({} skus)", all.len()))
            })
            .await?;
    }
    sleep("between", Duration::from_millis(ms)).await;
    let undone = saga.rollback_all(None).await?;
    Ok(json!({"count": count?, "longest": longest?, "undone": undone}))
}

/// Two steps at once under a low `--step-cpu-ms`: one waits on a slow
/// server longer than the limit (waiting is not CPU) and completes on its
/// first attempt; the other spins, and each of its attempts fails alone
/// with `CpuLimitExceeded`.
async fn step_cpu(url: &str) -> Result<Value, Error> {
    let (waited, spun) = join!(
        step("wait-slow", || async {
            let r = weft_sdk::http::fetch(weft_sdk::http::Request::get(url)).await?;
            Ok(r.status)
        })
        .retries(0)
        .into_future(),
        step("spin", || async {
            // Let the other step start first.
            weft_sdk::delay(Duration::from_millis(50)).await;
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
                if x == u64::MAX {
                    break Ok::<u64, Error>(x);
                }
            }
        })
        .retries(1)
        .delay(Duration::from_millis(10))
        .into_future(),
    );
    let spun = spun.unwrap_err();
    Ok(json!({"waited": waited?, "spun": spun.name(), "message": spun.message()}))
}

/// Reads a secret in a step and returns it: weft redacts it everywhere.
async fn secret_use() -> Result<Value, Error> {
    let outside = weft_sdk::secret("API_KEY").unwrap_err();
    let got: String = step("use-secret", || async {
        let key = weft_sdk::secret("API_KEY")?;
        println!("the key is {key}");
        Ok(format!("key={key}"))
    })
    .await?;
    let missing: Result<String, Error> = step("missing", || async { weft_sdk::secret("NOPE") })
        .retries(0)
        .await;
    Ok(json!({"got": got, "outside": outside.name(), "missing": missing.unwrap_err().name()}))
}

async fn memory_bomb() -> Result<Value, Error> {
    let r: Result<u64, Error> = step("bomb", || async {
        let mut hog: Vec<Vec<u8>> = Vec::new();
        loop {
            hog.push(vec![1u8; 16 << 20]);
            if hog.len() > 1_000_000 {
                break;
            }
        }
        Ok(hog.len() as u64)
    })
    .retries(1)
    .delay(Duration::from_millis(10))
    .await;
    let after: u64 = step("after", || async { Ok(1) }).await?;
    Ok(json!({"caught": r.unwrap_err().name(), "after": after}))
}

async fn step_trap() -> Result<Value, Error> {
    let r: Result<u64, Error> = step("panics", || async { panic!("boom in a step") })
        .retries(1)
        .delay(Duration::from_millis(10))
        .await;
    Ok(json!({"caught": r.unwrap_err().name()}))
}

/// Three concurrent steps; one panics on every attempt while the others
/// are in flight. Only its attempts fail.
async fn panic_sibling() -> Result<Value, Error> {
    let slow = |v: &'static str| {
        move || async move {
            weft_sdk::delay(Duration::from_millis(300)).await;
            Ok(v.to_owned())
        }
    };
    let (mug, tea, charge) = join!(
        step("reserve-mug", slow("mug")).into_future(),
        step("reserve-tea", slow("tea")).into_future(),
        step("charge", || async {
            weft_sdk::delay(Duration::from_millis(50)).await;
            if std::hint::black_box(true) {
                panic!("card declined");
            }
            Ok(0u32)
        })
        .retries(1)
        .delay(Duration::from_millis(10))
        .into_future(),
    );
    let e = charge.unwrap_err();
    Ok(json!({"mug": mug?, "tea": tea?, "charge": {"name": e.name(), "message": e.message()}}))
}

/// The wall clock in microseconds (live inside a step body).
fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// `register-step-config` and `step-begin-with`, called directly: the ids
/// of two configs (one registered twice), a step begun with one, then a
/// step begun with the id `n`, which the test leaves unregistered.
fn config_ids(n: u64) -> Result<Value, Error> {
    use weft_sdk::wit::weft::workflow::durable;
    use weft_sdk::wit::weft::workflow::types as w;
    let config = |limit| w::StepConfig {
        retries: w::RetryPolicy {
            limit,
            delay_ms: 10,
            backoff: w::Backoff::Constant,
        },
        timeout_ms: 1000,
    };
    let a = durable::register_step_config(config(1));
    let b = durable::register_step_config(config(2));
    let again = durable::register_step_config(config(1));
    let started = match durable::step_begin_with("with-id", b) {
        w::StepStart::Run(run) => run.started,
        w::StepStart::Cached(_) => false,
    };
    let out = json!({"a": a, "b": b, "again": again, "started": started});
    if n > 0 {
        durable::step_begin_with("unregistered", n as u32);
    }
    Ok(out)
}
