//! Project automation, so that a newcomer with only a Rust toolchain needs
//! two commands:
//!
//! - `cargo xtask serve [ARGS…]`: set up, build the components, and serve
//!   the API on embedded defaults (ARGS go to `marketplace-host serve`).
//! - `cargo xtask test [ARGS…]`: set up, build the components, and run every
//!   test (ARGS go to `cargo test`).
//! - `cargo xtask components`: only the set-up and the component build.
//!
//! Set-up means the `wasm32-wasip2` target (through rustup) and the release
//! build of every crate under `components/`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match task.as_str() {
        "serve" => {
            build_components().and_then(|()| cargo(&["run", "-p", "host", "--", "serve"], &rest))
        }
        "test" => build_components().and_then(|()| cargo(&["test"], &rest)),
        "components" => build_components(),
        _ => Err(format!(
            "usage: cargo xtask <serve|test|components> [ARGS…]\n  unknown task {task:?}"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    // CARGO_MANIFEST_DIR is xtask/; the workspace is its parent.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo(args: &[&str], extra: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .current_dir(root())
        .args(args)
        .args(extra))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

/// Installs the wasm target if rustup manages this toolchain and lacks it.
fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == WASM_TARGET)
            {
                return Ok(());
            }
            eprintln!("xtask: installing the {WASM_TARGET} target");
            run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
        }
        // No rustup: the toolchain must already carry the target; the build
        // below says so clearly if it does not.
        _ => Ok(()),
    }
}

/// Every crate directory under `components/`.
fn component_crates() -> Result<Vec<String>, String> {
    let dir = root().join("components");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn build_components() -> Result<(), String> {
    ensure_target()?;
    let mut args = vec!["build", "--release", "--target", WASM_TARGET];
    let crates = component_crates()?;
    for c in &crates {
        args.extend(["-p", c.as_str()]);
    }
    cargo(&args, &[])
}
