//! A host serving over real HTTP on a loopback port, on either stack:
//! the embedded defaults (a fresh SQLite file, the memory tier) or the
//! machine's PostgreSQL and Redis (a fresh schema and key prefix).

use crate::postgres::PgSchema;
use crate::proxy::Proxy;
use crate::redis::RedisPrefix;
use host::http::HttpLimits;
use host::runtime::SandboxConfig;
use std::time::Duration;

/// Which backends a served host uses.
#[derive(Clone, Copy, Debug)]
pub enum Stack {
    /// SQLite and the memory tier: what `cargo xtask serve` runs with no
    /// configuration.
    Embedded,
    /// The PostgreSQL of `DATABASE_URL` and the Redis of `REDIS_URL`.
    Real,
}

/// The demo token (a member of `ws-demo` only).
pub const TOKEN: &str = host::seed::DEMO_TOKEN;

/// A served host. Dropping it stops the server and removes its data.
pub struct Served {
    pub base: String,
    pub client: reqwest::Client,
    /// When the host was asked to put its database behind a proxy.
    pub db_proxy: Option<Proxy>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _schema: Option<PgSchema>,
    _redis: Option<RedisPrefix>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        crate::json(&self.body)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `X-Cache` header, failing the test when it is absent or
    /// repeated.
    pub fn x_cache(&self) -> &str {
        let n = self.headers.get_all("x-cache").iter().count();
        assert!(n <= 1, "{n} X-Cache headers: {self:?}");
        self.header("x-cache")
            .unwrap_or_else(|| panic!("no X-Cache header: {self:?}"))
    }

    /// Asserts the error shape and status, and returns the message.
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "expected {status} {code}, got: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(crate::error_code(&self.body), code);
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Serves a host on `stack`, or `None` (after saying why) when the stack's
/// servers are not configured and the test should skip; under CI a missing
/// server fails instead. With `db_behind_proxy`, the host reaches its
/// database through a [`Proxy`] the test can cut (the real stack only).
pub async fn serve(stack: Stack, db_behind_proxy: bool) -> Option<Served> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (schema, redis, db_proxy) = match stack {
        Stack::Embedded => (None, None, None),
        Stack::Real => {
            let schema = crate::postgres::fresh_schema().await?;
            let redis_url = crate::redis::server_url()?;
            let mut redis = crate::redis::fresh_prefix(&redis_url);
            // These tests are about the API, not about degradation (which
            // `cache/faults.rs` covers): a loaded machine must not make Redis
            // look down.
            redis.settings.op_timeout = Duration::from_secs(2);
            let proxy = if db_behind_proxy {
                Some(Proxy::start(schema.server(), true).await)
            } else {
                None
            };
            (Some(schema), Some(redis), proxy)
        }
    };
    let database_url = schema.as_ref().map(|s| match &db_proxy {
        Some(p) => s.url_via(p.addr),
        None => s.url.clone(),
    });
    let app = crate::build_in(
        dir.path(),
        database_url,
        redis.as_ref().map(|r| r.settings.clone()),
        SandboxConfig::default(),
        HttpLimits {
            max_body_bytes: 16 * 1024,
            native_baseline: true,
            ..HttpLimits::default()
        },
        crate::DEFAULT_ROUTES,
    )
    .await;
    let (addr, stop) = spawn(app, HttpLimits::default().header_timeout).await;
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client");
    Some(Served {
        base,
        client,
        db_proxy,
        stop: Some(stop),
        _schema: schema,
        _redis: redis,
        _dir: dir,
    })
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("the host answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("a whole body").to_vec(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    /// A GET with `If-None-Match: etag`.
    pub async fn get_if_none_match(&self, path: &str, etag: &str) -> Reply {
        self.send(
            self.client
                .get(self.url(path))
                .header("if-none-match", etag),
        )
        .await
    }

    /// A POST of `body` (sent as JSON) with the bearer `token` if any.
    pub async fn post(&self, path: &str, token: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        self.send(request).await
    }
}

/// Runs an async test body on both stacks: `#[tokio::test]` functions
/// `$name::embedded` and `$name::real` calling `$name(stack)`.
#[macro_export]
macro_rules! on_both_stacks {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::served::Stack::Embedded).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn real() {
                    super::$name($crate::served::Stack::Real).await
                }
            }
        )*
    };
}

/// Serves `app` on a loopback port with `host::run`; sending on (or
/// dropping) the returned sender stops it.
pub async fn spawn(
    app: axum::Router,
    header_timeout: Duration,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(host::run(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
        header_timeout,
    ));
    (addr, stop)
}
