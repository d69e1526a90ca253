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
use crate::versions::{CanaryRun, Upload, VersionStore};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Previous versions kept per component, for rollback.
const HISTORY: usize = 5;
/// How long a recorded version that did not load here is left alone
/// before it is tried again.
const UNLOADABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(60);
/// Swap messages a slow subscriber may fall behind by before it is told it
/// lagged.
const SWAPS_QUEUED: usize = 64;

/// Requests a canary must have served on a host before that host judges
/// it (see `Canary::failing`).
pub const CANARY_MIN_REQUESTS: u64 = 50;
/// How many percentage points a canary's 5xx rate must exceed the stable
/// version's by, besides being at least twice it, to be aborted.
const CANARY_MARGIN_POINTS: u64 = 5;
/// How many standard errors a canary's 5xx rate must exceed the stable
/// version's by to be aborted.
const CANARY_MIN_Z: f64 = 3.0;

/// A version served to a share of a component's requests beside the
/// serving one, and what each of the two answered on this host since it
/// started.
pub struct Canary {
    pub version: Arc<LoadedComponent>,
    /// Percent of requests, 1 to 99.
    pub share: u8,
    /// When this run started (epoch ms, as recorded).
    started_at: i64,
    requests: AtomicU64,
    failed: AtomicU64,
    stable_requests: AtomicU64,
    stable_failed: AtomicU64,
    /// Set once, when this host judged it failing.
    tripped: std::sync::atomic::AtomicBool,
}

impl Canary {
    fn new(version: Arc<LoadedComponent>, run: &CanaryRun) -> Self {
        Self {
            version,
            share: run.share,
            started_at: run.started_at,
            requests: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stable_requests: AtomicU64::new(0),
            stable_failed: AtomicU64::new(0),
            tripped: false.into(),
        }
    }

    /// Whether a request of `client` (its bearer token or client id, if
    /// it has one) goes to the canary: the same answer for the same
    /// client on every host (a hash of the canary's digest and the key),
    /// a random one per request without a key.
    fn takes(&self, client: Option<&[u8]>) -> bool {
        use sha2::Digest as _;
        use std::hash::BuildHasher as _;
        static SEED: std::sync::OnceLock<std::collections::hash_map::RandomState> =
            std::sync::OnceLock::new();
        static DRAWS: AtomicU64 = AtomicU64::new(0);
        let roll = match client {
            Some(key) => {
                let hash = sha2::Sha256::new()
                    .chain_update(self.version.digest.as_bytes())
                    .chain_update(key)
                    .finalize();
                let mut first = [0u8; 8];
                first.copy_from_slice(&hash[..8]);
                u64::from_le_bytes(first)
            }
            None => SEED
                .get_or_init(Default::default)
                .hash_one(DRAWS.fetch_add(1, Ordering::Relaxed)),
        };
        roll % 100 < u64::from(self.share)
    }

    /// Counts a request's status, to the canary or to the stable version.
    fn count(&self, to_canary: bool, status: u16) {
        let (requests, failed) = if to_canary {
            (&self.requests, &self.failed)
        } else {
            (&self.stable_requests, &self.stable_failed)
        };
        requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its counts, if they show it failing (`CanaryCounts::clearly_worse`).
    fn failing(&self) -> Option<CanaryCounts> {
        let counts = self.counts();
        counts.clearly_worse().then_some(counts)
    }

    /// The run it serves.
    fn run(&self) -> CanaryRun {
        CanaryRun {
            digest: self.version.digest.clone(),
            share: self.share,
            started_at: self.started_at,
        }
    }

    fn counts(&self) -> CanaryCounts {
        CanaryCounts {
            requests: self.requests.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            stable_requests: self.stable_requests.load(Ordering::Relaxed),
            stable_failed: self.stable_failed.load(Ordering::Relaxed),
        }
    }
}

/// What a canary and the stable version answered on this host since the
/// canary started: requests, and those that failed with a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryCounts {
    pub requests: u64,
    pub failed: u64,
    pub stable_requests: u64,
    pub stable_failed: u64,
}

impl CanaryCounts {
    /// The automatic abort's rule: after at least `CANARY_MIN_REQUESTS`
    /// canary requests on this host, the canary's 5xx rate is at least
    /// twice the stable version's over the same time, exceeds it by at
    /// least `CANARY_MARGIN_POINTS` percentage points, and by at least
    /// `CANARY_MIN_Z` standard errors (a two-proportion z-test, so that
    /// chance alone, checked after every request, rarely aborts a canary
    /// as good as the stable version).
    pub fn clearly_worse(&self) -> bool {
        let (n, f) = (u128::from(self.requests), u128::from(self.failed));
        // A stable version with no requests yet counts as failing none.
        let (m, g) = (
            u128::from(self.stable_requests.max(1)),
            u128::from(self.stable_failed),
        );
        if n < u128::from(CANARY_MIN_REQUESTS) || f == 0 {
            return false;
        }
        // In integers: f/n >= 2 g/m, and 100 f/n >= 100 g/m + margin.
        let twice = f * m >= 2 * g * n;
        let margin = 100 * f * m >= (100 * g + u128::from(CANARY_MARGIN_POINTS) * m) * n;
        twice && margin && {
            let (n, f, m, g) = (n as f64, f as f64, m as f64, g as f64);
            let pooled = (f + g) / (n + m);
            let error = (pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m)).sqrt();
            (f / n - g / m) >= CANARY_MIN_Z * error
        }
    }
}

/// A component's canary on this host, as listed.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryInfo {
    pub digest: String,
    pub share: u8,
    /// Since it started, on this host.
    pub counts: CanaryCounts,
}

/// The version a request goes to, and the canary it was weighed against.
pub struct Routed {
    /// The version it goes to; every version of a component is loaded
    /// under the component's name.
    pub component: Arc<LoadedComponent>,
    /// The canary running when it was routed, and whether it took it.
    canary: Option<(Arc<Canary>, bool)>,
}

/// One component: the version serving and the ones before it.
struct Slot {
    /// The routes it answers.
    routes: Vec<String>,
    /// The cache namespace every version of it uses.
    cache_namespace: Arc<str>,
    /// The stale grace the manifest gives it, for every version.
    stale_grace: Option<std::time::Duration>,
    /// The instance reuse the manifest gives it, for every version.
    instance_reuse: Option<u32>,
    /// The version serving now.
    current: ArcSwap<LoadedComponent>,
    /// Earlier versions, oldest first; also serializes swaps of this slot.
    previous: Mutex<Vec<Arc<LoadedComponent>>>,
    /// Whether its versions came from this host's local deployments (to
    /// import into the fleet's record once).
    locally_deployed: bool,
    /// When the serving version started serving here (epoch ms).
    since: std::sync::atomic::AtomicI64,
    /// The canary, if one runs.
    canary: arc_swap::ArcSwapOption<Canary>,
    /// A canary run this host judged failing, and why, until its abort is
    /// recorded (the database may be down): it is not served here again,
    /// and its abort is recorded at the next convergence.
    refused: Mutex<Option<(CanaryRun, String)>>,
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
    #[error("component {0:?} has no canary running")]
    NoCanary(String),
    #[error("that version of {0:?} is its active version already; a canary must be another")]
    CanaryIsActive(String),
    #[error("canaries need the fleet's record in the database")]
    NoFleet,
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
    /// The canary this host serves beside `current`, if one runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryInfo>,
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
    /// Requests one instance of it may serve, as its upload or manifest
    /// entry says (absent: the host's `--instance-reuse`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_reuse: Option<u32>,
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
            instance_reuse: c.instance_reuse(),
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
                loaded.set_instance_reuse(spec.instance_reuse);
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
                    instance_reuse: spec.instance_reuse,
                    current: ArcSwap::new(current),
                    previous: Mutex::new(versions),
                    locally_deployed: was_deployed,
                    since: crate::now_ms().into(),
                    canary: arc_swap::ArcSwapOption::empty(),
                    refused: Mutex::new(None),
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

    /// The version the request of `client` (its bearer token or client
    /// id, if it has one) for `path` goes to: the serving one, or the
    /// canary for its share of requests. Its status goes back to
    /// `observe`.
    ///
    /// `client` is asked only while a canary runs: finding a header by a
    /// name that is not a standard one costs a hash of it, which a request
    /// to a component without a canary need not pay.
    pub fn route<'c>(
        &self,
        path: &str,
        client: impl FnOnce() -> Option<&'c [u8]>,
    ) -> Option<Routed> {
        let name = self.routes.resolve(path)?;
        let slot = self.slots.get(name)?;
        let canary = slot.canary.load_full();
        let current = slot.current.load_full();
        Some(match canary {
            None => Routed {
                component: current,
                canary: None,
            },
            Some(canary) => {
                let takes = canary.takes(client());
                Routed {
                    component: if takes {
                        canary.version.clone()
                    } else {
                        current
                    },
                    canary: Some((canary, takes)),
                }
            }
        })
    }

    /// Counts the answer to a request `route`d while a canary ran; a
    /// canary that the counts show failing (`Canary::failing`) stops
    /// being served here at once, and its abort is recorded fleet-wide.
    pub fn observe(self: &Arc<Self>, routed: &Routed, status: u16) {
        let Some((canary, to_canary)) = &routed.canary else {
            return;
        };
        canary.count(*to_canary, status);
        if !*to_canary {
            return;
        }
        let Some(counts) = canary.failing() else {
            return;
        };
        if canary.tripped.swap(true, Ordering::Relaxed) {
            return;
        }
        let name = routed.component.name.as_str();
        let Ok(slot) = self.slot(name) else {
            return;
        };
        let run = canary.run();
        let reason = format!(
            "aborted automatically: {} of its {} requests failed (5xx) against {} of the stable version's {}",
            counts.failed, counts.requests, counts.stable_failed, counts.stable_requests
        );
        tracing::warn!(component = name, digest = %run.digest, %reason, "canary failing; its share returns to the stable version");
        // Off here at once, whatever the database does.
        let ended = slot
            .canary
            .compare_and_swap(&Some(canary.clone()), None::<Arc<Canary>>);
        if ended.as_ref().is_some_and(|c| Arc::ptr_eq(c, canary)) {
            Self::retire_canary(slot, canary);
        }
        *Self::refusing(slot) = Some((run.clone(), reason.clone()));
        let registry = self.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let _one = registry.converging.lock().await;
            registry.record_abort(&name, &run, &reason).await;
        });
    }

    fn refusing(slot: &Slot) -> std::sync::MutexGuard<'_, Option<(CanaryRun, String)>> {
        slot.refused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the abort of the canary run `run` of `name` for `reason`
    /// (only that run: a canary started since is left alone); a failure
    /// is logged, and tried again at the next convergence.
    async fn record_abort(&self, name: &str, run: &CanaryRun, reason: &str) {
        let Some((fleet, _)) = &self.fleet else {
            return;
        };
        let digest = run.digest.as_str();
        match fleet.abort(name, Some(run), reason).await {
            Ok(ended) => {
                if ended.is_some() {
                    tracing::info!(component = name, digest, "canary abort recorded");
                }
                // That run runs no more, whoever ended it.
                if let Ok(slot) = self.slot(name) {
                    let mut refused = Self::refusing(slot);
                    if refused.as_ref().is_some_and(|(r, _)| r == run) {
                        *refused = None;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(component = name, digest, error = %e, "canary abort not recorded; not served here, recorded at the next convergence")
            }
        }
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
                    "canary": slot.canary.load().as_ref().map(|c| c.version.digest.clone()),
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
        // The activation ended any canary.
        Self::set_canary(slot, None);
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

    /// Makes `version` the serving version of `slot`; the one it replaces
    /// keeps no warm instances (instance reuse) from now on.
    fn serve(slot: &Slot, version: Arc<LoadedComponent>) {
        version.serve_instances();
        let old = slot.current.swap(version);
        if old.digest != slot.current.load().digest {
            old.retire_instances();
        }
    }

    /// Makes `canary` the canary of `slot` (or none); the version of the
    /// one it replaces keeps no warm instances from now on.
    fn set_canary(slot: &Slot, canary: Option<Arc<Canary>>) {
        if let Some(new) = &canary {
            new.version.serve_instances();
        }
        if let Some(ended) = slot.canary.swap(canary) {
            Self::retire_canary(slot, &ended);
        }
    }

    /// Retires the warm instances of an ended canary's version, unless that
    /// version serves (promoted) or is the canary again.
    fn retire_canary(slot: &Slot, ended: &Canary) {
        let digest = &ended.version.digest;
        let serving = slot.current.load().digest == *digest
            || slot
                .canary
                .load()
                .as_ref()
                .is_some_and(|c| c.version.digest == *digest);
        if !serving {
            ended.version.retire_instances();
        }
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
        instance_reuse: Option<u32>,
    ) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        // Named as its slot whatever it was compiled as: a canary's abort
        // finds its slot by it (`observe`).
        version.name = name.to_string();
        version.cache_namespace = slot.cache_namespace.clone();
        version.stale_grace = slot.stale_grace;
        version.set_instance_reuse(instance_reuse.or(slot.instance_reuse));
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
                    instance_reuse: None,
                },
                Upload {
                    digest: &version.digest,
                    bytes: &version.bytes,
                    note,
                    instance_reuse,
                },
            )
            .await
            .map_err(|e| RegistryError::Record(name.to_string(), e))?;
        // The deploy ended any canary.
        Self::set_canary(slot, None);
        // The same bytes again: nothing to swap, but still a deploy (its
        // subscribers, such as warming, run), and its instance reuse is
        // the one this upload recorded.
        let reuse = version.instance_reuse();
        if !self.swap_to(name, slot, Arc::new(version)) {
            slot.current.load().set_instance_reuse(reuse);
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
        Self::serve(slot, Arc::new(version));
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
        // The rollback ended any canary.
        Self::set_canary(slot, None);
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
        Self::serve(slot, back);
        slot.since.store(crate::now_ms(), Ordering::Relaxed);
        drop(previous);
        tracing::info!(component = name, digest = %slot.current.load().digest, "component rolled back");
        let _ = self.swaps.send(name.to_string());
        Ok(self.info(name, slot))
    }

    /// Makes `version` (validated) the canary of `name`, fleet-wide:
    /// served to `share` percent of requests (1 to 99) beside the serving
    /// version, replacing a running canary. Recorded first, as `deploy`.
    pub async fn deploy_canary(
        &self,
        name: &str,
        mut version: LoadedComponent,
        note: &str,
        share: u8,
        instance_reuse: Option<u32>,
    ) -> Result<ComponentInfo, RegistryError> {
        let slot = self.slot(name)?;
        // Named as its slot whatever it was compiled as: a canary's abort
        // finds its slot by it (`observe`).
        version.name = name.to_string();
        version.cache_namespace = slot.cache_namespace.clone();
        version.stale_grace = slot.stale_grace;
        version.set_instance_reuse(instance_reuse.or(slot.instance_reuse));
        let Some((fleet, _)) = &self.fleet else {
            return Err(RegistryError::NoFleet);
        };
        let _one = self.converging.lock().await;
        let serving = slot.current.load_full();
        let run = fleet
            .canary(
                name,
                Upload {
                    digest: &serving.digest,
                    bytes: &serving.bytes,
                    note: "serving before the first deploy",
                    instance_reuse: None,
                },
                Upload {
                    digest: &version.digest,
                    bytes: &version.bytes,
                    note,
                    instance_reuse,
                },
                share,
            )
            .await
            .map_err(|e| RegistryError::Record(name.to_string(), e))?;
        let Some(run) = run else {
            return Err(RegistryError::CanaryIsActive(name.to_string()));
        };
        tracing::info!(component = name, digest = %version.digest, share, "canary started");
        Self::set_canary(slot, Some(Arc::new(Canary::new(Arc::new(version), &run))));
        Ok(ComponentInfo {
            active: Some(serving.digest.clone()),
            ..self.info(name, slot)
        })
    }

    /// The slot of `name` and the fleet's record, for a change of its
    /// canary (without a record there is none).
    fn canary_slot(&self, name: &str) -> Result<(&Slot, &VersionStore), RegistryError> {
        let slot = self.slot(name)?;
        match &self.fleet {
            Some((fleet, _)) => Ok((slot, fleet)),
            None => Err(RegistryError::NoCanary(name.to_string())),
        }
    }

    /// Makes the running canary of `name` its serving version, fleet-wide.
    pub async fn promote(&self, name: &str) -> Result<ComponentInfo, RegistryError> {
        let (slot, fleet) = self.canary_slot(name)?;
        let _one = self.converging.lock().await;
        let Some(digest) = fleet
            .promote(name)
            .await
            .map_err(|e| RegistryError::Record(name.to_string(), e))?
        else {
            return Err(RegistryError::NoCanary(name.to_string()));
        };
        // The canary's version serves all requests, then the canary goes.
        if let Err(e) = self.converge_one(name, &digest).await {
            tracing::warn!(component = name, error = %e, "promoted in the database; this host follows at its next convergence");
        }
        if slot.current.load().digest == digest {
            Self::set_canary(slot, None);
        }
        Ok(ComponentInfo {
            active: Some(digest),
            ..self.info(name, slot)
        })
    }

    /// Ends the running canary of `name`, fleet-wide: its share returns
    /// to the serving version.
    pub async fn abort(&self, name: &str) -> Result<ComponentInfo, RegistryError> {
        let (slot, fleet) = self.canary_slot(name)?;
        let _one = self.converging.lock().await;
        if fleet
            .abort(name, None, "aborted by an operator")
            .await
            .map_err(|e| RegistryError::Record(name.to_string(), e))?
            .is_none()
        {
            return Err(RegistryError::NoCanary(name.to_string()));
        }
        tracing::info!(component = name, "canary aborted");
        Self::set_canary(slot, None);
        Ok(self.info(name, slot))
    }

    /// Makes the canary of `name` here what the record says: the run
    /// `running`, or none. A run this host refused (judged failing) is not
    /// served again; its abort is recorded now if it was not.
    async fn converge_canary(
        &self,
        name: &str,
        slot: &Slot,
        running: Option<&CanaryRun>,
    ) -> Result<(), crate::db::DbError> {
        // None, or the version serving already (promoted: the record was
        // read between the two reads of `converge`).
        let Some(run) = running.filter(|r| r.digest != slot.current.load().digest) else {
            *Self::refusing(slot) = None;
            if let Some(ended) = slot.canary.swap(None) {
                Self::retire_canary(slot, &ended);
                tracing::info!(component = name, "canary ended");
            }
            return Ok(());
        };
        let refused = Self::refusing(slot).clone();
        if let Some((_, reason)) = refused.filter(|(r, _)| r == run) {
            Self::set_canary(slot, None);
            self.record_abort(name, run, &reason).await;
            return Ok(());
        }
        if slot
            .canary
            .load()
            .as_ref()
            .is_some_and(|serving| serving.run() == *run)
        {
            return Ok(());
        }
        if let Some(version) = self.obtain(name, slot, &run.digest).await? {
            tracing::info!(component = name, digest = %run.digest, share = run.share, "canary serving");
            Self::set_canary(slot, Some(Arc::new(Canary::new(version, run))));
        }
        Ok(())
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
        Self::serve(slot, version);
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
        // One snapshot of both: a promote is seen whole or not at all.
        let crate::versions::Record {
            mut active,
            canaries,
        } = fleet.record().await?;
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
                    instance_reuse: None,
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
        for (name, slot) in &self.slots {
            self.converge_canary(name, slot, canaries.get(name)).await?;
        }
        if let Err(e) = self.follow_instance_reuse(fleet).await {
            tracing::warn!(error = %e, "cannot read the versions' instance reuse; trying again at the next convergence");
        }
        self.collect_artifacts();
        Ok(())
    }

    /// Gives every version held here the instance reuse the record says
    /// it was uploaded with (else its manifest entry's): versions loaded
    /// from the local copy at start, or kept from before, learn it here.
    async fn follow_instance_reuse(&self, fleet: &VersionStore) -> Result<(), crate::db::DbError> {
        let recorded = fleet.instance_reuse().await?;
        for (name, slot) in &self.slots {
            let canary = slot.canary.load_full().map(|c| c.version.clone());
            let held: Vec<Arc<LoadedComponent>> = Self::lock(slot)
                .iter()
                .cloned()
                .chain([slot.current.load_full()])
                .chain(canary)
                .collect();
            for version in held {
                let key = (name.clone(), version.digest.clone());
                let reuse = recorded.get(&key).copied().or(slot.instance_reuse);
                version.set_instance_reuse(reuse);
            }
        }
        Ok(())
    }

    /// Deletes the compiled artifacts of versions no component keeps here
    /// any more (serving, kept for rollback, or canary).
    fn collect_artifacts(&self) {
        let Some((_, runtime)) = &self.fleet else {
            return;
        };
        let held: Vec<Arc<LoadedComponent>> = self
            .slots
            .values()
            .flat_map(|slot| {
                Self::lock(slot)
                    .iter()
                    .cloned()
                    .chain(std::iter::once(slot.current.load_full()))
                    .chain(slot.canary.load_full().map(|c| c.version.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let keep = held.iter().map(|v| v.digest.as_str()).collect();
        let deleted = runtime.collect_artifacts(&keep);
        if deleted > 0 {
            tracing::info!(
                deleted,
                "compiled artifacts of versions no longer kept deleted"
            );
        }
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
            .cloned()
            .chain(std::iter::once(slot.current.load_full()))
            .chain(slot.canary.load_full().map(|c| c.version.clone()))
            .find(|v| v.digest == digest);
        if kept.is_some() {
            return Ok(kept);
        }
        let key = format!("{name}/{digest}");
        if self.unloadable_contains(&key) {
            return Ok(None);
        }
        let Some((bytes, instance_reuse)) = fleet.bytes(name, digest).await? else {
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
                loaded.set_instance_reuse(instance_reuse.or(slot.instance_reuse));
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
            canary: slot.canary.load_full().map(|c| CanaryInfo {
                digest: c.version.digest.clone(),
                share: c.share,
                counts: c.counts(),
            }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        requests: u64,
        failed: u64,
        stable_requests: u64,
        stable_failed: u64,
    ) -> CanaryCounts {
        CanaryCounts {
            requests,
            failed,
            stable_requests,
            stable_failed,
        }
    }

    #[test]
    fn a_canary_failing_every_request_is_judged_at_once() {
        assert!(
            counts(
                CANARY_MIN_REQUESTS,
                CANARY_MIN_REQUESTS,
                CANARY_MIN_REQUESTS,
                0
            )
            .clearly_worse()
        );
        assert!(counts(CANARY_MIN_REQUESTS, CANARY_MIN_REQUESTS, 1, 0).clearly_worse());
    }

    #[test]
    fn a_canary_is_judged_only_after_enough_requests() {
        assert!(!counts(CANARY_MIN_REQUESTS - 1, CANARY_MIN_REQUESTS - 1, 100, 0).clearly_worse());
        assert!(counts(CANARY_MIN_REQUESTS, CANARY_MIN_REQUESTS, 100, 0).clearly_worse());
        assert!(counts(CANARY_MIN_REQUESTS, CANARY_MIN_REQUESTS, 0, 0).clearly_worse());
    }

    #[test]
    fn a_canary_must_fail_twice_as_often_and_five_points_more() {
        // 10% against 4%: more than twice, 6 points more, but over 100
        // requests within chance (z 2.7); over 300, not (z 4.8).
        assert!(!counts(100, 10, 1000, 40).clearly_worse());
        assert!(counts(300, 30, 3000, 120).clearly_worse());
        // 10% against 6%: 4 points more, not twice.
        assert!(!counts(100, 10, 1000, 60).clearly_worse());
        // 4% against 0%: twice, but 4 points only.
        assert!(!counts(100, 4, 1000, 0).clearly_worse());
        // 5% against 0%: exactly the margin, over enough requests.
        assert!(counts(400, 20, 4000, 0).clearly_worse());
        // 60% against 40%: 20 points more, not twice.
        assert!(!counts(100, 60, 1000, 400).clearly_worse());
        // None failing is never worse.
        assert!(!counts(1000, 0, 1000, 0).clearly_worse());
    }
}
