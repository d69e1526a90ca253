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
use crate::versions::{Upload, VersionStore};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Previous versions kept per component, for rollback.
const HISTORY: usize = 5;
/// How long a recorded version that did not load here is left alone
/// before it is tried again.
const UNLOADABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);
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
    /// Whether its versions came from this host's local deployments (to
    /// import into the fleet's record once).
    locally_deployed: bool,
    /// When the serving version started serving here (epoch ms).
    since: std::sync::atomic::AtomicI64,
}

/// Why a registry change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no component named {0:?} in the manifest")]
    UnknownComponent(String),
    #[error("component {0:?} has no previous version to roll back to")]
    NoPreviousVersion(String),
    #[error("component {0:?} keeps no version {1:?}")]
    UnknownVersion(String, String),
    #[error("could not record the deployment of {0:?}: {1}")]
    Persist(String, std::io::Error),
    #[error("could not record the change of {0:?} in the database: {1}")]
    Record(String, crate::db::DbError),
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
    /// After a change recorded in the database: the digest now active
    /// fleet-wide (`current` is what this host serves, which follows it
    /// at its next convergence if it could not at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
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
    /// The fleet's record of versions, and the runtime to load what it
    /// names; `None`: deployments are this host's alone.
    fleet: Option<(VersionStore, Arc<Runtime>)>,
    /// Recorded versions (`name/digest`) that did not load here, and
    /// when: not tried again before `UNLOADABLE_RETRY` (their bytes may be
    /// stored again, repaired, by a new upload of the same build).
    unloadable: Mutex<HashMap<String, std::time::Instant>>,
    /// One convergence at a time.
    converging: tokio::sync::Mutex<()>,
    /// Whether the last convergence failed.
    reading_fails: std::sync::atomic::AtomicBool,
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
                    locally_deployed: was_deployed,
                    since: crate::now_ms().into(),
                },
            );
        }
        Ok(Self {
            routes: RouteTable::new(&manifest.components),
            slots,
            store,
            swaps: tokio::sync::broadcast::channel(SWAPS_QUEUED).0,
            fleet: None,
            unloadable: Mutex::default(),
            converging: tokio::sync::Mutex::new(()),
            reading_fails: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// This registry, its deployments recorded in (and converging on)
    /// `fleet`, loading what it names with `runtime`.
    pub fn with_fleet(mut self, fleet: VersionStore, runtime: Arc<Runtime>) -> Self {
        self.fleet = Some((fleet, runtime));
        self
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

    /// The fleet's record, if deployments are recorded in the database.
    pub fn fleet(&self) -> Option<&VersionStore> {
        self.fleet.as_ref().map(|(store, _)| store)
    }

    /// What this host serves: component name to `{"digest", "since"}`.
    pub fn serving(&self) -> serde_json::Value {
        self.slots
            .iter()
            .map(|(name, slot)| {
                let state = serde_json::json!({
                    "digest": slot.current.load().digest,
                    "since": slot.since.load(Ordering::Relaxed),
                });
                (name.clone(), state)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// Makes the kept version `digest` of `name` serve again, fleet-wide.
    pub async fn activate(&self, name: &str, digest: &str) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        let Some((fleet, _)) = &self.fleet else {
            return Err(RegistryError::UnknownVersion(name.into(), digest.into()));
        };
        let record = |e| RegistryError::Record(name.to_string(), e);
        let _one = self.converging.lock().await;
        if !fleet.activate(name, digest).await.map_err(record)? {
            return Err(RegistryError::UnknownVersion(name.into(), digest.into()));
        }
        if let Err(e) = self.converge_one(name, digest).await {
            tracing::warn!(component = name, error = %e, "activated in the database; this host follows at its next convergence");
        }
        Ok(ComponentInfo {
            active: Some(digest.to_string()),
            ..self.info(name, slot)
        })
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

    /// Makes `version` (validated: compiled and checked against the world)
    /// the serving version of `name`; the old one is kept for rollback. The
    /// change is recorded first (in the fleet's record, which tells every
    /// host, else in the local deployments), so a failure to record it
    /// changes nothing. Requests in flight finish on the version they
    /// started on.
    pub async fn deploy(
        &self,
        name: &str,
        mut version: LoadedComponent,
        note: &str,
    ) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        version.cache_namespace = slot.cache_namespace.clone();
        version.stale_grace = slot.stale_grace;
        let Some((fleet, _)) = &self.fleet else {
            return self.deploy_local(name, version);
        };
        // No convergence meanwhile: it would load what this swaps in.
        let _one = self.converging.lock().await;
        let serving = slot.current.load_full();
        fleet
            .deploy(
                name,
                Upload {
                    digest: &serving.digest,
                    bytes: &serving.bytes,
                    note: "serving before the first deploy",
                },
                Upload {
                    digest: &version.digest,
                    bytes: &version.bytes,
                    note,
                },
            )
            .await
            .map_err(|e| RegistryError::Record(name.to_string(), e))?;
        // The same bytes again: nothing to swap, but still a deploy (its
        // subscribers, such as warming, run).
        if !self.swap_to(name, slot, Arc::new(version)) {
            let _ = self.swaps.send(name.to_string());
        }
        self.mirror(name, slot).await;
        Ok(ComponentInfo {
            active: Some(slot.current.load().digest.clone()),
            ..self.info(name, slot)
        })
    }

    fn deploy_local(
        &self,
        name: &str,
        version: LoadedComponent,
    ) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        let mut previous = Self::lock(slot);
        let mut kept: Vec<Arc<LoadedComponent>> = previous.clone();
        kept.push(slot.current.load_full());
        if kept.len() > HISTORY {
            kept.remove(0);
        }
        self.persist(name, &kept, &version)?;
        slot.current.store(Arc::new(version));
        slot.since.store(crate::now_ms(), Ordering::Relaxed);
        *previous = kept;
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component deployed");
        // No subscriber is not an error.
        let _ = self.swaps.send(name.to_string());
        Ok(self.info(name, slot))
    }

    /// Makes the version before the serving one serve again (fleet-wide,
    /// with a fleet record).
    pub async fn rollback(&self, name: &str) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        let Some((fleet, _)) = &self.fleet else {
            return self.rollback_local(name);
        };
        let record = |e| RegistryError::Record(name.to_string(), e);
        let _one = self.converging.lock().await;
        let Some(digest) = fleet.rollback(name).await.map_err(record)? else {
            return Err(RegistryError::NoPreviousVersion(name.to_string()));
        };
        // Recorded: the fleet rolls back whatever happens here; a swap
        // that fails now is done by the next convergence.
        if let Err(e) = self.converge_one(name, &digest).await {
            tracing::warn!(component = name, error = %e, "rolled back in the database; this host follows at its next convergence");
        }
        Ok(ComponentInfo {
            active: Some(digest),
            ..self.info(name, slot)
        })
    }

    fn rollback_local(&self, name: &str) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        let mut previous = Self::lock(slot);
        let Some(back) = previous.last().cloned() else {
            return Err(RegistryError::NoPreviousVersion(name.to_string()));
        };
        self.persist(name, &previous[..previous.len() - 1], &back)?;
        previous.pop();
        slot.current.store(back);
        slot.since.store(crate::now_ms(), Ordering::Relaxed);
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component rolled back");
        let _ = self.swaps.send(name.to_string());
        Ok(self.info(name, slot))
    }

    /// Makes `version` serve `name` here, after the fleet's record changed:
    /// the old version joins the kept ones (without another copy of
    /// `version`), and the local deployments follow (a failure there is
    /// only logged: the record in the database is the truth).
    fn swap_to(&self, name: &str, slot: &Slot, version: Arc<LoadedComponent>) -> bool {
        let mut previous = Self::lock(slot);
        let current = slot.current.load_full();
        if current.digest == version.digest {
            return false;
        }
        let mut kept: Vec<Arc<LoadedComponent>> = previous
            .iter()
            .filter(|v| v.digest != version.digest)
            .cloned()
            .collect();
        kept.push(current);
        while kept.len() > HISTORY {
            kept.remove(0);
        }
        if let Err(e) = self.persist(name, &kept, &version) {
            tracing::warn!(component = name, error = %e, "the local copy of the deployments is not up to date");
        }
        slot.current.store(version);
        slot.since.store(crate::now_ms(), Ordering::Relaxed);
        *previous = kept;
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component swapped");
        let _ = self.swaps.send(name.to_string());
        true
    }

    /// Makes the versions `name` keeps here follow the record's history
    /// (those of it this host holds, in its order), so that the list and
    /// the local copy show what a rollback would return to.
    async fn mirror(&self, name: &str, slot: &Slot) {
        let Some((fleet, _)) = &self.fleet else {
            return;
        };
        let Ok(history) = fleet.history(name).await else {
            return;
        };
        let current = slot.current.load_full();
        if history.last().map(|r| r.digest.as_str()) != Some(current.digest.as_str()) {
            // Changed again meanwhile: the next convergence mirrors it.
            return;
        }
        let mut previous = Self::lock(slot);
        let kept: Vec<Arc<LoadedComponent>> = history[..history.len() - 1]
            .iter()
            .filter_map(|r| previous.iter().find(|v| v.digest == r.digest).cloned())
            .collect();
        if let Err(e) = self.persist(name, &kept, &current) {
            tracing::warn!(component = name, error = %e, "the local copy of the deployments is not up to date");
        }
        *previous = kept;
    }

    /// Brings every component to the version the fleet's record says is
    /// active (first importing this host's local deployments of a
    /// component the record does not know). A version that does not load
    /// here is logged once and skipped: the serving one goes on serving.
    pub async fn converge(&self) -> Result<(), crate::db::DbError> {
        let Some((fleet, _)) = &self.fleet else {
            return Ok(());
        };
        let _one = self.converging.lock().await;
        let mut active = fleet.active().await?;
        for (name, slot) in &self.slots {
            if active.contains_key(name) || !slot.locally_deployed {
                continue;
            }
            let versions: Vec<Arc<LoadedComponent>> = Self::lock(slot)
                .iter()
                .cloned()
                .chain(std::iter::once(slot.current.load_full()))
                .collect();
            let uploads: Vec<Upload<'_>> = versions
                .iter()
                .map(|v| Upload {
                    digest: &v.digest,
                    bytes: &v.bytes,
                    note: "imported from a host's local deployments",
                })
                .collect();
            match fleet.import(name, &uploads).await {
                Ok(true) => {
                    tracing::info!(component = %name, versions = uploads.len(), "local deployments imported into the database");
                    active = fleet.active().await?;
                }
                Ok(false) => active = fleet.active().await?,
                Err(e) => {
                    tracing::warn!(component = %name, error = %e, "local deployments not imported into the database; trying again later")
                }
            }
        }
        for (name, digest) in active {
            if self.slots.contains_key(&name) {
                self.converge_one(&name, &digest).await?;
            }
        }
        Ok(())
    }

    /// `converge`, given up past `bound` (a database that hangs); a failure
    /// is logged when it starts and when it ends.
    pub async fn converge_within(&self, bound: std::time::Duration) {
        let outcome = match tokio::time::timeout(bound, self.converge()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {bound:?}")),
        };
        let was_failing = self
            .reading_fails
            .swap(outcome.is_err(), std::sync::atomic::Ordering::Relaxed);
        match outcome {
            Ok(()) if was_failing => tracing::info!("deployed versions readable again"),
            Err(e) if !was_failing => {
                tracing::warn!(error = %e, "cannot read the deployed versions; serving what this host has")
            }
            _ => {}
        }
    }

    /// Makes `digest` (recorded for `name`) serve here, loading it from
    /// the record unless this host keeps it.
    async fn converge_one(&self, name: &str, digest: &str) -> Result<(), crate::db::DbError> {
        let Ok(slot) = self.slot(name) else {
            return Ok(());
        };
        if slot.current.load().digest == digest {
            return Ok(());
        }
        match self.obtain(name, slot, digest).await? {
            Some(version) => {
                self.swap_to(name, slot, version);
                self.mirror(name, slot).await;
            }
            None => self.fall_back(name, slot, digest).await?,
        }
        Ok(())
    }

    /// The active version `active` of `name` does not load here: serve the
    /// newest recorded version that does, unless this host serves it
    /// already (or none loads: it goes on serving what it serves).
    async fn fall_back(
        &self,
        name: &str,
        slot: &Slot,
        active: &str,
    ) -> Result<(), crate::db::DbError> {
        let Some((fleet, _)) = &self.fleet else {
            return Ok(());
        };
        let history = fleet.history(name).await?;
        let current = slot.current.load().digest.clone();
        for recorded in history.iter().rev().filter(|r| r.digest != active) {
            if recorded.digest == current {
                return Ok(());
            }
            if let Some(version) = self.obtain(name, slot, &recorded.digest).await? {
                tracing::warn!(component = name, active, serving = %recorded.digest, "the active version does not load on this host; serving the newest recorded version that does");
                self.swap_to(name, slot, version);
                return Ok(());
            }
        }
        Ok(())
    }

    /// The recorded version `digest` of `name`, from the versions this
    /// host keeps, else loaded from the record; `None` if it does not load
    /// (or its bytes are gone): logged, and not tried again.
    async fn obtain(
        &self,
        name: &str,
        slot: &Slot,
        digest: &str,
    ) -> Result<Option<Arc<LoadedComponent>>, crate::db::DbError> {
        let Some((fleet, runtime)) = &self.fleet else {
            return Ok(None);
        };
        let kept = Self::lock(slot)
            .iter()
            .rev()
            .find(|v| v.digest == digest)
            .cloned();
        if kept.is_some() {
            return Ok(kept);
        }
        let key = format!("{name}/{digest}");
        if self.unloadable_contains(&key) {
            return Ok(None);
        }
        let Some(bytes) = fleet.bytes(name, digest).await? else {
            // Rolled back meanwhile: the next pass reads the record again.
            tracing::debug!(
                component = name,
                digest,
                "a recorded version's bytes are gone; reading the record again later"
            );
            return Ok(None);
        };
        let runtime = runtime.clone();
        let compile_name = name.to_string();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&compile_name, &bytes)).await;
        let why = match loaded {
            Ok(Ok(mut loaded)) if loaded.digest == digest => {
                loaded.cache_namespace = slot.cache_namespace.clone();
                loaded.stale_grace = slot.stale_grace;
                return Ok(Some(Arc::new(loaded)));
            }
            Ok(Ok(loaded)) => format!(
                "its bytes do not match its digest (found {})",
                loaded.digest
            ),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("loading it failed: {e}"),
        };
        tracing::error!(component = name, digest, reason = %why, "a recorded version does not load on this host; left out, tried again in a minute");
        self.mark_unloadable(key);
        Ok(None)
    }

    fn unloadable_contains(&self, key: &str) -> bool {
        self.unloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|at| at.elapsed() < UNLOADABLE_RETRY)
    }

    /// Tries every recorded version again at the next convergence: a
    /// deploy was announced, which may have stored repaired bytes.
    pub(crate) fn forget_unloadable(&self) {
        self.unloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn mark_unloadable(&self, key: String) {
        self.unloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, std::time::Instant::now());
    }

    fn info(&self, name: &str, slot: &Slot) -> ComponentInfo {
        ComponentInfo {
            active: None,
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

/// Converges `registry` every `every` until it is dropped; a pass that
/// fails (the database down) is tried again at the next.
pub fn spawn_reconcile(registry: &Arc<Registry>, every: std::time::Duration) {
    let weak = Arc::downgrade(registry);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(registry) = weak.upgrade() else {
                return;
            };
            registry
                .converge_within(crate::versions::CONVERGE_BOUND)
                .await;
        }
    });
}
