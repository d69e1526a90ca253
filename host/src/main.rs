//! The `marketplace-host` binary: parses the command line and environment
//! (flags override the environment) and serves.

use clap::{Args, Parser, Subcommand};
use host::{Settings, db::DbOptions, http::HttpLimits, runtime::SandboxConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Agent marketplace API host: endpoint logic in sandboxed wasm components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API.
    Serve(Box<ServeArgs>),
    /// Create an API token (and its user and workspace if they are new) in
    /// the database, and print it. Only its hash is stored.
    CreateToken(CreateTokenArgs),
    /// Deploy a component to the fleet (through any host's admin API).
    Deploy(DeployArgs),
    /// List the components: the active version, the kept ones, and what
    /// each live host serves.
    List(AdminArgs),
    /// Make the version before the active one serve again, fleet-wide.
    Rollback(NameArgs),
    /// Make a kept version serve again, fleet-wide.
    Activate(ActivateArgs),
    /// Make the canary the active version, fleet-wide.
    Promote(NameArgs),
    /// End the canary: its share of requests returns to the active
    /// version, fleet-wide.
    Abort(NameArgs),
}

#[derive(Args)]
struct AdminArgs {
    /// A host's address.
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    admin_url: String,
    /// The admin token the hosts were started with.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

#[derive(Args)]
struct DeployArgs {
    /// The component's `.wasm` file.
    file: std::path::PathBuf,
    /// The component's name in the manifest.
    #[arg(long)]
    component: String,
    /// A note kept with the version.
    #[arg(long, default_value = "")]
    note: String,
    /// Deploy it as a canary, served to this percentage of requests
    /// (1 to 99) beside the active version, until `promote` or `abort`.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=99))]
    canary: Option<u8>,
    /// Requests one instance of this version may serve (instance reuse,
    /// 0 to 1,000,000), on every host, whatever the manifest says.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    instance_reuse: Option<u32>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct NameArgs {
    /// The component's name in the manifest.
    component: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct ActivateArgs {
    /// The component's name in the manifest.
    component: String,
    /// The digest of a kept version (as `list` shows it, whole).
    digest: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct CreateTokenArgs {
    /// Database: `sqlite://path` or `postgres://…` (migrated first).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://data/marketplace.db"
    )]
    database_url: String,
    /// The user the token authenticates as (created if new).
    #[arg(long)]
    user: String,
    /// The user's email, if the user is new (default: USER@localhost).
    #[arg(long)]
    email: Option<String>,
    /// A workspace to make the user a member of (created if new).
    #[arg(long)]
    workspace: Option<String>,
    /// A label for the token, to tell tokens apart later.
    #[arg(long, default_value = "cli")]
    label: String,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database: `sqlite://path` (created if missing) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://data/marketplace.db"
    )]
    database_url: String,
    /// Longest a database statement may run, in milliseconds.
    #[arg(long, env = "DB_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    db_statement_timeout_ms: u64,
    /// Database connection pool size.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 16)]
    db_max_connections: u32,
    /// Most rows one component statement may return; past it the call
    /// fails with a `db` error and the rest is never read.
    #[arg(long, env = "DB_MAX_ROWS", default_value_t = 10_000)]
    db_max_rows: usize,
    /// Most bytes of values one component statement may return.
    #[arg(long, env = "DB_MAX_RESULT_BYTES", default_value_t = 8 << 20)]
    db_max_result_bytes: usize,
    /// Generate the demo dataset (and its well-known token) on first start
    /// of an empty database. Default: yes for SQLite, no for PostgreSQL.
    #[arg(long, env = "DEMO_DATA", action = clap::ArgAction::Set)]
    demo_data: Option<bool>,
    /// Agents in the demo dataset (100000 for benchmarks; 0 for no demo
    /// data).
    #[arg(long, env = "DEMO_AGENTS", default_value_t = host::DEMO_AGENTS)]
    demo_agents: usize,
    /// The component manifest: which component answers which routes.
    #[arg(long, env = "COMPONENTS_MANIFEST", default_value = "components.toml")]
    manifest: PathBuf,
    /// Most requests handled at once; more get 503 immediately.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 64)]
    max_in_flight: u32,
    /// Wall-clock deadline of one request, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Linear memory cap of one component instance, in MiB.
    #[arg(long, env = "MEMORY_LIMIT_MB", default_value_t = 64)]
    memory_limit_mb: usize,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Longest a client may take to send a request's headers, in
    /// milliseconds; past it the connection is closed.
    #[arg(long, env = "HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Time a request body may take on top of its transfer at
    /// `--min-body-rate`, in milliseconds; past it the request is 408.
    #[arg(long, env = "BODY_TIMEOUT_MS", default_value_t = 10_000)]
    body_timeout_ms: u64,
    /// Slowest accepted body transfer, in bytes per second.
    #[arg(long, env = "MIN_BODY_RATE", default_value_t = 256 << 10)]
    min_body_rate: u64,
    /// Redis for the cache (`redis://host:port`); unset: in-process only.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Prefix of every Redis key the host writes.
    #[arg(long, env = "REDIS_PREFIX", default_value = "marketplace:")]
    redis_prefix: String,
    /// Longest one Redis operation may take before the memory tier answers.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 100)]
    redis_timeout_ms: u64,
    /// Bytes of the near cache: Redis hits kept in process memory, served
    /// without a round trip while the host's invalidation subscription is
    /// up; 0 turns it off.
    #[arg(long, env = "NEAR_CACHE_BYTES", default_value_t = 32 << 20)]
    near_cache_bytes: u64,
    /// Where deployed components and compiled artifacts are kept.
    #[arg(long, env = "STATE_DIR", default_value = "data")]
    state_dir: PathBuf,
    /// Deploy a component when its file in the manifest's directory
    /// changes.
    #[arg(long, env = "WATCH_COMPONENTS", default_value_t = true, action = clap::ArgAction::Set)]
    watch_components: bool,
    /// Token of the admin API (`/admin`); unset: the admin API is off.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Bytes of values the in-process cache may hold.
    #[arg(long, env = "MEMORY_CACHE_BYTES", default_value_t = 256 << 20)]
    memory_cache_bytes: u64,
    /// KiB of each instance's memory kept resident between instances.
    #[arg(long, env = "POOL_KEEP_RESIDENT_KB", default_value_t = host::runtime::DEFAULT_KEEP_RESIDENT >> 10)]
    pool_keep_resident_kb: usize,
    /// Initialize instance memory by copy-on-write mapping (true) or by
    /// copying (false).
    #[arg(long, env = "MEMORY_INIT_COW", default_value_t = host::runtime::DEFAULT_MEMORY_INIT_COW, action = clap::ArgAction::Set)]
    memory_init_cow: bool,
    /// KiB of each fiber stack kept resident between instances.
    #[arg(long, env = "STACK_KEEP_RESIDENT_KB", default_value_t = host::runtime::DEFAULT_STACK_KEEP_RESIDENT >> 10)]
    stack_keep_resident_kb: usize,
    /// Reset only the pages an instance dirtied, found with Linux's
    /// PAGEMAP_SCAN (ignored where the kernel lacks it).
    #[arg(long, env = "PAGEMAP_SCAN", default_value_t = host::runtime::DEFAULT_PAGEMAP_SCAN, action = clap::ArgAction::Set)]
    pagemap_scan: bool,
    /// The longest TTL, in seconds, any cache entry a component stores
    /// gets, whatever it asks for (unset: what it asks for).
    #[arg(long, env = "CACHE_MAX_TTL", value_parser = clap::value_parser!(u64).range(1..))]
    cache_max_ttl: Option<u64>,
    /// Seconds a component's cache entries are kept after their TTL, served
    /// (`X-Cache: STALE`) when the database cannot answer a GET; a
    /// component's `stale_grace` in the manifest overrides it; 0: none.
    #[arg(long, env = "CACHE_STALE_GRACE", default_value_t = host::runtime::DEFAULT_STALE_GRACE.as_secs())]
    cache_stale_grace: u64,
    /// Seconds after an entry's TTL (within its grace) during which a
    /// GET that misses it gets it at once (`X-Cache: STALE`) while one
    /// background run refreshes it; 0: such a GET computes it itself.
    #[arg(long, env = "CACHE_REVALIDATE_WINDOW", default_value_t = host::runtime::DEFAULT_REVALIDATE_WINDOW.as_secs())]
    cache_revalidate_window: u64,
    /// How many requests one instance may serve, for components whose
    /// manifest entry or upload says nothing (instance reuse: the
    /// component's statics survive between those requests); 0 or 1: a
    /// fresh instance per request.
    #[arg(long, env = "INSTANCE_REUSE", default_value_t = 0)]
    instance_reuse: u32,
    /// Most requested anonymous GETs run again to refill the cache on start
    /// and after a deploy, counted by every host in the database; 0 turns
    /// counting and warming off.
    #[arg(long, env = "CACHE_WARM", default_value_t = host::warm::DEFAULT_WARM_TOP as u32,
          value_parser = clap::value_parser!(u32).range(0..=host::warm::MAX_WARM_TOP as i64))]
    cache_warm: u32,
    /// Longest start waits for warming before taking traffic, in
    /// milliseconds (warming goes on in the background after it).
    #[arg(long, env = "CACHE_WARM_WAIT_MS", default_value_t = host::warm::DEFAULT_WARM_WAIT.as_millis() as u64)]
    cache_warm_wait_ms: u64,
    /// Benchmarks only: also serve the native baseline of the browse and
    /// details cache-hit path under `/native` (see BENCHMARKS.md).
    #[arg(long, env = "NATIVE_BASELINE", default_value_t = false, action = clap::ArgAction::Set)]
    native_baseline: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,wasmtime=warn,cranelift=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => serve(*args).await,
        Command::CreateToken(args) => create_token(args).await,
        Command::Deploy(args) => {
            cli(async {
                let bytes = std::fs::read(&args.file)
                    .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
                let api = admin(args.admin);
                Ok(api
                    .deploy(
                        &args.component,
                        bytes,
                        &args.note,
                        args.canary,
                        args.instance_reuse,
                    )
                    .await?)
            })
            .await
        }
        Command::List(args) => cli(async { Ok(admin(args).list().await?) }).await,
        Command::Rollback(args) => {
            cli(async { Ok(admin(args.admin).rollback(&args.component).await?) }).await
        }
        Command::Promote(args) => {
            cli(async { Ok(admin(args.admin).promote(&args.component).await?) }).await
        }
        Command::Abort(args) => {
            cli(async { Ok(admin(args.admin).abort(&args.component).await?) }).await
        }
        Command::Activate(args) => {
            cli(async {
                let api = admin(args.admin);
                Ok(api.activate(&args.component, &args.digest).await?)
            })
            .await
        }
    }
}

/// Runs one admin command: its output on stdout, or `error: …` on stderr
/// and exit status 1.
async fn cli(
    command: impl std::future::Future<Output = Result<String, Box<dyn std::error::Error>>>,
) -> anyhow::Result<()> {
    match command.await {
        Ok(text) => {
            use std::io::Write as _;
            // A closed pipe (`| head`) is not an error of ours.
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

fn admin(args: AdminArgs) -> host::admin_client::AdminApi {
    host::admin_client::AdminApi {
        url: args.admin_url,
        token: args.admin_token,
    }
}

async fn create_token(args: CreateTokenArgs) -> anyhow::Result<()> {
    let databases = host::db::connect(&args.database_url, &DbOptions::default()).await?;
    databases
        .host
        .migrate()
        .await
        .map_err(|e| anyhow::anyhow!(e).context("migrating the database"))?;
    let email = args
        .email
        .unwrap_or_else(|| format!("{}@localhost", args.user));
    let token = host::auth::create_token(
        databases.host.as_ref(),
        &args.user,
        &email,
        args.workspace.as_deref(),
        &args.label,
        host::now_ms(),
    )
    .await
    .map_err(|e| anyhow::anyhow!(e).context("creating the token"))?;
    eprintln!(
        "a token for {} (shown once; use it as `Authorization: Bearer <token>`):",
        args.user
    );
    println!("{token}");
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Demo data, with its well-known token, only where a newcomer expects
    // it: the embedded default, or when asked for.
    let demo = args
        .demo_data
        .unwrap_or_else(|| args.database_url.starts_with("sqlite:"));
    if !demo {
        tracing::info!(
            "no demo data; create an API token with `marketplace-host create-token --user <id> --workspace <id>`"
        );
    }
    let settings = Settings {
        database_url: args.database_url,
        db: DbOptions {
            statement_timeout: Duration::from_millis(args.db_statement_timeout_ms),
            max_connections: args.db_max_connections,
            max_rows: args.db_max_rows,
            max_result_bytes: args.db_max_result_bytes,
            ..DbOptions::default()
        },
        demo_agents: if demo { args.demo_agents } else { 0 },
        manifest: args.manifest,
        sandbox: SandboxConfig {
            max_in_flight: args.max_in_flight,
            memory_limit: args.memory_limit_mb << 20,
            deadline: Duration::from_millis(args.request_timeout_ms),
            keep_resident: args.pool_keep_resident_kb << 10,
            memory_init_cow: args.memory_init_cow,
            stack_keep_resident: args.stack_keep_resident_kb << 10,
            pagemap_scan: args.pagemap_scan,
            max_cache_ttl: args.cache_max_ttl.map(Duration::from_secs),
            stale_grace: Duration::from_secs(args.cache_stale_grace),
            revalidate_window: Duration::from_secs(args.cache_revalidate_window),
            instance_reuse: args.instance_reuse,
        },
        http: HttpLimits {
            max_body_bytes: args.max_body_bytes,
            admin_token: args.admin_token,
            native_baseline: args.native_baseline,
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            body_timeout: Duration::from_millis(args.body_timeout_ms),
            min_body_rate: args.min_body_rate,
        },
        memory_cache_bytes: args.memory_cache_bytes,
        state_dir: args.state_dir,
        watch_components: args.watch_components,
        reconcile_every: host::RECONCILE_EVERY,
        warm: host::warm::WarmSettings {
            top: args.cache_warm as usize,
            wait: Duration::from_millis(args.cache_warm_wait_ms),
            ..host::warm::WarmSettings::default()
        },
        redis: args.redis_url.map(|url| host::cache::RedisSettings {
            url,
            prefix: args.redis_prefix,
            op_timeout: Duration::from_millis(args.redis_timeout_ms),
            near_cache_bytes: args.near_cache_bytes,
        }),
    };
    let header_timeout = settings.http.header_timeout;
    let app = host::build(&settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    host::run(
        listener,
        app,
        shutdown_signal(),
        Duration::from_secs(10),
        header_timeout,
    )
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
