//! The runtime's public types: what loading and invoking return, and the
//! conversions between the request types of `crate::request` and the
//! generated bindings' types.

use super::Warm;
use super::bindings::{self, marketplace::host::types, v010::marketplace::host::types as v010};
use super::invocation::{Invocation, request_headers};
use super::reuse::Pool;
use crate::request::{CacheStatus, Request, Response, split_target};
use http::HeaderMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};
use wasmtime::Trap;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("component does not fit the handler world: {0}")]
    WrongWorld(String),
}

/// Why a request to a component failed. Each variant is the component's own
/// failure; none affects other requests.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("component ran past its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    #[error("component exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("component trapped: {0}")]
    Trap(String),
    #[error("component returned an invalid status {0}")]
    InvalidStatus(u16),
    #[error("component returned an invalid body: {0}")]
    InvalidBody(String),
    #[error("no instance slot available: {0}")]
    Exhausted(String),
}

/// A compiled, type-checked component, ready to instantiate per request.
pub struct LoadedComponent {
    /// The name it is routed and listed by.
    pub name: String,
    /// The cache namespace its keys and tags live in: its name unless the
    /// manifest gives it a shared one (the registry sets it).
    pub cache_namespace: Arc<str>,
    /// How long its entries are kept after their TTL for stale serving, if
    /// the manifest says (the registry sets it); else the host's default.
    pub stale_grace: Option<std::time::Duration>,
    /// Hex SHA-256 of the `.wasm` bytes it was compiled from.
    pub digest: String,
    /// Size of those bytes.
    pub size: usize,
    /// The `.wasm` bytes, so the version can be recorded on disk.
    pub bytes: Arc<[u8]>,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Whether its compiled code came from the artifact cache.
    pub from_cache: bool,
    /// How many requests one instance may serve (instance reuse), if the
    /// upload or the manifest says (the registry sets it, and may change
    /// it as the fleet's record says); `UNSET`: the host's default. 0 or
    /// 1: a fresh instance per request.
    pub(super) instance_reuse: AtomicU32,
    /// Pre-instantiated with the linker: imports resolved and type-checked.
    pub(super) pre: Pre,
    /// Its idle warm instances (instance reuse); never another version's.
    pub(super) warm: Arc<Pool<Warm>>,
    /// Its request metrics, once its first request has found them.
    pub metrics: crate::metrics::VersionSlot,
}

/// A component pre-instantiated with the contract it was built for.
pub(super) enum Pre {
    Current(bindings::HandlerPre<Invocation>),
    V010(bindings::v010::HandlerPre<Invocation>),
}

/// An instance's `handle` export, in its contract.
pub(super) enum Handler {
    Current(bindings::Handler),
    V010(bindings::v010::Handler),
}

impl Pre {
    /// `pre` as the current contract's handler, else as 0.1.0's; the
    /// current contract's complaint when it is neither.
    pub(super) fn new(
        pre: wasmtime::component::InstancePre<Invocation>,
    ) -> Result<Self, LoadError> {
        match bindings::HandlerPre::new(pre.clone()) {
            Ok(current) => Ok(Pre::Current(current)),
            Err(e) => bindings::v010::HandlerPre::new(pre)
                .map(Pre::V010)
                .map_err(|_| LoadError::WrongWorld(format!("{e:#}"))),
        }
    }

    pub(super) async fn instantiate(
        &self,
        store: &mut wasmtime::Store<Invocation>,
    ) -> wasmtime::Result<Handler> {
        Ok(match self {
            Pre::Current(pre) => Handler::Current(pre.instantiate_async(store).await?),
            Pre::V010(pre) => Handler::V010(pre.instantiate_async(store).await?),
        })
    }
}

impl Handler {
    /// Calls `handle` with `request`. The outer error is the call's (a
    /// trap, an interruption); the inner one a bad response.
    pub(super) async fn call(
        &self,
        store: &mut wasmtime::Store<Invocation>,
        incoming: &Incoming,
    ) -> wasmtime::Result<Result<Response, InvokeError>> {
        let (status, headers, etag, cache, body) = match self {
            Handler::Current(handler) => {
                let r = handler.call_handle(&mut *store, &incoming.request).await?;
                let body = store.data_mut().body(r.body);
                let cache = r.cache.map(|c| match c {
                    types::CacheStatus::Hit => CacheStatus::Hit,
                    types::CacheStatus::Miss => CacheStatus::Miss,
                });
                let body = body.map_err(InvokeError::InvalidBody);
                (r.status, r.headers, r.etag, cache, body)
            }
            Handler::V010(handler) => {
                let r = handler
                    .call_handle(&mut *store, &v010_request(incoming))
                    .await?;
                let headers = r
                    .headers
                    .into_iter()
                    .map(|h| types::Header {
                        name: h.name,
                        value: h.value,
                    })
                    .collect();
                (r.status, headers, None, None, Ok(r.body))
            }
        };
        if !(100..=599).contains(&status) {
            return Ok(Err(InvokeError::InvalidStatus(status)));
        }
        Ok(body.map(|body| Response {
            status,
            headers: headers.into_iter().map(|h| (h.name, h.value)).collect(),
            etag,
            cache,
            body,
        }))
    }
}

/// `incoming` in contract 0.1.0's types, where the request carries its
/// headers and its query percent-decoded into pairs.
fn v010_request(incoming: &Incoming) -> v010::Request {
    let r = &incoming.request;
    let (path, query) = split_target(&r.target);
    v010::Request {
        method: method_name(&r.method).to_string(),
        path: path.to_string(),
        query: form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect(),
        headers: request_headers(&incoming.headers)
            .into_iter()
            .map(|h| v010::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        body: r.body.clone().unwrap_or_default(),
        principal: r.principal.as_ref().map(|p| v010::Principal {
            user_id: p.user_id.clone(),
            workspace_ids: p.workspace_ids.clone(),
        }),
    }
}

/// `LoadedComponent::instance_reuse` when neither the upload nor the
/// manifest says.
pub(super) const UNSET: u32 = u32::MAX;

/// The most requests one instance may be given to serve.
pub const MAX_INSTANCE_REUSE: u32 = 1_000_000;

impl LoadedComponent {
    /// How many requests one instance may serve, if its upload or its
    /// manifest entry says.
    pub fn instance_reuse(&self) -> Option<u32> {
        match self.instance_reuse.load(Ordering::Relaxed) {
            UNSET => None,
            n => Some(n),
        }
    }

    /// Sets what `instance_reuse` says (capped at `MAX_INSTANCE_REUSE`).
    pub fn set_instance_reuse(&self, reuse: Option<u32>) {
        let n = reuse.map_or(UNSET, |n| n.min(MAX_INSTANCE_REUSE));
        self.instance_reuse.store(n, Ordering::Relaxed);
    }

    /// Retires its warm instances: those idle are dropped, and none is
    /// kept after, until `serve_instances`. Called when it stops being
    /// served (a swap).
    pub fn retire_instances(&self) {
        self.warm.retire();
    }

    /// Lets it keep warm instances again (it serves again: a rollback).
    pub fn serve_instances(&self) {
        self.warm.revive();
    }

    /// Idle warm instances it holds now.
    pub fn warm_instances(&self) -> usize {
        self.warm.len()
    }
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The `InvokeError` a failed instantiation or call stands for.
pub(super) fn classify(
    err: wasmtime::Error,
    memory_exceeded: bool,
    deadline: Duration,
    memory_limit: usize,
) -> InvokeError {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        InvokeError::DeadlineExceeded(deadline)
    } else if memory_exceeded {
        InvokeError::MemoryLimit(memory_limit)
    } else if err
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        InvokeError::Exhausted(format!("{err:#}"))
    } else {
        InvokeError::Trap(format!("{err:#}"))
    }
}

/// A request in the current contract's types, and its headers, which a
/// component reads through the `headers` import (shared by the runs of one
/// request: a stale replay, a background refresh).
pub(super) struct Incoming {
    pub(super) request: types::Request,
    pub(super) headers: Arc<HeaderMap>,
}

impl From<Request> for Incoming {
    fn from(r: Request) -> Self {
        Incoming {
            request: types::Request {
                method: method(&r.method),
                target: r.target,
                body: (!r.body.is_empty()).then_some(r.body),
                principal: r.principal.map(|p| types::Principal {
                    user_id: p.user_id,
                    workspace_ids: p.workspace_ids,
                }),
            },
            headers: Arc::new(r.headers),
        }
    }
}

/// `method` as the contract's variant: a case for the common ones.
fn method(method: &http::Method) -> types::Method {
    match *method {
        http::Method::GET => types::Method::Get,
        http::Method::HEAD => types::Method::Head,
        http::Method::POST => types::Method::Post,
        http::Method::PUT => types::Method::Put,
        http::Method::DELETE => types::Method::Delete,
        http::Method::PATCH => types::Method::Patch,
        http::Method::OPTIONS => types::Method::Options,
        _ => types::Method::Other(method.as_str().to_string()),
    }
}

/// The method of `method` as its name, upper-case.
pub(super) fn method_name(method: &types::Method) -> &str {
    match method {
        types::Method::Get => "GET",
        types::Method::Head => "HEAD",
        types::Method::Post => "POST",
        types::Method::Put => "PUT",
        types::Method::Delete => "DELETE",
        types::Method::Patch => "PATCH",
        types::Method::Options => "OPTIONS",
        types::Method::Other(other) => other,
    }
}
