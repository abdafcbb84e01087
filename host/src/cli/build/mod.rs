//! `weft build`: turn a Python module, a JavaScript or TypeScript module, a
//! project holding one, or a Rust crate into a workflow component.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::term;

mod fresh;
mod js;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// A Python module (`app.py`), a JavaScript or TypeScript module
    /// (`app.js`, `app.ts`), a directory holding one (`app`, `main`,
    /// `workflow` or `index` with either suffix, or under `src/`), or a Rust
    /// crate directory (`Cargo.toml`).
    pub source: PathBuf,
    /// Where to write the component (default: `<name>.wasm` here).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The workflow class, when the module defines several.
    #[arg(long = "class")]
    pub class_name: Option<String>,
    /// `shared`: a Python workflow that can also be deployed
    /// `isolation = "shared"` (it then also exports `run-shared`).
    #[arg(long, value_enum, default_value = "instance")]
    pub isolation: crate::durable::policy::Isolation,
}

pub fn build(a: BuildArgs) -> Result<i32> {
    let source = &a.source;
    if !source.exists() {
        bail!("{} does not exist", source.display());
    }
    let shared = a.isolation == crate::durable::policy::Isolation::Shared;
    if source.is_dir() && source.join("Cargo.toml").exists() {
        if shared {
            bail!(
                "--isolation shared is for Python workflows; a Rust workflow starts in ~40 µs and needs no shared instance"
            );
        }
        return build_rust(source, a.output);
    }
    let module = if source.is_dir() {
        module_in(source)?
    } else {
        source.clone()
    };
    let is_py = module.extension().is_some_and(|e| e == "py");
    if shared && !is_py {
        bail!(
            "--isolation shared is for Python workflows; {} is not one",
            module.display()
        );
    }
    match module.extension().and_then(|e| e.to_str()) {
        Some("py") => build_python(&module, a.output, a.class_name.as_deref(), shared),
        Some(ext) if js::EXTENSIONS.contains(&ext) => {
            js::build(&module, a.output, a.class_name.as_deref())
        }
        _ => bail!(
            "{} is neither a Python module (.py), a JavaScript or TypeScript module ({}) nor a directory holding one or Cargo.toml",
            source.display(),
            js::EXTENSIONS.map(|e| format!(".{e}")).join(", ")
        ),
    }
}

/// The workflow module of a project directory.
fn module_in(dir: &Path) -> Result<PathBuf> {
    let mut names = vec!["app.py".to_owned(), "main.py".into(), "workflow.py".into()];
    for stem in [
        "app",
        "main",
        "workflow",
        "index",
        "src/index",
        "src/app",
        "src/workflow",
    ] {
        for ext in js::EXTENSIONS {
            names.push(format!("{stem}.{ext}"));
        }
    }
    names
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists())
        .with_context(|| {
            format!(
                "{} holds no Cargo.toml and no workflow module (app.py, main.py, workflow.py, or app, main, workflow or index .ts/.js); name the module file",
                dir.display()
            )
        })
}

pub(super) fn tool_missing(tool: &str, install: &str) -> anyhow::Error {
    anyhow::anyhow!("`{tool}` is not installed or not on PATH; install it with `{install}`")
}

/// Names of `WorkflowEntrypoint` subclasses defined at the top of a module.
fn workflow_classes(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("class "))
        .filter(|l| l.contains("WorkflowEntrypoint"))
        .filter_map(|l| l.split(['(', ':']).next())
        .map(|n| n.trim().to_owned())
        .collect()
}

fn build_python(
    module: &Path,
    output: Option<PathBuf>,
    class_name: Option<&str>,
    shared: bool,
) -> Result<i32> {
    let module = module
        .canonicalize()
        .with_context(|| format!("reading {}", module.display()))?;
    let text = std::fs::read_to_string(&module)?;
    let name = module.file_stem().unwrap().to_string_lossy().into_owned();
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        bail!(
            "`{name}` is not a valid Python module name; rename {}",
            module.display()
        );
    }
    let classes = workflow_classes(&text);
    match (class_name, classes.len()) {
        (None, 0) => bail!(
            "{} defines no `WorkflowEntrypoint` subclass",
            module.display()
        ),
        (None, n) if n > 1 => bail!(
            "{} defines several workflows ({}); choose one with --class",
            module.display(),
            classes.join(", ")
        ),
        (Some(c), _) if !classes.iter().any(|k| k == c) => bail!(
            "{} defines no `WorkflowEntrypoint` subclass named {c} (found: {})",
            module.display(),
            classes.join(", ")
        ),
        _ => {}
    }
    let python = if which("python3") {
        "python3"
    } else {
        "python"
    };
    let sdk = Command::new(python)
        .args([
            "-c",
            "import importlib.util as u; print(u.find_spec('weft') is not None)",
        ])
        .output()
        .map_err(|_| tool_missing("python3", "your system's package manager"))?;
    if String::from_utf8_lossy(&sdk.stdout).trim() != "True" {
        bail!(
            "the weft Python SDK is not installed; install it with `pip install ./guest-sdk-python` (from a weft checkout)"
        );
    }
    if !which("componentize-py") {
        return Err(tool_missing(
            "componentize-py",
            "pip install componentize-py==0.25.1",
        ));
    }
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{name}.wasm")));
    let class_arg = match class_name {
        Some(c) => format!("{c:?}"),
        None => "None".into(),
    };
    let world = if shared {
        "weft:workflow/python-workflow-shared"
    } else {
        "weft:workflow/python-workflow"
    };
    let entry = format!(
        "# Generated by `weft build`: exports the workflow of module `{name}` ({world}).\n\
         import {name}\n\
         from weft._entry import make_world\n\n\
         WitWorld = make_world({name:?}, {class_arg})\n"
    );
    // componentize-py does not build byte for byte the same component
    // twice; a build whose inputs have not changed keeps the component it
    // made, so that its digest (the workflow's version) stays the same.
    let fingerprint = fresh::python_inputs(&module, &entry, python, &output)?;
    if fresh::is_fresh(&output, &fingerprint) {
        term::status(
            "Fresh",
            &format!("{} (its inputs are unchanged)", output.display()),
        );
        return Ok(0);
    }
    let entry_dir = tempfile::Builder::new().prefix("weft-build").tempdir()?;
    std::fs::write(entry_dir.path().join("weft_entry.py"), entry)?;
    term::status(
        "Building",
        &format!("{} with componentize-py", module.display()),
    );
    let status = Command::new("componentize-py")
        .args(["-w", world, "componentize", "weft_entry", "-p"])
        .arg(entry_dir.path())
        .arg("-p")
        .arg(module.parent().unwrap())
        .arg("-o")
        .arg(&output)
        // Its progress is a log, not this command's output.
        .stdout(super::stdout_to_stderr())
        .status()
        .context("running componentize-py")?;
    if !status.success() {
        bail!("componentize-py failed to build {}", module.display());
    }
    fresh::record(&output, &fingerprint)?;
    term::status("Built", &output.display().to_string());
    Ok(0)
}

fn build_rust(dir: &Path, output: Option<PathBuf>) -> Result<i32> {
    if !which("cargo") {
        return Err(tool_missing("cargo", "rustup (https://rustup.rs)"));
    }
    term::status("Building", &format!("{} for wasm32-wasip2", dir.display()));
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!(
            "cargo failed to build {} (is the target installed? `rustup target add wasm32-wasip2`)",
            dir.display()
        );
    }
    let mut wasm = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" {
            for f in msg["filenames"].as_array().into_iter().flatten() {
                if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                    wasm = Some(PathBuf::from(f));
                }
            }
        }
    }
    let wasm = wasm.context(
        "the crate produced no .wasm; a workflow crate needs `crate-type = [\"cdylib\"]`",
    )?;
    let output = output.unwrap_or_else(|| PathBuf::from(wasm.file_name().unwrap()));
    std::fs::copy(&wasm, &output).with_context(|| format!("writing {}", output.display()))?;
    term::status("Built", &output.display().to_string());
    Ok(0)
}

pub(super) fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
}
