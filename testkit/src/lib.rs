//! The mocked host: test a component without Redis, PostgreSQL or an HTTP
//! server.
//!
//! [`MockHost`] loads a built component (`.wasm`) with the real host's
//! engine and sandbox, and serves it requests in-process. Its capabilities
//! are fakes the test inspects and breaks:
//!
//! - [`MockCache`]: in-memory, records every call, counts hits and misses,
//!   runs on a virtual clock ([`MockCache::advance`]), fails or slows on
//!   demand;
//! - [`FakeDb`]: the real schema in an in-memory SQLite database with the
//!   fixtures the test chooses, or scripted expectations
//!   ([`FakeDb::expect`]); every statement recorded; unavailable, timing
//!   out or violating a constraint on demand. A statement no expectation
//!   matches fails the test with a message naming it and its parameters.
//!
//! Everything is synchronous: call it from plain `#[test]` functions (the
//! kit runs its own async runtime; do not call it from inside another).
//!
//! ```no_run
//! use testkit::{FakeDb, MockHost, TestRequest};
//!
//! let host = MockHost::new(testkit::component_path("templates"), FakeDb::sqlite_with_demo(10));
//! let first = host.get("/api/templates?limit=5");
//! assert_eq!(first.status, 200);
//! assert_eq!(first.header("x-cache"), Some("MISS"));
//! let second = host.send(TestRequest::get("/api/templates?limit=5"));
//! assert_eq!(second.header("x-cache"), Some("HIT"));
//! ```

mod cache;
mod db;

pub use cache::{CacheCall, MockCache};
pub use db::{CallKind, DbCall, Expectation, ExpectationBuilder, FakeDb, rows};
pub use host::db::{DbError, Rows, Value};
pub use host::runtime::{InvokeError, SandboxConfig};

use host::runtime::{Capabilities, LoadedComponent, Principal, Request, Runtime};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The kit's async runtime, shared by every test in the process.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the testkit's runtime starts")
    })
}

pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Where the workspace's build puts the component `name`:
/// `target/wasm32-wasip2/release/{name}.wasm` (a crate's `-` becomes `_`),
/// under `CARGO_TARGET_DIR` when that is set. Build it first with
/// `cargo xtask components` (or `cargo build --release --target
/// wasm32-wasip2 -p {name}`).
pub fn component_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// A component loaded into the real engine, with fake capabilities.
pub struct MockHost {
    runtime: Runtime,
    component: LoadedComponent,
    cache: MockCache,
    db: FakeDb,
}

impl MockHost {
    /// Loads the component at `wasm` with a fresh [`MockCache`], `db`, and
    /// the host's default sandbox. Panics with a clear message when the file
    /// is missing or is not a handler component.
    pub fn new(wasm: impl AsRef<Path>, db: FakeDb) -> Self {
        Self::with(wasm, MockCache::new(), db, SandboxConfig::default())
    }

    /// Loads the component at `wasm` with the given fakes and sandbox.
    pub fn with(
        wasm: impl AsRef<Path>,
        cache: MockCache,
        db: FakeDb,
        sandbox: SandboxConfig,
    ) -> Self {
        let wasm = wasm.as_ref();
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| {
            panic!(
                "cannot read the component {}: {e}; build it first (`cargo xtask components`)",
                wasm.display()
            )
        });
        let capabilities = Capabilities {
            cache: Arc::new(Unscoped(cache.clone())),
            db: Arc::new(db.clone()),
        };
        // The engine's epoch ticker and pooling allocator are the host's.
        let runtime = block_on(async { Runtime::new(sandbox, capabilities, None) })
            .expect("the engine starts");
        let name = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let component = runtime
            .load(&name, &bytes)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", wasm.display()));
        Self {
            runtime,
            component,
            cache,
            db,
        }
    }

    /// The cache fake, to inspect or break.
    pub fn cache(&self) -> &MockCache {
        &self.cache
    }

    /// The database fake, to inspect or break.
    pub fn db(&self) -> &FakeDb {
        &self.db
    }

    /// Sends `request` and returns the component's response. Panics if the
    /// component trapped, ran past its deadline or its memory cap (use
    /// [`try_send`](Self::try_send) to test those), or ran a statement the
    /// scripted database did not expect.
    pub fn send(&self, request: TestRequest) -> TestResponse {
        let described = format!("{} {}", request.inner.method, request.target);
        match self.try_send(request) {
            Ok(response) => response,
            Err(e) => panic!("{described}: {e}"),
        }
    }

    /// Like [`send`](Self::send), but a component failure is returned.
    pub fn try_send(&self, request: TestRequest) -> Result<TestResponse, InvokeError> {
        let described = format!("{} {}", request.inner.method, request.target);
        let result = block_on(self.runtime.invoke(&self.component, request.inner));
        let unexpected = self.db.take_unexpected();
        if !unexpected.is_empty() {
            panic!("{described}: {}", unexpected.join("\n"));
        }
        result.map(TestResponse::from)
    }

    /// `GET path` (with its query string).
    pub fn get(&self, target: &str) -> TestResponse {
        self.send(TestRequest::get(target))
    }
}

/// A request to send to a component, built from a method and a target
/// (path and query string, as a client writes it).
#[derive(Debug, Clone)]
pub struct TestRequest {
    target: String,
    inner: Request,
}

impl TestRequest {
    pub fn new(method: &str, target: &str) -> Self {
        let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .unwrap_or_else(|e| panic!("`{method}` is not a method: {e}"));
        Self {
            target: target.to_string(),
            inner: Request::new(method, target),
        }
    }

    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    pub fn post(target: &str) -> Self {
        Self::new("POST", target)
    }

    /// Adds a header (the name is lower-cased, as the host does). Panics
    /// on a name or value HTTP does not allow.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let header = http::HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("`{name}` is not a header name: {e}"));
        let value = http::HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("`{value}` is not a header value: {e}"));
        self.inner.headers.append(header, value);
        self
    }

    /// The body, as raw bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.inner.body = body.into();
        self
    }

    /// The body as JSON, with `content-type: application/json`.
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    /// The caller, as the host passes it after resolving a bearer token.
    pub fn principal(mut self, user_id: &str, workspace_ids: &[&str]) -> Self {
        self.inner.principal = Some(Principal {
            user_id: user_id.to_string(),
            workspace_ids: workspace_ids.iter().map(|w| w.to_string()).collect(),
        });
        self
    }
}

/// A component's response, with the headers the host would send.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: u16,
    /// In the order the host sends them: the component's list, then
    /// `content-type: application/json` if it named none (but on a 304),
    /// then its `etag` and `cache` (`x-cache`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl From<host::runtime::Response> for TestResponse {
    fn from(r: host::runtime::Response) -> Self {
        let mut headers = r.headers;
        if r.status != 304
            && !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            headers.push(("content-type".into(), "application/json".into()));
        }
        if let Some(etag) = r.etag {
            headers.push(("etag".into(), etag));
        }
        if let Some(cache) = r.cache {
            headers.push(("x-cache".into(), cache.as_str().into()));
        }
        TestResponse {
            status: r.status,
            headers,
            body: r.body,
        }
    }
}

impl TestResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics, showing the body, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error.code` of an error response; panics when there is none.
    pub fn error_code(&self) -> String {
        let body = self.json();
        body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {body}"))
            .to_string()
    }
}

/// The mock cache as the component names things: the host keeps every key
/// and tag of a component in its namespace (`{namespace}/{name}`); this
/// takes the namespace off again, so that a test sees and sets exactly the
/// keys and tags the component's code uses.
struct Unscoped(MockCache);

fn unscoped(name: &str) -> &str {
    name.split_once('/').map_or(name, |(_, rest)| rest)
}

fn unscoped_all(names: &[String]) -> Vec<String> {
    names.iter().map(|n| unscoped(n).to_string()).collect()
}

#[async_trait::async_trait]
impl host::cache::Cache for Unscoped {
    async fn get(&self, key: &str, stamp: &mut host::cache::Stamp) -> Option<Vec<u8>> {
        self.0.get(unscoped(key), stamp).await
    }

    async fn stamp(&self, stamp: &mut host::cache::Stamp) {
        self.0.stamp(stamp).await
    }

    async fn set(
        &self,
        key: &str,
        value: Vec<u8>,
        life: host::cache::Lifetime,
        tags: &[String],
        stamp: &host::cache::Stamp,
    ) {
        self.0
            .set(unscoped(key), value, life, &unscoped_all(tags), stamp)
            .await
    }

    async fn get_stale(
        &self,
        key: &str,
        past_ttl: Option<std::time::Duration>,
    ) -> Option<host::cache::Stale> {
        self.0.get_stale(unscoped(key), past_ttl).await
    }

    async fn delete(&self, key: &str) {
        self.0.delete(unscoped(key)).await
    }

    async fn invalidate_tags(&self, tags: &[String]) {
        self.0.invalidate_tags(&unscoped_all(tags)).await
    }
}
