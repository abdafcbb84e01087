//! Building the Python test guests with `weft build`, once per test run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::build::{build_guest, files_under};
use super::repo_root;

static BUILT: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

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
    files_under(&src, &["__pycache__"], &mut files);
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

/// Like [`py_component`], built with `--isolation shared`: a component
/// that can also run in a shared interpreter.
pub fn py_shared_component(module: &str, class: Option<&str>) -> String {
    let source = repo_root()
        .join("tests/guests-py")
        .join(format!("{module}.py"));
    build_py(&source, class, &["--isolation", "shared"])
}

/// Like [`py_component`] for any Python module (e.g. an example).
pub fn py_component_at(source: &Path, class: Option<&str>) -> String {
    build_py(source, class, &[])
}

fn build_py(source: &Path, class: Option<&str>, args: &[&str]) -> String {
    let module = source.file_stem().unwrap().to_string_lossy();
    let parent = source
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy();
    let key = format!(
        "{parent}-{module}-{}{}",
        class.unwrap_or("default"),
        args.concat()
    );
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    check_installed_sdk();
    let root = repo_root();
    let source = source.to_owned();
    let mut inputs = vec![source.clone(), root.join("wit/workflow.wit")];
    files_under(
        &root.join("guest-sdk-python/src"),
        &["__pycache__"],
        &mut inputs,
    );
    let path = build_guest(&source, class, args, &inputs, "py-guests", &key);
    built.insert(key, path.clone());
    path
}
