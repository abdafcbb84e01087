//! Builds every test guest (and the examples the tests run) from source for
//! wasm32-wasip2, once per build, into `target/guests`, and generates one
//! path constant per component. No `.wasm` file is checked in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (guest workspace manifest, components it produces)
const GUESTS: &[(&str, &[&str])] = &[
    (
        "tests/guests/Cargo.toml",
        &[
            "scenarios",
            "scenarios_v2",
            "changed",
            "command",
            "bad_import",
            "wasi_http",
        ],
    ),
    ("examples/hello-rust/Cargo.toml", &["hello"]),
    ("examples/mixed/primes/Cargo.toml", &["primes"]),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().parent().unwrap().to_owned();
    let target_dir = root.join("target").join("guests");
    for dir in [
        "wit",
        "guest-sdk-rust/src",
        "guest-sdk-rust/Cargo.toml",
        "tests/guests",
        "examples/hello-rust/src",
        "examples/hello-rust/Cargo.toml",
        "examples/mixed/primes/src",
        "examples/mixed/primes/Cargo.toml",
        "tests/e2e",
        "host/src",
        "bench/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut consts = String::new();
    let users = sources_using_guests(&root);
    for (manifest, names) in GUESTS {
        build(&cargo, &root.join(manifest), &target_dir);
        for name in *names {
            let path = target_dir
                .join("wasm32-wasip2")
                .join("release")
                .join(format!("{name}.wasm"));
            assert!(
                path.exists(),
                "guest {name} was not produced at {}",
                path.display()
            );
            let constant = name.to_uppercase().replace('-', "_");
            assert!(
                used(&users, &constant),
                "the test guest `{name}` is used by no test: no `{constant}` in tests/e2e, host/src or bench/src; \
                 use it or remove it from {}",
                manifest
            );
            consts.push_str(&format!(
                "/// The `{name}` component.\npub const {constant}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
}

/// The text of every Rust file that may use a guest constant.
fn sources_using_guests(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = Vec::new();
    for dir in ["tests/e2e", "host/src", "bench/src"] {
        walk(&root.join(dir), &mut out);
    }
    out
}

/// Whether `constant` stands as a whole word in one of the sources.
fn used(sources: &[String], constant: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    sources.iter().any(|s| {
        s.match_indices(constant).any(|(i, _)| {
            let before = s[..i].chars().next_back();
            let after = s[i + constant.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
    })
}

fn build(cargo: &str, manifest: &Path, target_dir: &Path) {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--manifest-path",
    ])
    .arg(manifest)
    .env("CARGO_TARGET_DIR", target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {cargo}: {e}"));
    assert!(
        status.success(),
        "building the test guests in {} failed (is the target installed? `rustup target add wasm32-wasip2`)",
        manifest.display()
    );
}
