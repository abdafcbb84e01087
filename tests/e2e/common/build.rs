//! Building guests with `weft build` for the tests (Python and JavaScript),
//! once per change of their inputs, and precompiling them into the shared
//! cache.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{repo_root, test_cache_dir};

/// Every file under `dir`, sorted, except directories named in `skip`.
pub fn files_under(dir: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if !skip.iter().any(|s| p.ends_with(s)) {
                files_under(&p, skip, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// Builds `source` (for `class`, if given) into `target/<dir>/<key>-<hash
/// of inputs>.wasm` unless that file exists, and compiles it into the
/// shared cache. Returns the component's path.
pub fn build_guest(
    source: &Path,
    class: Option<&str>,
    args: &[&str],
    inputs: &[PathBuf],
    dir: &str,
    key: &str,
) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    class.hash(&mut h);
    args.hash(&mut h);
    for f in inputs {
        std::fs::read(f).unwrap().hash(&mut h);
    }
    let dir = repo_root().join("target").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{key}-{:016x}.wasm", h.finish()));
    let weft = env!("CARGO_BIN_EXE_weft");
    if !out.exists() {
        let tmp = out.with_extension("tmp.wasm");
        let mut cmd = Command::new(weft);
        cmd.arg("build").arg(source).arg("-o").arg(&tmp);
        if let Some(c) = class {
            cmd.args(["--class", c]);
        }
        cmd.args(args);
        let o = cmd.output().unwrap();
        assert!(
            o.status.success(),
            "weft build {} failed:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::rename(&tmp, &out).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let o = Command::new(weft)
        .arg("compile")
        .arg(&out)
        .env("WEFT_DATA_DIR", data.path())
        .env("WEFT_CACHE_DIR", test_cache_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "weft compile failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.display().to_string()
}
