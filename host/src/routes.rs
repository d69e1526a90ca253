//! The route table: which component answers which path prefix, read from a
//! TOML manifest at start.
//!
//! ```toml
//! # Paths of .wasm files are relative to `dir`, itself relative to the
//! # manifest file.
//! dir = "target/wasm32-wasip2/release"
//!
//! [[component]]
//! name = "categories"
//! file = "categories.wasm"
//! routes = ["/api/marketplace/categories"]
//! ```
//!
//! A route matches its own path and every path below it, whole segments
//! only: `/api/marketplace` matches `/api/marketplace/agents/x` but not
//! `/api/marketplacex`. The longest matching route wins.

use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The manifest file's contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Directory of the `.wasm` files, relative to the manifest.
    #[serde(default)]
    pub dir: PathBuf,
    /// The components, in any order.
    #[serde(rename = "component", default)]
    pub components: Vec<ComponentSpec>,
}

/// One component of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Unique name, used in logs and the admin API.
    pub name: String,
    /// The `.wasm` file, relative to the manifest's `dir`.
    pub file: PathBuf,
    /// Path prefixes this component answers.
    pub routes: Vec<String>,
    /// The cache namespace its keys and tags live in; by default its own
    /// name, so that no other component can read, overwrite or invalidate
    /// its entries. Components that name the same namespace share entries.
    #[serde(default)]
    pub cache_namespace: Option<String>,
    /// Seconds its cache entries are kept after their TTL, to be served
    /// when the database cannot answer (stale-if-error); by default the
    /// host's `--cache-stale-grace`. 0 turns stale serving off for it.
    #[serde(default)]
    pub stale_grace: Option<u64>,
    /// How many requests one instance of it may serve (instance reuse:
    /// its statics survive between them); by default the host's
    /// `--instance-reuse`. 0 or 1: a fresh instance per request.
    #[serde(default)]
    pub instance_reuse: Option<u32>,
}

impl ComponentSpec {
    /// The cache namespace: the declared one, or the component's name.
    pub fn cache_namespace(&self) -> &str {
        self.cache_namespace.as_deref().unwrap_or(&self.name)
    }

    /// The declared grace, if any.
    pub fn stale_grace(&self) -> Option<std::time::Duration> {
        self.stale_grace.map(std::time::Duration::from_secs)
    }
}

/// Letters, digits, `-` and `_`, at least one: names of components and of
/// cache namespaces (which end at the first `/` of a cache key).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

impl Manifest {
    /// Reads the manifest at `path` and resolves each file to a full path.
    pub fn load(path: &Path) -> anyhow::Result<(Self, PathBuf)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let manifest: Manifest = toml::from_str(&text)
            .with_context(|| format!("parsing manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(".")).join(&manifest.dir);
        manifest.validate()?;
        Ok((manifest, base))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut routes = std::collections::HashSet::new();
        for c in &self.components {
            // Names become directory names under the state directory.
            if !valid_name(&c.name) {
                bail!(
                    "component name {:?} must be letters, digits, '-' or '_'",
                    c.name
                );
            }
            if let Some(ns) = &c.cache_namespace
                && !valid_name(ns)
            {
                bail!(
                    "the cache namespace {ns:?} of {:?} must be letters, digits, '-' or '_'",
                    c.name
                );
            }
            if let Some(n) = c.instance_reuse
                && n > crate::runtime::MAX_INSTANCE_REUSE
            {
                bail!(
                    "the instance_reuse {n} of {:?} is over {}",
                    c.name,
                    crate::runtime::MAX_INSTANCE_REUSE
                );
            }
            if !names.insert(c.name.as_str()) {
                bail!("component {:?} is listed twice", c.name);
            }
            for r in &c.routes {
                if !r.starts_with('/') {
                    bail!("route {r:?} of {:?} must start with '/'", c.name);
                }
                if !routes.insert(normalize(r)) {
                    bail!("route {r:?} is claimed twice");
                }
            }
        }
        Ok(())
    }
}

fn normalize(route: &str) -> String {
    let trimmed = route.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    }
}

/// Path prefix to component name, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<(String, String)>,
}

impl RouteTable {
    /// The table of every route in `components`.
    pub fn new<'a>(components: impl IntoIterator<Item = &'a ComponentSpec>) -> Self {
        let mut routes: Vec<(String, String)> = components
            .into_iter()
            .flat_map(|c| c.routes.iter().map(|r| (normalize(r), c.name.clone())))
            .collect();
        routes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Self { routes }
    }

    /// The component answering `path`, if any.
    pub fn resolve(&self, path: &str) -> Option<&str> {
        self.routes
            .iter()
            .find(|(prefix, _)| {
                prefix == "/"
                    || path
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .map(|(_, name)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, routes: &[&str]) -> ComponentSpec {
        ComponentSpec {
            name: name.into(),
            file: format!("{name}.wasm").into(),
            routes: routes.iter().map(|s| s.to_string()).collect(),
            cache_namespace: None,
            stale_grace: None,
            instance_reuse: None,
        }
    }

    #[test]
    fn the_longest_whole_segment_prefix_wins() {
        let specs = [
            spec("marketplace", &["/api/marketplace"]),
            spec("categories", &["/api/marketplace/categories/"]),
        ];
        let table = RouteTable::new(&specs);
        assert_eq!(table.resolve("/api/marketplace"), Some("marketplace"));
        assert_eq!(
            table.resolve("/api/marketplace/agents/a1"),
            Some("marketplace")
        );
        assert_eq!(
            table.resolve("/api/marketplace/categories"),
            Some("categories")
        );
        assert_eq!(
            table.resolve("/api/marketplace/categories/x"),
            Some("categories")
        );
        assert_eq!(table.resolve("/api/marketplacex"), None);
        assert_eq!(table.resolve("/"), None);
    }

    #[test]
    fn a_component_name_that_is_not_path_safe_is_refused() {
        for name in ["../etc", "a/b", "", "sp ace"] {
            let manifest = Manifest {
                dir: ".".into(),
                components: vec![spec(name, &["/x"])],
            };
            let err = manifest.validate().unwrap_err().to_string();
            assert!(err.contains("must be letters"), "{name}: {err}");
        }
    }

    #[test]
    fn a_manifest_claiming_a_route_twice_is_refused() {
        let manifest = Manifest {
            dir: ".".into(),
            components: vec![spec("a", &["/x"]), spec("b", &["/x/"])],
        };
        let err = manifest.validate().unwrap_err().to_string();
        assert!(err.contains("claimed twice"), "{err}");
    }
}
