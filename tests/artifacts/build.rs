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
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut consts = String::new();
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
            consts.push_str(&format!(
                "/// The `{name}` component.\npub const {}: &str = {:?};\n",
                name.to_uppercase().replace('-', "_"),
                path.display().to_string()
            ));
        }
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guests.rs");
    std::fs::write(out, consts).unwrap();
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
