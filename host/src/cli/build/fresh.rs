//! Whether a Python build's inputs have changed since it made its
//! component, as cargo keeps fingerprints of what it built.
//!
//! The fingerprint is a SHA-256 of: this weft's version, the generated
//! entry module, every file under the module's directory (except hidden
//! ones, `__pycache__` and `.wasm` files), the installed Python packages
//! with their versions, the weft SDK's own files and componentize-py's
//! version. It is kept beside the component in `.<file>.weft-build`, with
//! the component's digest, so that a component changed by hand is rebuilt.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else if p.extension().is_none_or(|e| e != "wasm") {
            out.push(p);
        }
    }
}

fn hash_files(h: &mut Sha256, files: &[PathBuf], relative_to: &Path) {
    for f in files {
        let rel = f.strip_prefix(relative_to).unwrap_or(f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        match std::fs::read(f) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(_) => h.update(b"unreadable"),
        }
    }
}

/// The fingerprint of building `module` with `entry` into `output`.
pub fn python_inputs(module: &Path, entry: &str, python: &str, output: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(entry.as_bytes());
    let dir = module.parent().context("the module has no directory")?;
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let output = output.canonicalize().unwrap_or_else(|_| output.to_owned());
    files.retain(|f| *f != output);
    hash_files(&mut h, &files, dir);
    // The packages componentize-py may bundle, and where the SDK is.
    let env = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m, importlib.util as u\n\
             print(u.find_spec('weft').submodule_search_locations[0])\n\
             print(sorted(f'{d.metadata[\"Name\"]}=={d.version}' for d in m.distributions()))",
        ])
        .output()
        .context("asking python3 for its packages")?;
    let env = String::from_utf8_lossy(&env.stdout).into_owned();
    h.update(env.as_bytes());
    if let Some(sdk) = env.lines().next() {
        let mut files = Vec::new();
        files_under(Path::new(sdk), &mut files);
        hash_files(&mut h, &files, Path::new(sdk));
    }
    let tool = Command::new("componentize-py").arg("--version").output();
    if let Ok(out) = tool {
        h.update(&out.stdout);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn record_path(output: &Path) -> PathBuf {
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    output.with_file_name(format!(".{name}.weft-build"))
}

fn digest_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(format!("{:x}", Sha256::digest(&bytes)))
}

/// Whether `output` is what a build with `fingerprint` made.
pub fn is_fresh(output: &Path, fingerprint: &str) -> bool {
    let Ok(record) = std::fs::read_to_string(record_path(output)) else {
        return false;
    };
    let mut lines = record.lines();
    lines.next() == Some(fingerprint)
        && lines
            .next()
            .is_some_and(|d| Some(d) == digest_of(output).as_deref())
}

/// Records that `output` was built from `fingerprint`.
pub fn record(output: &Path, fingerprint: &str) -> Result<()> {
    let digest = digest_of(output).context("reading the built component")?;
    let path = record_path(output);
    std::fs::write(&path, format!("{fingerprint}\n{digest}\n"))
        .with_context(|| format!("writing {}", path.display()))
}
