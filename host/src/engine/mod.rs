//! The wasmtime engine and the component store.
//!
//! Components are stored in the data dir by content digest
//! (`components/<hex>.wasm`), so an instance can always be resumed on the
//! exact code it started with. Compiled code is cached next to them
//! (`cache/<hex>-<engine>.cwasm`); loading a cached component takes
//! milliseconds instead of a compilation. Each component is linked once into
//! an `InstancePre`, shared by all its instances.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::durable::HostState;

mod guest;
mod residency;

pub use guest::{GuestPre, LoadedComponent};
use residency::{Residency, TRIM_CHECK};
pub use residency::{Resident, trim_heap};

/// How often the epoch ticks; guests yield to the host at each tick so that
/// timeouts and shutdown can interrupt long computations.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// An engine, its pool of instance slots and its linker.
struct Pool {
    engine: Engine,
    linker: Linker<HostState>,
    /// Names this engine's compiled code in the cache.
    fingerprint: String,
}

/// Engines, linkers and the on-disk component store.
///
/// Components run on one of two pools. Small ones (Rust guests) run on a
/// pool whose slots keep the pages an instance wrote (up to
/// `KEEP_RESIDENT`) between instances, which spares the next instance's
/// page faults. Large ones (Python guests: an 18 MB component with a
/// 14.5 MiB memory image) run on a pool that keeps nothing: their slots
/// would each keep ~0.5 MiB of the image mapped and some of it written,
/// which after a burst of 1000 Python instances is ~0.5 GiB of RSS that
/// stays with the process (bench/README.md, W7).
pub struct Components {
    small: Arc<Pool>,
    /// Made when the first large component is loaded.
    large: Mutex<Option<Arc<Pool>>>,
    dir: PathBuf,
    cache_dir: PathBuf,
    loaded: Mutex<HashMap<String, Arc<LoadedComponent>>>,
    /// Held while a component is compiled or read from the cache, so that
    /// instances starting together load it once.
    loading: Mutex<()>,
    residency: Arc<Residency>,
}

/// Component files at least this big run on the pool that keeps nothing
/// resident. A Rust workflow is ~0.1-2 MB, a Python one ~18 MB.
const LARGE_COMPONENT: u64 = 8 << 20;

/// Whether an error says the engine's pool is full (instance slots,
/// memories, tables, stacks): the host is out of room for now, which is no
/// fault of the workflow, so its instance is tried again later.
pub fn out_of_slots(e: &wasmtime::Error) -> bool {
    e.is::<wasmtime::PoolConcurrencyLimitError>()
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// Bytes of a pooled memory slot kept resident between instances, on the
/// pool for small components: enough for what a Rust workflow writes (~70
/// KiB). Large components keep nothing (see `Components`).
const KEEP_RESIDENT: usize = 128 << 10;
/// Bytes of a pooled table slot kept resident between instances.
const KEEP_TABLE_RESIDENT: usize = 16 << 10;

/// Component instances the engine's pool holds at once. A slot costs
/// address space, not memory, until an instance uses it: the pool reserves
/// ~16 TiB of the process's 128 TiB (where that fails, `new_engine` falls
/// back to allocating on demand). 2048 rather than 1000: when 2000 evicted
/// sleepers wake within ~120 ms (W3), all of them can be replayed ahead of
/// their wake instead of half of them waiting for a slot and replaying late
/// (W3 p99 1-6 ms against 19-51 ms, 5 interleaved pairs; 4096 was no
/// better).
const POOL_INSTANCES: u32 = 2048;

/// Instances a server keeps in memory at once (running or waiting briefly):
/// the pool, less room for upgrade checks and replays outside the scheduler.
pub const MAX_RESIDENT: usize = POOL_INSTANCES as usize - 48;

/// An engine whose pool keeps up to `KEEP_RESIDENT` of each slot between
/// instances (`keep`), or nothing.
fn new_engine(keep: bool) -> Result<Engine> {
    let mut config = Config::new();
    config.wasm_component_model_async(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    // Core instances are only counted, not allocated: a Python component
    // has 14 of them, so at 10 per slot ~1460 resident Python instances
    // used them all up and the next one failed to instantiate.
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(64 * POOL_INSTANCES)
        .total_memories(2 * POOL_INSTANCES)
        .total_tables(4 * POOL_INSTANCES)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(1 << 30);
    // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), a freed slot is reset
    // by restoring just the pages its instance wrote, up to KEEP_RESIDENT of
    // them, which stay resident, instead of being `madvise`d away: every
    // `madvise`, and every copy-on-write fault in the slot's next instance,
    // costs a TLB shoot-down on the other cores, and those dominated short
    // instances. Without the scan, keeping memory resident means a `memset`
    // of the whole kept size per instance, which is slower: leave it off.
    let mut configs = Vec::new();
    if keep {
        let mut scanning = pool.clone();
        scanning
            .pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_TABLE_RESIDENT);
        configs.push(scanning);
    }
    configs.push(pool);
    for pool in configs {
        let mut pooled = config.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&pooled) {
            Ok(engine) => return Ok(engine),
            Err(e) => tracing::debug!("engine configuration refused: {e}"),
        }
    }
    tracing::warn!("the pooling allocator is unavailable; allocating instances on demand");
    Ok(Engine::new(&config)?)
}

impl Pool {
    fn new(keep: bool) -> Result<Pool> {
        let engine = new_engine(keep)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        crate::durable::add_to_linker(&mut linker)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let fingerprint = format!("{:016x}", h.finish());
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Pool {
            engine,
            linker,
            fingerprint,
        })
    }
}

/// Where compiled components are kept: one cache per user, shared by all
/// of the user's data dirs, as wasmtime's own cache is (`WEFT_CACHE_DIR`,
/// else `$XDG_CACHE_HOME/weft/compiled`, else `~/.cache/weft/compiled`;
/// `<data dir>/cache` when there is no home). Entries are named by the
/// component's digest and the engine's fingerprint (wasmtime's
/// compatibility hash and weft's version), so a weft or an engine setting
/// that differs compiles its own.
fn cache_dir(data_dir: &Path) -> PathBuf {
    // Unit tests keep their compiled code in their own data dirs, not in
    // the user's cache.
    if cfg!(test) {
        return data_dir.join("cache");
    }
    let nonempty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = nonempty("WEFT_CACHE_DIR") {
        return dir;
    }
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("weft").join("compiled"))
        .unwrap_or_else(|| data_dir.join("cache"))
}

/// Compiled code kept in the cache, past which the least recently used
/// entries are removed (down to three quarters of it).
const CACHE_LIMIT: u64 = 4 << 30;

/// Removes the least recently used compiled components (by modification
/// time, which a load refreshes) while the cache holds over [`CACHE_LIMIT`].
fn prune_cache(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    if total <= CACHE_LIMIT {
        return;
    }
    files.sort();
    for (_, len, path) in files {
        if total <= CACHE_LIMIT / 4 * 3 {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

impl Components {
    /// Creates the engine and opens the component store under `data_dir`.
    pub fn new(data_dir: &Path) -> Result<Components> {
        let small = Arc::new(Pool::new(true)?);
        let dir = data_dir.join("components");
        let cache_dir = cache_dir(data_dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating the compile cache {}", cache_dir.display()))?;
        let residency = Arc::new(Residency::default());
        let watched = Arc::downgrade(&residency);
        std::thread::Builder::new()
            .name("weft-trim".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TRIM_CHECK);
                    let Some(r) = watched.upgrade() else { break };
                    r.trim_after_burst();
                }
            })?;
        Ok(Components {
            small,
            residency,
            large: Mutex::new(None),
            dir,
            cache_dir,
            loaded: Mutex::new(HashMap::new()),
            loading: Mutex::new(()),
        })
    }

    /// Counts an instance in memory until the guard is dropped.
    pub fn resident(&self) -> Resident {
        self.residency.enter()
    }

    /// Stores a component's bytes under their digest and returns the digest.
    /// Nothing is compiled yet.
    pub fn store_bytes(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest_of(bytes);
        let path = self.dir.join(format!("{}.wasm", hex_of(&digest)));
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Whether the component is stored in the data dir.
    pub fn has(&self, digest: &str) -> bool {
        self.loaded.lock().unwrap().contains_key(digest)
            || self.dir.join(format!("{}.wasm", hex_of(digest))).exists()
    }

    /// Deletes stored components (and their compiled code) whose digest is
    /// not in `keep`. Returns how many were removed.
    pub fn collect_garbage(&self, keep: &std::collections::HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(hex) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "wasm")
                && !keep.contains(&format!("sha256:{hex}"))
            {
                std::fs::remove_file(&path)?;
                // A cache shared with other data dirs (the user's, or
                // WEFT_CACHE_DIR) is left alone.
                let own_cache = self.cache_dir.parent() == self.dir.parent();
                if let Some(rd) = own_cache
                    .then(|| std::fs::read_dir(&self.cache_dir).ok())
                    .flatten()
                {
                    for c in rd.flatten() {
                        if c.file_name().to_string_lossy().starts_with(hex) {
                            let _ = std::fs::remove_file(c.path());
                        }
                    }
                }
                self.loaded.lock().unwrap().remove(&format!("sha256:{hex}"));
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Loads (compiling or taking from cache) and links a stored component.
    pub fn load(&self, digest: &str) -> Result<Arc<LoadedComponent>> {
        if let Some(c) = self.loaded.lock().unwrap().get(digest) {
            return Ok(c.clone());
        }
        let _loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // Loaded by whoever held the lock before?
        if let Some(c) = self.loaded.lock().unwrap().get(digest) {
            return Ok(c.clone());
        }
        let hex = hex_of(digest);
        let path = self.dir.join(format!("{hex}.wasm"));
        let size = std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "component {digest} is not in the data dir ({})",
                    path.display()
                )
            })?
            .len();
        let pool = self.pool(size >= LARGE_COMPONENT)?;
        let cwasm = self
            .cache_dir
            .join(format!("{hex}-{}.cwasm", pool.fingerprint));
        let mut component = None;
        if cwasm.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same fingerprint, into the user's own cache
            // (or the data dir, or WEFT_CACHE_DIR, which must be as private).
            match unsafe { Component::deserialize_file(&pool.engine, &cwasm) } {
                Ok(c) => {
                    // Recently used: kept when the cache is pruned.
                    if let Ok(f) = std::fs::File::options().write(true).open(&cwasm) {
                        let _ = f.set_modified(std::time::SystemTime::now());
                    }
                    component = Some(c)
                }
                Err(e) => {
                    tracing::warn!("ignoring stale compiled component {}: {e}", cwasm.display())
                }
            }
        }
        let component = match component {
            Some(c) => c,
            None => {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let c = compile(&pool.engine, &bytes)?;
                write_atomically(&cwasm, &c.serialize()?)?;
                prune_cache(&self.cache_dir);
                // Run from the file, as every later start does: the
                // compiler's heap is freed and the code is mapped the same
                // way each time.
                drop(c);
                // SAFETY: just written by `serialize` of this engine.
                unsafe { Component::deserialize_file(&pool.engine, &cwasm) }?
            }
        };
        let pre = pool
            .linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow::anyhow!("{e:#}"))
            .context("the component imports something weft does not provide")?;
        let pre = GuestPre::link(&component, pre)?;
        let loaded = Arc::new(LoadedComponent {
            digest: digest.to_owned(),
            pre,
        });
        self.loaded
            .lock()
            .unwrap()
            .insert(digest.to_owned(), loaded.clone());
        Ok(loaded)
    }
}

impl Components {
    /// The pool for large components (made on first use) or the other one.
    fn pool(&self, large: bool) -> Result<Arc<Pool>> {
        if !large {
            return Ok(self.small.clone());
        }
        let mut slot = self.large.lock().unwrap();
        Ok(match &*slot {
            Some(p) => p.clone(),
            None => slot.insert(Arc::new(Pool::new(false)?)).clone(),
        })
    }
}

/// Writes a file under a temporary name of its own, then renames it, so
/// that readers never see a partial file and writers racing to write the
/// same file (other processes sharing a `WEFT_CACHE_DIR`) do not trip on
/// each other's temporary file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}-{:x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        bail!("not a WebAssembly file (no `\\0asm` header)");
    }
    // Byte 4..8: version and layer; layer 1 is a component, 0 a core module.
    if bytes[6] == 0 && bytes[7] == 0 {
        bail!(
            "this is a core WebAssembly module, not a component; build it for `wasm32-wasip2` \
             (or wrap it with `wasm-tools component new`)"
        );
    }
    Component::new(engine, bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .context("the file is not a valid WebAssembly component")
}

#[cfg(test)]
mod tests {
    use super::residency::{BURST, should_trim};
    use super::*;
    use std::sync::atomic::Ordering;
    use weft_test_artifacts::with_custom_section;

    /// The heap is trimmed once a burst of at least `BURST` instances has
    /// halved, and not for a few instances or while a burst holds.
    #[test]
    fn a_burst_that_ends_is_trimmed() {
        assert!(should_trim(0, BURST));
        assert!(should_trim(500, 1000));
        assert!(!should_trim(501, 1000), "most of the burst is still there");
        assert!(!should_trim(0, BURST - 1), "too few to be a burst");
        let dir = tempfile::tempdir().unwrap();
        let c = Components::new(dir.path()).unwrap();
        let guards: Vec<_> = (0..BURST).map(|_| c.resident()).collect();
        assert_eq!(c.residency.peak.load(Ordering::Relaxed), BURST);
        drop(guards);
        assert_eq!(c.residency.live.load(Ordering::Relaxed), 0);
        c.residency.trim_after_burst();
        assert_eq!(
            c.residency.peak.load(Ordering::Relaxed),
            0,
            "peak reset by the trim"
        );
    }

    /// A component of `LARGE_COMPONENT` bytes or more runs on the pool that
    /// keeps nothing resident, made once for all of them; a smaller one on
    /// the other pool.
    #[test]
    fn large_components_run_on_a_pool_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let c = Components::new(dir.path()).unwrap();
        let small = std::fs::read(weft_test_artifacts::SCENARIOS).unwrap();
        let large = with_custom_section(&small, "pad", LARGE_COMPONENT as usize);
        let other = with_custom_section(&small, "pad2", LARGE_COMPONENT as usize);
        let load = |bytes: &[u8]| c.load(&c.store_bytes(bytes).unwrap()).unwrap();
        let (s, l, o) = (load(&small), load(&large), load(&other));
        assert!(c.large.lock().unwrap().is_some());
        assert!(Engine::same(s.engine(), &c.small.engine));
        assert!(!Engine::same(l.engine(), &c.small.engine));
        assert!(
            Engine::same(l.engine(), o.engine()),
            "one pool for all large components"
        );
    }

    /// A full pool's error, as wasmtime returns it from instantiation, is
    /// recognised; another error is not.
    #[test]
    fn a_full_pool_is_recognised() {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(1)
            .total_memories(1)
            .total_tables(1)
            .max_memory_size(1 << 16);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        let _first = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let full = wasmtime::Instance::new(&mut store, &module, &[]).unwrap_err();
        assert!(out_of_slots(&full), "{full:#}");
        assert!(!out_of_slots(&wasmtime::Error::msg("a trap")));
    }
}
