//! Opening a data dir for executing, and deploying a component into it:
//! shared by `weft run`, `resume`, `compile` and `serve`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{ExecOptions, term};
use crate::journal::JournalError;
use crate::runner::Runtime;

/// Opens the data dir for executing, with a clear message when another
/// process holds it.
pub async fn open_runtime(data_dir: &Path, exec: &ExecOptions) -> Result<Arc<Runtime>> {
    let policy = exec.policy()?;
    if let Some(url) = exec.store.as_deref().filter(|u| !u.is_empty()) {
        let lease = exec.lease.unwrap_or(crate::defaults::LEASE);
        if lease < std::time::Duration::from_millis(300) {
            bail!("--lease {lease:?} is too short to renew; use 300ms or more (10s by default)");
        }
        let rt = Runtime::connect(data_dir, url, exec.evict_after, lease).await?;
        *rt.default_policy.lock().unwrap() = Arc::new(policy);
        return Ok(rt);
    }
    // A client command (send-event, status) may hold the journal for a
    // moment; wait for it rather than fail.
    let mut tries = 0;
    let opened = loop {
        match Runtime::open(data_dir, exec.evict_after) {
            Err(e)
                if matches!(e.downcast_ref::<JournalError>(), Some(JournalError::InUse))
                    && tries < 20 =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            other => break other,
        }
    };
    match opened {
        Ok(rt) => {
            *rt.default_policy.lock().unwrap() = Arc::new(policy);
            Ok(rt)
        }
        Err(e) if matches!(e.downcast_ref::<JournalError>(), Some(JournalError::InUse)) => bail!(
            "the data dir {} is in use by another weft process; use another --data-dir, \
             or talk to that process with `weft send-event`, `weft status` and `weft list`",
            data_dir.display()
        ),
        Err(e) => Err(e),
    }
}

/// Stores a component in the data dir, compiles (or loads from the cache)
/// and links it, and says so on stderr. Returns its digest.
pub async fn store_and_load(rt: &Runtime, path: &Path, bytes: &[u8], verb: &str) -> Result<String> {
    let digest = rt.store_component(bytes).await?;
    let started = Instant::now();
    rt.components
        .load(&digest)
        .with_context(|| format!("loading {}", path.display()))?;
    term::status(
        verb,
        &format!(
            "{} ({}) in {}",
            path.display(),
            &digest[..19],
            term::human_ms(started.elapsed().as_millis() as u64)
        ),
    );
    Ok(digest)
}
