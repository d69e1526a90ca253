//! The loaded components and the routes to them.
//!
//! Each component sits in an `ArcSwap`: a request takes an `Arc` of the
//! current version when it starts and keeps it to the end, so replacing the
//! pointer (the whole of a swap) never disturbs a request in flight.

use crate::routes::{Manifest, RouteTable};
use crate::runtime::{LoadedComponent, Runtime};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Components by name, and the route table over them.
pub struct Registry {
    /// Path prefix to component name.
    routes: RouteTable,
    /// Name to the version currently serving.
    components: HashMap<String, ArcSwap<LoadedComponent>>,
}

impl Registry {
    /// Loads every component of the manifest at `path`. Fails, naming the
    /// component, if any file is missing or does not fit the world.
    pub fn from_manifest(runtime: &Runtime, path: &Path) -> anyhow::Result<Self> {
        let (manifest, dir) = Manifest::load(path)?;
        let mut components = HashMap::new();
        for spec in &manifest.components {
            let file = dir.join(&spec.file);
            let bytes = std::fs::read(&file).with_context(|| {
                format!("reading component {:?} from {}", spec.name, file.display())
            })?;
            let loaded = runtime.load(&spec.name, &bytes).with_context(|| {
                format!("loading component {:?} from {}", spec.name, file.display())
            })?;
            tracing::info!(component = %spec.name, digest = %loaded.digest, routes = ?spec.routes, "component loaded");
            components.insert(spec.name.clone(), ArcSwap::from_pointee(loaded));
        }
        Ok(Self {
            routes: RouteTable::new(&manifest.components),
            components,
        })
    }

    /// The version of the component routed for `path` that is serving now.
    pub fn resolve(&self, path: &str) -> Option<Arc<LoadedComponent>> {
        let name = self.routes.resolve(path)?;
        self.components.get(name).map(ArcSwap::load_full)
    }
}
