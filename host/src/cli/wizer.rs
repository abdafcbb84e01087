//! A deterministic Wizer for componentize-js.
//!
//! componentize-js pre-initializes its JavaScript engine with the JS module
//! loaded (Wizer: run the init function, snapshot memory into a new
//! module). The stock `wizer` gives the init function the machine's
//! randomness and clocks, which SpiderMonkey reads (hash seeds, the time),
//! so no two builds of the same sources are alike. `weft build` passes this
//! binary as componentize-js's `wizerBin`, with `WEFT_WIZER=1` set: it
//! accepts the Wizer options componentize-js uses and runs the init
//! function with fixed randomness and clocks, so that a build is a function
//! of its inputs. At run time the guest's randomness and clocks are the
//! instance's own (the snapshot's seeds are not used for anything a
//! workflow sees: `Math.random` and `crypto` reseed from WASI).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use wasmtime::error::Context;
use wasmtime::{Config, Engine, Linker, Module, Store};
use wasmtime::{Result, bail};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{Deterministic, FsPerms, HostMonotonicClock, HostWallClock, WasiCtxBuilder};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

/// Whether this process was started as componentize-js's Wizer.
pub fn requested() -> bool {
    std::env::var_os("WEFT_WIZER").is_some_and(|v| v == "1")
}

/// The options of the `wizer` command line that componentize-js passes.
#[derive(Default, Debug)]
struct Options {
    init_func: Option<String>,
    dirs: Vec<(PathBuf, String)>,
    inherit_env: bool,
    output: Option<PathBuf>,
    input: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with('-') => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "--allow-wasi" => {}
            "--wasm-bulk-memory" | "--keep-init-func" | "--inherit-stdio" => {
                value()?;
            }
            "-f" | "--init-func" => o.init_func = Some(value()?),
            "--inherit-env" => o.inherit_env = value()? == "true",
            "--dir" => {
                let d = value()?;
                o.dirs.push((PathBuf::from(&d), d));
            }
            "--mapdir" => {
                let m = value()?;
                let (guest, host) = m
                    .split_once("::")
                    .with_context(|| format!("--mapdir {m}: expected GUEST::HOST"))?;
                o.dirs.push((PathBuf::from(host), guest.to_owned()));
            }
            "-o" | "--output" => o.output = Some(PathBuf::from(value()?)),
            f if f.starts_with('-') => bail!("unsupported wizer option {f}"),
            _ => o.input = Some(PathBuf::from(a)),
        }
    }
    Ok(o)
}

/// A wall clock stopped at a fixed time.
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }
    fn now(&self) -> Duration {
        // 2025-01-01T00:00:00Z.
        Duration::from_secs(1_735_689_600)
    }
}

/// A monotonic clock that advances one microsecond per reading.
struct SteppingClock(std::sync::atomic::AtomicU64);

impl HostMonotonicClock for SteppingClock {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        self.0
            .fetch_add(1_000, std::sync::atomic::Ordering::Relaxed)
    }
}

struct Snapshot<'a> {
    store: &'a mut Store<WasiP1Ctx>,
    instance: wasmtime::Instance,
}

impl InstanceState for Snapshot<'_> {
    async fn global_get(&mut self, name: &str, _: ValType) -> SnapshotVal {
        let global = self.instance.get_global(&mut *self.store, name).unwrap();
        match global.get(&mut *self.store) {
            wasmtime::Val::I32(x) => SnapshotVal::I32(x),
            wasmtime::Val::I64(x) => SnapshotVal::I64(x),
            wasmtime::Val::F32(x) => SnapshotVal::F32(x),
            wasmtime::Val::F64(x) => SnapshotVal::F64(x),
            wasmtime::Val::V128(x) => SnapshotVal::V128(x.as_u128()),
            _ => panic!("unsupported global value type"),
        }
    }

    async fn memory_contents(&mut self, name: &str, contents: impl FnOnce(&[u8]) + Send) {
        let memory = self.instance.get_memory(&mut *self.store, name).unwrap();
        contents(memory.data(&*self.store))
    }
}

/// Runs as `wizer` with the command line `args` (without the program name).
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("weft (as wizer): {e:#}");
            1
        }
    }
}

fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let input = o.input.context("no input module")?;
    let output = o.output.context("no output (-o)")?;
    let wasm = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin)?;

    let mut wasi = WasiCtxBuilder::new();
    wasi.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(stdin))
        .inherit_stdout()
        .inherit_stderr()
        .wall_clock(FixedClock)
        .monotonic_clock(SteppingClock(0.into()))
        .secure_random(Deterministic::new((0..=255).collect()))
        .insecure_random(Deterministic::new((0..=255).rev().collect()))
        .insecure_random_seed(0);
    if o.inherit_env {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        env.sort();
        wasi.envs(&env);
    }
    for (host, guest) in &o.dirs {
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
            .with_context(|| format!("opening {}", host.display()))?;
    }

    let mut wizer = Wizer::new();
    if let Some(f) = &o.init_func {
        wizer.init_func(f.clone());
    }
    let (cx, instrumented) = wizer.instrument(&wasm)?;

    let mut config = Config::new();
    config.wasm_bulk_memory(true);
    let engine = Engine::new(&config)?;
    let module = Module::new(&engine, &instrumented).context("compiling the module")?;
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |cx| cx)?;
    // The engine imports WASI 0.2 functions too (lowered into the core
    // module); initialization must not call them.
    linker.define_unknown_imports_as_traps(&module)?;
    let mut store = Store::new(&engine, wasi.build_p1());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = rt.block_on(async {
        let instance = linker.instantiate_async(&mut store, &module).await?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
            init.call_async(&mut store, ())
                .await
                .context("calling _initialize")?;
        }
        let init = instance
            .get_typed_func::<(), ()>(&mut store, wizer.get_init_func())
            .with_context(|| format!("the module exports no `{}`", wizer.get_init_func()))?;
        init.call_async(&mut store, ())
            .await
            .with_context(|| format!("the `{}` function trapped", wizer.get_init_func()))?;
        let mut state = Snapshot {
            store: &mut store,
            instance,
        };
        wizer.snapshot(&cx, &mut state).await
    })?;
    std::fs::write(&output, snapshot).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}
