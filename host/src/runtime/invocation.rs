//! The per-request store state, and the `handler` world's imports
//! implemented on it by delegating to the host's capability traits.
//!
//! **Invariant:** components never see a cache error (the `Cache` trait has
//! none) and see database errors only as the WIT `db-error` variant.

use super::bindings::marketplace::host::{cache, db, headers, log, types};
use super::flights::{self, FillGuard, Flights, Miss};
use super::{Capabilities, LoadedComponent, SandboxConfig};
use crate::cache::{Lifetime, Stamp};
use crate::db as hostdb;
use http::HeaderMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most table elements an instance may grow to; a guard against runaway
/// growth, far above what a Rust component uses.
const TABLE_ELEMENTS_LIMIT: usize = 100_000;

/// Most log lines one request may write; past it lines are dropped and
/// counted, and one line at the end of the request says how many.
const LOG_LINES_LIMIT: usize = 100;
/// Most bytes of log messages one request may write, likewise.
const LOG_BYTES_LIMIT: usize = 16 << 10;

/// How a run's cache reads go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Fresh entries only; misses are computed.
    Fresh,
    /// `Fresh`, except that a miss on an entry whose TTL ended within the
    /// revalidate window gets that entry at once, and the first such miss
    /// on a key claims its refresh (`Ran::refresh`), which the caller runs
    /// in the background (stale-while-revalidate; `Runtime::serve`).
    Revalidating,
    /// Fresh entries, else entries past their TTL within their grace;
    /// nothing is stored, and database calls fail at once: the replay of a
    /// GET the database could not answer (`Runtime::invoke`).
    Stale,
}

/// What a run did that decides whether it is replayed stale, labelled
/// stale, or followed by a refresh.
#[derive(Default)]
pub(crate) struct Ran {
    /// A database call could not be answered (`Unavailable`, `Timeout`).
    pub database_failed: bool,
    /// The age of the oldest stale entry it read, if it read any.
    pub stale_age: Option<Duration>,
    /// The keys it served stale and claimed the refresh of.
    pub refresh: Vec<FillGuard>,
}

/// Everything an instance's `Store` holds: one request's state, and for a
/// warm instance (reuse) what it keeps between its requests (see `begin`).
pub(crate) struct Invocation {
    /// The component's name, for log lines.
    component: String,
    /// The cache namespace its keys and tags live in (see `scoped`).
    namespace: Arc<str>,
    /// Cache and database behind the imports.
    capabilities: Capabilities,
    /// WASI state: no preopens, no environment, no sockets, empty stdin and
    /// discarded stdout/stderr.
    wasi: WasiCtx,
    /// Resources handed to the guest (WASI streams, cache entries).
    table: ResourceTable,
    /// Bytes of the cache entries in `table` (`get-entry`): held by the
    /// host for the guest, so counted against its memory cap.
    entry_bytes: usize,
    /// The memory cap and whether it was hit.
    limits: Limits,
    /// The cache's invalidation clocks as this request first saw them.
    stamp: Stamp,
    /// When the request's deadline passes.
    expires: Instant,
    /// The longest TTL an entry it stores gets.
    max_ttl: Option<Duration>,
    /// How long an entry it stores is kept past its TTL.
    grace: Duration,
    /// How long past its TTL a missed entry is served while refreshed.
    revalidate_window: Duration,
    /// Fresh or stale reads.
    reading: Reading,
    /// The current request's headers, read through the `headers` import;
    /// none between a warm instance's requests.
    headers: Option<Arc<HeaderMap>>,
    /// What it did, for `Runtime::invoke`.
    ran: Ran,
    /// Whether a database call is awaiting its answer: a run that ends
    /// (its deadline) while one is counts as one the database could not
    /// answer.
    waiting_on_database: bool,
    /// Keys being computed by some request now.
    flights: Arc<Flights>,
    /// The keys this request missed first and so computes; dropped (waking
    /// their waiters) when it stores them or when the request ends.
    filling: Vec<FillGuard>,
    /// What the guest has logged in this request, against the log caps.
    logged: LogBudget,
    /// Epoch ticks seen while this instance ran.
    ticks: u32,
    /// Set once the instance has computed for the busy threshold: counts it
    /// among the busy instances until the store is dropped.
    busy: Option<Busy>,
}

/// One instance counted as busy; dropping it uncounts it.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Log lines and bytes a request has written, and those it was refused.
#[derive(Default)]
struct LogBudget {
    lines: usize,
    bytes: usize,
    dropped_lines: usize,
    dropped_bytes: usize,
}

impl LogBudget {
    /// How much of `message` may be logged: all of it, a prefix, or none
    /// (`None`, counted as dropped).
    fn admit<'m>(&mut self, message: &'m str) -> Option<&'m str> {
        let left = LOG_BYTES_LIMIT.saturating_sub(self.bytes);
        if self.lines >= LOG_LINES_LIMIT || left == 0 {
            self.dropped_lines += 1;
            self.dropped_bytes += message.len();
            return None;
        }
        let mut end = message.len().min(left);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.lines += 1;
        self.bytes += end;
        self.dropped_bytes += message.len() - end;
        Some(&message[..end])
    }
}

/// A per-instance memory cap that remembers being hit, so the host can tell
/// an out-of-memory trap from any other.
pub(crate) struct Limits {
    /// Largest linear memory allowed, in bytes.
    memory_limit: usize,
    /// Set when a growth beyond `memory_limit` was refused.
    memory_exceeded: bool,
    /// Set when a memory grew (allowed or not) since it was last cleared:
    /// a warm instance whose memory grew in a request is retired.
    grew: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grew = true;
        if desired > self.memory_limit {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_LIMIT)
    }
}

/// What one request gives the instance that serves it.
pub(crate) struct Turn {
    /// When its deadline passes.
    pub expires: Instant,
    /// Fresh or stale reads.
    pub reading: Reading,
    /// The keys it computes, claimed before it runs.
    pub filling: Vec<FillGuard>,
    /// Its headers.
    pub headers: Arc<HeaderMap>,
}

impl Invocation {
    pub(crate) fn new(
        component: &LoadedComponent,
        sandbox: &SandboxConfig,
        capabilities: Capabilities,
        flights: Arc<Flights>,
        turn: Turn,
    ) -> Self {
        let Turn {
            expires,
            reading,
            filling,
            headers,
        } = turn;
        Self {
            expires,
            headers: Some(headers),
            max_ttl: sandbox.max_cache_ttl,
            grace: component.stale_grace.unwrap_or(sandbox.stale_grace),
            revalidate_window: sandbox.revalidate_window,
            reading,
            ran: Ran::default(),
            waiting_on_database: false,
            component: component.name.clone(),
            namespace: component.cache_namespace.clone(),
            capabilities,
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            entry_bytes: 0,
            limits: Limits {
                memory_limit: sandbox.memory_limit,
                memory_exceeded: false,
                grew: false,
            },
            stamp: Stamp::default(),
            flights,
            filling,
            logged: LogBudget::default(),
            ticks: 0,
            busy: None,
        }
    }

    /// Counts one epoch tick of running wasm. Past `threshold` ticks the
    /// instance counts as busy (once); returns how many busy instances there
    /// are then, or `None` while this one is not busy.
    pub(crate) fn tick(&mut self, busy: &Arc<AtomicUsize>, threshold: u32) -> Option<usize> {
        self.ticks = self.ticks.saturating_add(1);
        if self.ticks < threshold {
            return None;
        }
        Some(match &self.busy {
            Some(_) => busy.load(Ordering::Relaxed).max(1),
            None => {
                let now = busy.fetch_add(1, Ordering::Relaxed) + 1;
                self.busy = Some(Busy(busy.clone()));
                now
            }
        })
    }

    /// `name` (a key or a tag) inside the component's cache namespace (see
    /// `crate::cache::scoped`).
    fn scoped(&self, name: &str) -> String {
        crate::cache::scoped(&self.namespace, name)
    }

    pub(crate) fn limits(&mut self) -> &mut Limits {
        &mut self.limits
    }

    pub(crate) fn memory_exceeded(&self) -> bool {
        self.limits.memory_exceeded
    }

    /// When the request's deadline passes.
    pub(crate) fn expires(&self) -> Instant {
        self.expires
    }

    /// Whether a memory grew since `forget_growth`.
    pub(crate) fn memory_grew(&self) -> bool {
        self.limits.grew
    }

    /// Forgets growth so far: called once the instance is made, whose
    /// memories' creation counts as growing them.
    pub(crate) fn forget_growth(&mut self) {
        self.limits.grew = false;
    }

    /// How many resources (WASI streams and the like) the instance holds
    /// in its table now.
    pub(crate) fn resources(&mut self) -> usize {
        self.table.iter_mut().count()
    }

    /// Readies a warm instance's state for its next request: everything a
    /// request holds is new (deadline, reading, stamp, budgets, what it
    /// did); the component's settings, the WASI context and the resource
    /// table are kept with the instance.
    pub(crate) fn begin(&mut self, turn: Turn) {
        let Turn {
            expires,
            reading,
            filling,
            headers,
        } = turn;
        self.expires = expires;
        self.headers = Some(headers);
        self.reading = reading;
        self.ran = Ran::default();
        self.waiting_on_database = false;
        self.stamp = Stamp::default();
        self.filling = filling;
        self.limits.memory_exceeded = false;
        self.limits.grew = false;
    }

    /// Ends a request of a warm instance that is kept: its key fills are
    /// released (waking their waiters), it stops counting as busy, and the
    /// log lines it was refused are reported, as dropping it would.
    pub(crate) fn end(&mut self) {
        self.filling.clear();
        self.headers = None;
        self.busy = None;
        self.ticks = 0;
        self.report_dropped_logs();
        self.logged = LogBudget::default();
    }

    /// One line saying how many log lines and bytes the request was
    /// refused, if any.
    fn report_dropped_logs(&self) {
        let LogBudget {
            dropped_lines,
            dropped_bytes,
            ..
        } = self.logged;
        if dropped_lines > 0 || dropped_bytes > 0 {
            tracing::warn!(
                component = %self.component,
                dropped_lines,
                dropped_bytes,
                "the component logged more than {LOG_LINES_LIMIT} lines or {LOG_BYTES_LIMIT} bytes in one request; the rest was dropped"
            );
        }
    }

    /// What the run did; a database call still awaiting its answer counts
    /// as one the database could not answer.
    pub(crate) fn take_ran(&mut self) -> Ran {
        let mut ran = std::mem::take(&mut self.ran);
        ran.database_failed |= self.waiting_on_database;
        ran
    }

    /// Notes a database call's answer, and one the database could not
    /// give.
    fn note<T>(&mut self, result: &Result<T, hostdb::DbError>) {
        self.waiting_on_database = false;
        if matches!(
            result,
            Err(hostdb::DbError::Unavailable(_) | hostdb::DbError::Timeout(_))
        ) {
            self.ran.database_failed = true;
        }
    }

    /// In a stale replay, the answer every database call gets at once.
    fn refused_in_stale_replay(&self) -> Result<(), hostdb::DbError> {
        match self.reading {
            Reading::Fresh | Reading::Revalidating => Ok(()),
            Reading::Stale => Err(hostdb::DbError::Unavailable(
                "the database could not answer this request; serving what the cache still has"
                    .into(),
            )),
        }
    }
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for Invocation {}

/// A header value as a component sees it: bytes that are not UTF-8 become
/// U+FFFD.
fn header_text(value: &http::HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

impl headers::Host for Invocation {
    async fn get(&mut self, mut name: String) -> Option<String> {
        let map = self.headers.as_deref()?;
        // Any case: `HeaderMap` looks names up lower-case (and finds
        // nothing under a name that is not one).
        name.make_ascii_lowercase();
        if name == http::header::AUTHORIZATION.as_str() {
            return None;
        }
        let mut values = map.get_all(name.as_str()).iter();
        let mut joined = header_text(values.next()?);
        for value in values {
            joined.push_str(", ");
            joined.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
        Some(joined)
    }

    async fn all(&mut self) -> Vec<types::Header> {
        self.headers
            .as_deref()
            .map_or_else(Vec::new, request_headers)
    }
}

/// `map` as a list of headers, in order, names lower-case, without
/// `authorization` (the host authenticates).
pub(crate) fn request_headers(map: &HeaderMap) -> Vec<types::Header> {
    map.iter()
        .filter(|(name, _)| *name != http::header::AUTHORIZATION)
        .map(|(name, value)| types::Header {
            name: name.as_str().to_string(),
            value: header_text(value),
        })
        .collect()
}

/// A cache value handed to the guest as a handle (`cache.get-entry`): its
/// bytes stay here, and a response may send them as its body.
pub struct Entry(Vec<u8>);

impl cache::HostEntry for Invocation {
    async fn read(
        &mut self,
        entry: wasmtime::component::Resource<Entry>,
        offset: u64,
        length: u64,
    ) -> Vec<u8> {
        let Ok(Entry(bytes)) = self.table.get(&entry) else {
            return Vec::new();
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let length = usize::try_from(length).unwrap_or(usize::MAX);
        bytes[start..start.saturating_add(length).min(bytes.len())].to_vec()
    }

    async fn drop(&mut self, entry: wasmtime::component::Resource<Entry>) -> wasmtime::Result<()> {
        let Entry(bytes) = self.table.delete(entry)?;
        self.entry_bytes -= bytes.len();
        Ok(())
    }
}

impl Invocation {
    /// The body `body` stands for: its bytes, or the slice of the entry it
    /// names, taken out of the table (an entry-slice owns its entry). A
    /// slice past the entry's end is the component's bug.
    pub(crate) fn body(&mut self, body: types::Body) -> Result<Vec<u8>, String> {
        match body {
            types::Body::Bytes(bytes) => Ok(bytes),
            types::Body::Entry(slice) => {
                let Entry(mut bytes) = self
                    .table
                    .delete(slice.entry)
                    .map_err(|e| format!("a body's cache entry: {e}"))?;
                self.entry_bytes -= bytes.len();
                let size = bytes.len() as u64;
                let end = slice.offset.checked_add(slice.length);
                if end.is_none_or(|end| end > size) {
                    return Err(format!(
                        "a body of {} bytes from offset {} of a cache entry of {size}",
                        slice.length, slice.offset
                    ));
                }
                // In bounds, so both fit in usize.
                let (offset, length) = (slice.offset as usize, slice.length as usize);
                bytes.truncate(offset + length);
                if offset > 0 {
                    bytes.drain(..offset);
                }
                Ok(bytes)
            }
        }
    }
}

impl cache::Host for Invocation {
    async fn get_entry(&mut self, key: String, tail: u32) -> Option<cache::Found> {
        let bytes = cache::Host::get(self, key).await?;
        // The entries a guest holds count against its memory cap, as the
        // values `get` copies into its memory do: past it, it gets a miss
        // (and computes the value) rather than host memory without bound.
        let held = self.entry_bytes.saturating_add(bytes.len());
        if held > self.limits.memory_limit {
            return None;
        }
        let size = bytes.len() as u64;
        let tail = bytes[bytes.len().saturating_sub(tail as usize)..].to_vec();
        let entry = self.table.push(Entry(bytes)).ok()?;
        self.entry_bytes = held;
        Some(cache::Found { entry, size, tail })
    }

    /// Concurrent misses on one key compute once (see `get_coalesced`).
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        let value = match self.reading {
            Reading::Fresh | Reading::Revalidating => self.get_coalesced(key).await,
            Reading::Stale => self.get_or_stale(key).await,
        };
        if value.is_some() {
            // Data read: no clock read after this may stamp what follows.
            self.stamp.seal();
        }
        value
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: u32, tags: Vec<String>) {
        if self.reading == Reading::Stale || self.ran.stale_age.is_some() {
            // Nothing computed from a stale entry is new.
            return;
        }
        // Not sealed: the request has read no data yet, so every tier's
        // clock of now is older than anything the value comes from.
        if !self.stamp.sealed {
            self.capabilities.cache.stamp(&mut self.stamp).await;
        }
        let key = self.scoped(&key);
        let tags: Vec<String> = tags.iter().map(|t| self.scoped(t)).collect();
        let asked = Duration::from_secs(u64::from(ttl_seconds.max(1)));
        let ttl = self.max_ttl.map_or(asked, |max| asked.min(max));
        self.capabilities
            .cache
            .set(
                &key,
                value,
                Lifetime {
                    ttl,
                    grace: self.grace,
                },
                &tags,
                &self.stamp,
            )
            .await;
        // Stored: wake whoever waits for it.
        self.filling.retain(|g| g.key() != key);
    }

    async fn delete(&mut self, key: String) {
        let key = self.scoped(&key);
        self.capabilities.cache.delete(&key).await;
    }

    async fn invalidate_tags(&mut self, tags: Vec<String>) {
        let tags: Vec<String> = tags.iter().map(|t| self.scoped(t)).collect();
        self.capabilities.cache.invalidate_tags(&tags).await;
    }
}

/// The most tags one transaction may invalidate, and the longest tag: an
/// invalidation travels in one outbox row, one notification and one Redis
/// script, which must stay small.
const MAX_INVALIDATES: usize = 64;
const MAX_TAG_BYTES: usize = 256;

impl Invocation {
    /// `cache.get`, coalescing misses: a miss on a key another request is
    /// computing waits for that request and reads again (see `flights`).
    async fn get_coalesced(&mut self, key: String) -> Option<Vec<u8>> {
        let key = self.scoped(&key);
        let cache = &self.capabilities.cache;
        let fills_seen = self.flights.completed();
        if let Some(value) = cache.get(&key, &mut self.stamp).await {
            return Some(value);
        }
        if self.filling.iter().any(|g| g.key() == key) {
            return None;
        }
        // Only an entry past its TTL: one within it that `get` missed was
        // made stale for another reason (a suspected memory tier), which
        // only a failing database may serve.
        if self.reading == Reading::Revalidating
            && !self.revalidate_window.is_zero()
            && let Some(stale) = cache.get_stale(&key, Some(self.revalidate_window)).await
            && !stale.past_ttl.is_zero()
        {
            // Answered at once; the first to miss it claims its refresh,
            // the others leave it to that one.
            if let Miss::Fill(guard) = self.flights.miss(&key) {
                // A refresh that ended since our read may have stored it.
                if self.flights.completed() != fills_seen
                    && let Some(value) = cache.get(&key, &mut self.stamp).await
                {
                    return Some(value);
                }
                self.ran.refresh.push(guard);
            }
            self.ran.stale_age = Some(self.ran.stale_age.unwrap_or_default().max(stale.age));
            return Some(stale.value);
        }
        match self.flights.miss(&key) {
            Miss::Fill(guard) => {
                // A fill that ended between our read and our claim (a Redis
                // read takes a round trip) may have stored the key: read
                // once more before computing it again. Dropping the guard
                // on a hit wakes anyone who started waiting meanwhile.
                if self.flights.completed() != fills_seen
                    && let Some(value) = cache.get(&key, &mut self.stamp).await
                {
                    return Some(value);
                }
                self.filling.push(guard);
                None
            }
            Miss::Wait(receiver) => {
                // At most half of what is left of the deadline, so that
                // after a filler that never stores the value this request
                // still has time to compute it itself.
                let left = self.expires.saturating_duration_since(Instant::now());
                flights::wait(receiver, flights::MAX_WAIT.min(left / 2)).await;
                let value = cache.get(&key, &mut self.stamp).await;
                if value.is_none()
                    && let Miss::Fill(guard) = self.flights.miss(&key)
                {
                    self.filling.push(guard);
                }
                value
            }
        }
    }

    /// `cache.get` in a stale replay: the fresh entry, else one within its
    /// grace, whose age is noted.
    async fn get_or_stale(&mut self, key: String) -> Option<Vec<u8>> {
        let key = self.scoped(&key);
        let cache = &self.capabilities.cache;
        if let Some(value) = cache.get(&key, &mut self.stamp).await {
            return Some(value);
        }
        let stale = cache.get_stale(&key, None).await?;
        self.ran.stale_age = Some(self.ran.stale_age.unwrap_or_default().max(stale.age));
        Some(stale.value)
    }

    /// Before the request's first database call: completes the stamp with
    /// every tier's clock and seals it, so that each clock an entry of this
    /// request carries was read before its data.
    async fn before_reading_data(&mut self) {
        if !self.stamp.sealed {
            self.capabilities.cache.stamp(&mut self.stamp).await;
            self.stamp.seal();
        }
    }
}

impl db::Host for Invocation {
    async fn query(
        &mut self,
        sql: String,
        params: Vec<db::Value>,
    ) -> Result<db::Rows, db::DbError> {
        self.refused_in_stale_replay()?;
        self.before_reading_data().await;
        let params: Vec<hostdb::Value> = params.into_iter().map(Into::into).collect();
        self.waiting_on_database = true;
        let rows = self.capabilities.db.query(&sql, &params).await;
        self.note(&rows);
        Ok(rows?.into())
    }

    async fn execute(&mut self, sql: String, params: Vec<db::Value>) -> Result<u64, db::DbError> {
        self.refused_in_stale_replay()?;
        self.before_reading_data().await;
        let params: Vec<hostdb::Value> = params.into_iter().map(Into::into).collect();
        self.waiting_on_database = true;
        let affected = self.capabilities.db.execute(&sql, &params).await;
        self.note(&affected);
        Ok(affected?)
    }

    /// Runs the transaction, recording `invalidates` (in the component's
    /// namespace) in the outbox with it; once it has committed, invalidates
    /// them before answering.
    async fn transaction(
        &mut self,
        statements: Vec<db::Statement>,
        invalidates: Vec<String>,
    ) -> Result<Vec<db::Rows>, db::DbError> {
        self.refused_in_stale_replay()?;
        self.before_reading_data().await;
        let statements: Vec<hostdb::Statement> = statements
            .into_iter()
            .map(|s| hostdb::Statement {
                sql: s.sql,
                params: s.params.into_iter().map(Into::into).collect(),
            })
            .collect();
        if invalidates.is_empty() {
            self.waiting_on_database = true;
            let results = self.capabilities.db.transaction(&statements).await;
            self.note(&results);
            return Ok(results?.into_iter().map(Into::into).collect());
        }
        if invalidates.len() > MAX_INVALIDATES
            || invalidates.iter().any(|t| t.len() > MAX_TAG_BYTES)
        {
            return Err(db::DbError::Other(format!(
                "refused: a transaction invalidates at most {MAX_INVALIDATES} tags of at most {MAX_TAG_BYTES} bytes each"
            )));
        }
        // Recorded in the outbox with the writes, so that a relay delivers
        // it should this request not get to (see `crate::relay`).
        let tags: Vec<String> = invalidates.iter().map(|t| self.scoped(t)).collect();
        let invalidation = hostdb::Invalidation::new(tags);
        self.waiting_on_database = true;
        let results = self
            .capabilities
            .db
            .transaction_invalidating(&statements, &invalidation)
            .await;
        self.note(&results);
        let results = results?;
        self.capabilities
            .cache
            .invalidate_tags(&invalidation.tags)
            .await;
        Ok(results.into_iter().map(Into::into).collect())
    }
}

impl Drop for Invocation {
    fn drop(&mut self) {
        self.report_dropped_logs();
    }
}

impl log::Host for Invocation {
    async fn log(&mut self, level: log::Level, message: String) {
        let Some(message) = self.logged.admit(&message) else {
            return;
        };
        let component = self.component.as_str();
        match level {
            log::Level::Trace => tracing::trace!(component, "{message}"),
            log::Level::Debug => tracing::debug!(component, "{message}"),
            log::Level::Info => tracing::info!(component, "{message}"),
            log::Level::Warn => tracing::warn!(component, "{message}"),
            log::Level::Error => tracing::error!(component, "{message}"),
        }
    }
}

impl From<db::Value> for hostdb::Value {
    fn from(v: db::Value) -> Self {
        match v {
            db::Value::Null => Self::Null,
            db::Value::Boolean(b) => Self::Bool(b),
            db::Value::Int(i) => Self::Int(i),
            db::Value::Float(f) => Self::Float(f),
            db::Value::Text(s) => Self::Text(s),
            db::Value::Bytes(b) => Self::Bytes(b),
            db::Value::Json(s) => Self::Json(s),
            db::Value::Timestamp(t) => Self::Timestamp(t),
        }
    }
}

impl From<hostdb::Value> for db::Value {
    fn from(v: hostdb::Value) -> Self {
        match v {
            hostdb::Value::Null => Self::Null,
            hostdb::Value::Bool(b) => Self::Boolean(b),
            hostdb::Value::Int(i) => Self::Int(i),
            hostdb::Value::Float(f) => Self::Float(f),
            hostdb::Value::Text(s) => Self::Text(s),
            hostdb::Value::Bytes(b) => Self::Bytes(b),
            hostdb::Value::Json(s) => Self::Json(s),
            hostdb::Value::Timestamp(t) => Self::Timestamp(t),
        }
    }
}

impl From<hostdb::Rows> for db::Rows {
    fn from(r: hostdb::Rows) -> Self {
        Self {
            columns: r.columns,
            rows: r
                .rows
                .into_iter()
                .map(|values| db::Row {
                    values: values.into_iter().map(Into::into).collect(),
                })
                .collect(),
        }
    }
}

impl From<hostdb::DbError> for db::DbError {
    fn from(e: hostdb::DbError) -> Self {
        match e {
            hostdb::DbError::Unavailable(m) => Self::Unavailable(m),
            hostdb::DbError::Constraint(m) => Self::ConstraintViolation(m),
            hostdb::DbError::Timeout(m) => Self::Timeout(m),
            hostdb::DbError::Other(m) => Self::Other(m),
            refused @ (hostdb::DbError::Refused(_) | hostdb::DbError::TooLarge(_)) => {
                Self::Other(refused.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_logging_is_capped_in_lines_and_bytes_and_what_is_dropped_is_counted() {
        let mut budget = LogBudget::default();
        for _ in 0..LOG_LINES_LIMIT {
            assert_eq!(budget.admit("line"), Some("line"));
        }
        assert_eq!(budget.admit("one too many"), None);
        assert_eq!((budget.dropped_lines, budget.dropped_bytes), (1, 12));

        let mut budget = LogBudget::default();
        let big = "é".repeat(LOG_BYTES_LIMIT);
        let kept = budget.admit(&big).unwrap();
        assert!(kept.len() <= LOG_BYTES_LIMIT && kept.len() > LOG_BYTES_LIMIT - 2);
        assert_eq!(budget.admit("more"), None);
        assert_eq!(budget.dropped_bytes, big.len() - kept.len() + 4);
    }
}
