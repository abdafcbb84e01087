//! Building the Python test guests with `weft build`, once per test run.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{repo_root, test_cache_dir};

static BUILT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if !p.ends_with("__pycache__") {
                files_under(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// Fails with instructions when the installed SDK is not this checkout's.
fn check_installed_sdk() {
    let out = Command::new("python3")
        .args([
            "-c",
            "import importlib.util as u; print(u.find_spec('weft').submodule_search_locations[0])",
        ])
        .output()
        .expect("python3 runs");
    let installed = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let src = repo_root().join("guest-sdk-python/src");
    let mut files = Vec::new();
    files_under(&src, &mut files);
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "py" || e == "wit"))
    {
        let rel = f.strip_prefix(&src).unwrap();
        let there = installed.parent().unwrap().join(rel);
        let same = std::fs::read(f).ok() == std::fs::read(&there).ok();
        assert!(
            same,
            "the installed weft Python SDK differs from guest-sdk-python/ ({} vs {}); \
             run `pip install ./guest-sdk-python` (scripts/test.sh does)",
            f.display(),
            there.display()
        );
    }
}

/// Builds `tests/guests-py/<module>.py` (for `class`, if given) into
/// `target/py-guests` unless an identical build exists, and precompiles it
/// into the shared cache. Returns the component's path.
pub fn py_component(module: &str, class: Option<&str>) -> String {
    let source = repo_root()
        .join("tests/guests-py")
        .join(format!("{module}.py"));
    py_component_at(&source, class)
}

/// Like [`py_component`] for any Python module (e.g. an example).
pub fn py_component_at(source: &Path, class: Option<&str>) -> String {
    let module = source.file_stem().unwrap().to_string_lossy();
    let parent = source
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    let key = format!("{parent}-{module}-{}", class.unwrap_or("default"));
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    check_installed_sdk();
    let root = repo_root();
    let source = source.to_owned();
    let mut inputs = vec![source.clone(), root.join("wit/workflow.wit")];
    files_under(&root.join("guest-sdk-python/src"), &mut inputs);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    class.hash(&mut h);
    for f in &inputs {
        std::fs::read(f).unwrap().hash(&mut h);
    }
    let dir = root.join("target/py-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{key}-{:016x}.wasm", h.finish()));
    let weft = env!("CARGO_BIN_EXE_weft");
    if !out.exists() {
        let tmp = out.with_extension("tmp.wasm");
        let mut cmd = Command::new(weft);
        cmd.arg("build").arg(&source).arg("-o").arg(&tmp);
        if let Some(c) = class {
            cmd.args(["--class", c]);
        }
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
    let path = out.display().to_string();
    built.insert(key, path.clone());
    path
}
