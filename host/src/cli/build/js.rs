//! `weft build app.ts`: JavaScript and TypeScript workflows, built by the
//! JavaScript SDK's build script (esbuild, then componentize-js) under
//! Node.js. The script pre-initializes the component with this binary
//! (`weft` as componentize-js's Wizer, see [`crate::cli::wizer`]), so that
//! the same sources build the same component, byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{term, tool_missing, which};

/// The suffixes of JavaScript and TypeScript modules.
pub const EXTENSIONS: [&str; 4] = ["ts", "mts", "js", "mjs"];

/// Where the SDK is: `$WEFT_JS_SDK`, the project's
/// `node_modules/@weft/sdk`, or the `guest-sdk-js` of the weft checkout
/// this binary was built in.
fn find_sdk(module: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_JS_SDK") {
        let dir = PathBuf::from(dir);
        if !dir.join("build.mjs").is_file() {
            bail!(
                "WEFT_JS_SDK is {}, which holds no build.mjs; point it at the weft JavaScript SDK (guest-sdk-js)",
                dir.display()
            );
        }
        return Ok(dir);
    }
    for dir in module.ancestors().skip(1) {
        let sdk = dir.join("node_modules/@weft/sdk");
        if sdk.join("build.mjs").is_file() {
            return Ok(sdk);
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let sdk = dir.join("guest-sdk-js");
            if sdk.join("build.mjs").is_file() {
                return Ok(sdk);
            }
        }
    }
    bail!(
        "the weft JavaScript SDK is not installed; in your project run `npm install <weft checkout>/guest-sdk-js`, or set WEFT_JS_SDK to that directory"
    )
}

pub fn build(module: &Path, output: Option<PathBuf>, class_name: Option<&str>) -> Result<i32> {
    let module = module
        .canonicalize()
        .with_context(|| format!("reading {}", module.display()))?;
    if !which("node") {
        return Err(tool_missing(
            "node",
            "Node.js 20 or newer (Debian: `apt-get install nodejs npm`)",
        ));
    }
    let sdk = find_sdk(&module)?;
    let name = module.file_stem().unwrap().to_string_lossy().into_owned();
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{name}.wasm")));
    let weft = std::env::current_exe().context("finding the weft binary")?;
    term::status(
        "Building",
        &format!("{} with componentize-js", module.display()),
    );
    let mut cmd = Command::new("node");
    cmd.arg(sdk.join("build.mjs"))
        .arg(&module)
        .arg("-o")
        .arg(&output)
        .arg("--wizer")
        .arg(&weft);
    if let Some(c) = class_name {
        cmd.args(["--class", c]);
    }
    let status = cmd
        .stdout(super::super::stdout_to_stderr())
        .status()
        .context("running node")?;
    match status.code() {
        Some(0) => {}
        Some(3) => bail!(
            "the JavaScript SDK's packages are missing; run `npm ci` in {}",
            sdk.display()
        ),
        _ => bail!("building {} failed", module.display()),
    }
    term::status("Built", &output.display().to_string());
    Ok(0)
}
