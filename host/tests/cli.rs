//! The deploy CLI as a person runs it: the `marketplace-host` binary's
//! `deploy`, `list`, `rollback`, `promote` and `abort` against a host
//! served by the same binary (embedded SQLite), checked by their output
//! and exit codes. Needs the components built (`cargo xtask test` builds
//! them first).

use sha2::Digest as _;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "cli-test-admin-token";

fn components_dir() -> PathBuf {
    let dir = std::env::var_os("COMPONENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        });
    assert!(
        dir.join("greeter_v1.wasm").is_file(),
        "no built components in {}: run `cargo xtask components` first",
        dir.display()
    );
    dir
}

fn hex_sha256(file: &str) -> String {
    let bytes = std::fs::read(components_dir().join(file)).expect("a built component");
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The binary, with none of the environment a developer's shell or CI may
/// set for the host.
fn marketplace_host() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace-host"));
    for var in ["DATABASE_URL", "REDIS_URL", "ADMIN_URL", "ADMIN_TOKEN"] {
        command.env_remove(var);
    }
    command
}

/// A served host, stopped when dropped.
struct Served {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Served {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let manifest = dir.path().join("components.toml");
    std::fs::write(
        &manifest,
        format!(
            "dir = {:?}\n[[component]]\nname = \"greeter\"\nfile = \"greeter_v1.wasm\"\nroutes = [\"/greet\"]\n",
            components_dir().display().to_string()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = marketplace_host()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--database-url")
        .arg(format!(
            "sqlite://{}",
            dir.path().join("db.sqlite").display()
        ))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--manifest")
        .arg(&manifest)
        .args(["--watch-components", "false", "--demo-data", "false"])
        .args(["--admin-token", TOKEN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the host starts");
    let served = Served {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let started = Instant::now();
    while !run(&served, &["list"]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the host never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    served
}

/// `marketplace-host ARGS…` against `served`, with its admin token.
fn run(served: &Served, args: &[&str]) -> Output {
    marketplace_host()
        .args(args)
        .env("ADMIN_URL", &served.url)
        .env("ADMIN_TOKEN", TOKEN)
        .output()
        .expect("the CLI runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts `output` succeeded; its standard output.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        text(&output.stderr)
    );
    text(&output.stdout)
}

#[test]
fn the_binary_deploys_lists_canaries_and_rolls_back() {
    let served = serve();
    let dir = components_dir();
    let wasm = |file: &str| dir.join(file).display().to_string();
    let (v1, v2) = (hex_sha256("greeter_v1.wasm"), hex_sha256("greeter_v2.wasm"));

    let said = ok(run(
        &served,
        &[
            "deploy",
            &wasm("greeter_v2.wasm"),
            "--component",
            "greeter",
            "--note",
            "from the binary",
        ],
    ));
    assert!(
        said.starts_with(&format!("deployed greeter: {v2}")),
        "{said}"
    );
    let listed = ok(run(&served, &["list"]));
    assert!(
        listed.contains(&format!("greeter  active {v2}")),
        "{listed}"
    );
    assert!(listed.contains("from the binary"), "{listed}");

    let said = ok(run(
        &served,
        &[
            "deploy",
            &wasm("greeter_v1.wasm"),
            "--component",
            "greeter",
            "--canary",
            "30",
        ],
    ));
    assert!(said.contains("serves 30% of requests"), "{said}");
    let listed = ok(run(&served, &["list"]));
    assert!(
        listed.contains(&format!("canary {v1} on 30% of requests")),
        "{listed}"
    );
    ok(run(&served, &["abort", "greeter"]));
    let again = run(&served, &["abort", "greeter"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).starts_with("error: the admin API answered 409"),
        "{}",
        text(&again.stderr)
    );

    let said = ok(run(&served, &["rollback", "greeter"]));
    assert!(
        said.contains(&format!("rolled back greeter: {v1}")),
        "{said}"
    );

    // Usage errors: refused before anything is sent (clap exits 2).
    let zero = run(
        &served,
        &[
            "deploy",
            &wasm("greeter_v2.wasm"),
            "--component",
            "greeter",
            "--canary",
            "0",
        ],
    );
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero.stderr));
    let missing = run(
        &served,
        &["deploy", "/no/such/file.wasm", "--component", "greeter"],
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read /no/such/file.wasm"));
    let wrong = marketplace_host()
        .args(["list", "--admin-url", &served.url, "--admin-token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        text(&wrong.stderr).contains("401"),
        "{}",
        text(&wrong.stderr)
    );
}
