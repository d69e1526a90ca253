//! The loaded components and the routes to them.
//!
//! Each component sits in an `ArcSwap`: a request takes an `Arc` of the
//! current version when it starts and keeps it to the end, so replacing the
//! pointer (the whole of a swap) never disturbs a request in flight, and
//! every request after the swap gets the new version.
//!
//! **Invariant:** only a component that compiled and type-checked against
//! the `handler` world (a `LoadedComponent`) can be swapped in.

use crate::deployments::DeploymentStore;
use crate::routes::{Manifest, RouteTable};
use crate::runtime::{LoadedComponent, Runtime};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Previous versions kept per component, for rollback.
const HISTORY: usize = 5;
/// Swap messages a slow subscriber may fall behind by before it is told it
/// lagged.
const SWAPS_QUEUED: usize = 64;

/// One component: the version serving and the ones before it.
struct Slot {
    /// The routes it answers.
    routes: Vec<String>,
    /// The cache namespace every version of it uses.
    cache_namespace: Arc<str>,
    /// The stale grace the manifest gives it, for every version.
    stale_grace: Option<std::time::Duration>,
    /// The version serving now.
    current: ArcSwap<LoadedComponent>,
    /// Earlier versions, oldest first; also serializes swaps of this slot.
    previous: Mutex<Vec<Arc<LoadedComponent>>>,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no component named {0:?} in the manifest")]
    UnknownComponent(String),
    #[error("component {0:?} has no previous version to roll back to")]
    NoPreviousVersion(String),
    #[error("could not record the deployment of {0:?}: {1}")]
    Persist(String, std::io::Error),
}

/// A component's state, as listed by the admin API.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    pub name: String,
    pub routes: Vec<String>,
    pub current: VersionInfo,
    /// Newest first.
    pub previous: Vec<VersionInfo>,
}

/// One version of a component.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// Hex SHA-256 of the `.wasm` bytes.
    pub digest: String,
    pub size: usize,
    /// Milliseconds since the Unix epoch.
    pub loaded_at: u64,
    /// Whether its compiled code came from the artifact cache.
    pub compiled_from_cache: bool,
}

impl From<&LoadedComponent> for VersionInfo {
    fn from(c: &LoadedComponent) -> Self {
        Self {
            digest: c.digest.clone(),
            size: c.size,
            loaded_at: c
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            compiled_from_cache: c.from_cache,
        }
    }
}

/// Components by name, and the route table over them.
pub struct Registry {
    /// Path prefix to component name.
    routes: RouteTable,
    /// Name to slot.
    slots: BTreeMap<String, Slot>,
    /// Where deployments are recorded; `None`: they last until shutdown.
    store: Option<DeploymentStore>,
    /// Tells subscribers (cache warming) the name of each component whose
    /// serving version changed.
    swaps: tokio::sync::broadcast::Sender<String>,
}

impl Registry {
    /// Loads every component of the manifest at `path`, or, for a component
    /// deployed before (recorded in `store`), its deployed versions. Fails,
    /// naming the component, if a manifest file it needs is missing or
    /// does not fit the world. Recorded versions that no longer load are
    /// left out (logged), and the newest that loads serves; with none, the
    /// manifest's file.
    pub fn from_manifest(
        runtime: &Runtime,
        path: &Path,
        store: Option<DeploymentStore>,
    ) -> anyhow::Result<Self> {
        let (manifest, dir) = Manifest::load(path)?;
        let mut slots = BTreeMap::new();
        for spec in &manifest.components {
            let cache_namespace: Arc<str> = spec.cache_namespace().into();
            let in_namespace = |mut loaded: LoadedComponent| {
                loaded.cache_namespace = cache_namespace.clone();
                loaded.stale_grace = spec.stale_grace();
                Arc::new(loaded)
            };
            let deployed = match store.as_ref().map(|store| store.load(&spec.name)) {
                Some(Ok(recorded)) => recorded,
                Some(Err(e)) => {
                    tracing::warn!(component = %spec.name, error = %e, "cannot read its recorded deployments; serving the manifest's file");
                    Some(Vec::new())
                }
                None => None,
            };
            let was_deployed = deployed.is_some();
            let mut versions = Vec::new();
            // A recorded version that no longer loads (its bytes altered,
            // or no longer fitting this host's contract) is left out with
            // a warning; the newest that loads serves.
            for crate::deployments::StoredVersion { digest, bytes } in deployed.unwrap_or_default()
            {
                match runtime.load(&spec.name, &bytes) {
                    Ok(loaded) if loaded.digest == digest => versions.push(in_namespace(loaded)),
                    Ok(loaded) => tracing::warn!(
                        component = %spec.name,
                        recorded = %digest,
                        found = %loaded.digest,
                        "a recorded version's bytes do not match its digest; left out"
                    ),
                    Err(e) => tracing::warn!(
                        component = %spec.name,
                        %digest,
                        error = %e,
                        "a recorded version no longer loads; left out"
                    ),
                }
            }
            if was_deployed && versions.is_empty() {
                tracing::warn!(
                    component = %spec.name,
                    "no recorded version loads; serving the manifest's file"
                );
            }
            if versions.is_empty() {
                let file = dir.join(&spec.file);
                let bytes = std::fs::read(&file).with_context(|| {
                    format!("reading component {:?} from {}", spec.name, file.display())
                })?;
                let loaded = runtime.load(&spec.name, &bytes).with_context(|| {
                    format!("loading component {:?} from {}", spec.name, file.display())
                })?;
                versions.push(in_namespace(loaded));
            }
            // `versions` is never empty: the recorded ones that load, or
            // the manifest's file.
            let current = versions.pop().expect("at least one version");
            tracing::info!(
                component = %spec.name,
                digest = %current.digest,
                deployed = was_deployed,
                from_cache = current.from_cache,
                routes = ?spec.routes,
                "component loaded"
            );
            slots.insert(
                spec.name.clone(),
                Slot {
                    routes: spec.routes.clone(),
                    cache_namespace,
                    stale_grace: spec.stale_grace(),
                    current: ArcSwap::new(current),
                    previous: Mutex::new(versions),
                },
            );
        }
        Ok(Self {
            routes: RouteTable::new(&manifest.components),
            slots,
            store,
            swaps: tokio::sync::broadcast::channel(SWAPS_QUEUED).0,
        })
    }

    /// The names of the components whose serving version changes from now
    /// on (deploy or rollback), one message per change.
    pub fn swaps(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.swaps.subscribe()
    }

    /// The version of the component routed for `path` that is serving now.
    pub fn resolve(&self, path: &str) -> Option<Arc<LoadedComponent>> {
        let name = self.routes.resolve(path)?;
        self.slots.get(name).map(|s| s.current.load_full())
    }

    /// The digest of the version of `name` serving now.
    pub fn current_digest(&self, name: &str) -> Option<String> {
        self.slots
            .get(name)
            .map(|s| s.current.load().digest.clone())
    }

    /// Whether a component of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    fn slot(&self, name: &str) -> Result<&Slot, RegistryError> {
        self.slots
            .get(name)
            .ok_or_else(|| RegistryError::UnknownComponent(name.to_string()))
    }

    fn lock(slot: &Slot) -> std::sync::MutexGuard<'_, Vec<Arc<LoadedComponent>>> {
        // A panic while holding the lock leaves a valid list; keep using it.
        slot.previous.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the versions `previous` + `current` of `name`, oldest first,
    /// with their bytes.
    fn persist(
        &self,
        name: &str,
        previous: &[Arc<LoadedComponent>],
        current: &LoadedComponent,
    ) -> Result<(), RegistryError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        for version in previous
            .iter()
            .map(AsRef::as_ref)
            .chain(std::iter::once(current))
        {
            store
                .save_version(name, &version.digest, &version.bytes)
                .map_err(|e| RegistryError::Persist(name.to_string(), e))?;
        }
        let digests: Vec<String> = previous
            .iter()
            .map(|v| v.digest.clone())
            .chain(std::iter::once(current.digest.clone()))
            .collect();
        store
            .save_history(name, &digests)
            .map_err(|e| RegistryError::Persist(name.to_string(), e))
    }

    /// Makes `version` the serving version of `name`; the old one is kept
    /// for rollback. The new state is recorded before the swap, so a failure
    /// to record it changes nothing. Requests in flight finish on the
    /// version they started on.
    pub fn deploy(
        &self,
        name: &str,
        mut version: LoadedComponent,
    ) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        version.cache_namespace = slot.cache_namespace.clone();
        version.stale_grace = slot.stale_grace;
        let mut previous = Self::lock(slot);
        let mut kept: Vec<Arc<LoadedComponent>> = previous.clone();
        kept.push(slot.current.load_full());
        if kept.len() > HISTORY {
            kept.remove(0);
        }
        self.persist(name, &kept, &version)?;
        slot.current.store(Arc::new(version));
        *previous = kept;
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component deployed");
        // No subscriber is not an error.
        let _ = self.swaps.send(name.to_string());
        Ok(self.info(name, slot))
    }

    /// Makes the version before the serving one serve again.
    pub fn rollback(&self, name: &str) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        let mut previous = Self::lock(slot);
        let Some(back) = previous.last().cloned() else {
            return Err(RegistryError::NoPreviousVersion(name.to_string()));
        };
        self.persist(name, &previous[..previous.len() - 1], &back)?;
        previous.pop();
        slot.current.store(back);
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component rolled back");
        let _ = self.swaps.send(name.to_string());
        Ok(self.info(name, slot))
    }

    fn info(&self, name: &str, slot: &Slot) -> ComponentInfo {
        ComponentInfo {
            name: name.to_string(),
            routes: slot.routes.clone(),
            current: VersionInfo::from(slot.current.load().as_ref()),
            previous: Self::lock(slot)
                .iter()
                .rev()
                .map(|v| VersionInfo::from(v.as_ref()))
                .collect(),
        }
    }

    /// Every component, by name.
    pub fn list(&self) -> Vec<ComponentInfo> {
        self.slots
            .iter()
            .map(|(name, slot)| self.info(name, slot))
            .collect()
    }
}
