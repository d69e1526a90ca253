//! Compiled components on disk: `{digest}-{engine hash}.cwasm` files in the
//! state directory, so that loading the same bytes again (after a restart,
//! say) deserializes instead of compiling. Only this host writes them.

use super::LoadError;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where compiled components are kept by digest; `None`: not kept.
pub(super) struct Artifacts(pub(super) Option<PathBuf>);

impl Artifacts {
    /// The compiled component for `bytes`: from the artifact cache if it is
    /// there, else compiled (and then kept there).
    pub(super) fn compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> Result<(Component, bool), LoadError> {
        let artifact = self.0.as_ref().map(|dir| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut hasher);
            dir.join(format!("{digest}-{:016x}.cwasm", hasher.finish()))
        });
        if let Some(path) = artifact.as_ref().filter(|p| p.is_file()) {
            // SAFETY: deserializing runs the machine code in the file. The
            // artifact directory holds only files this host wrote from
            // `Component::serialize` of a component it compiled and
            // validated itself, named by the source's digest and the
            // engine's compatibility hash; it is trusted like the binary.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unusable compiled artifact; compiling again")
                }
            }
        }
        let component =
            Component::new(engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        if let Some(path) = artifact {
            match component.serialize() {
                Ok(code) => {
                    if let Err(e) = crate::files::write_atomically(&path, &code) {
                        tracing::warn!(path = %path.display(), error = %e, "could not keep the compiled artifact");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not serialize the compiled component"),
            }
        }
        Ok((component, false))
    }
}

/// Artifacts written this recently are never collected: a version being
/// uploaded or loaded is compiled before any registry holds it.
const FRESH: std::time::Duration = std::time::Duration::from_secs(60);

impl Artifacts {
    /// Deletes the compiled artifacts of digests not in `keep` (and those
    /// of another engine), but for those written in the last minute; the
    /// number deleted.
    pub(super) fn collect(&self, engine: &Engine, keep: &std::collections::HashSet<&str>) -> usize {
        let Some(dir) = &self.0 else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let suffix = format!("-{:016x}.cwasm", hasher.finish());
        let mut deleted = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if !name.ends_with(".cwasm") {
                continue;
            }
            let kept = name
                .strip_suffix(&suffix)
                .is_some_and(|digest| keep.contains(digest));
            let fresh = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < FRESH));
            // A file left behind is only disk space.
            if !kept && !fresh && std::fs::remove_file(entry.path()).is_ok() {
                deleted += 1;
            }
        }
        deleted
    }
}

/// Lower-case hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            // Writing to a String cannot fail.
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_artifacts_of_kept_digests_or_written_lately_stay() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let ours = format!("{:016x}", hasher.finish());
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let file = |name: String, old: bool| {
            let path = dir.path().join(name);
            let f = std::fs::File::create(&path).unwrap();
            if old {
                f.set_modified(long_ago).unwrap();
            }
            path
        };
        let kept = file(format!("aaaa-{ours}.cwasm"), true);
        let dropped = file(format!("bbbb-{ours}.cwasm"), true);
        let fresh = file(format!("cccc-{ours}.cwasm"), false);
        let other_engine = file("aaaa-0123456789abcdef.cwasm".into(), true);
        let not_ours = file("notes.txt".into(), true);

        let artifacts = Artifacts(Some(dir.path().to_path_buf()));
        let keep = ["aaaa"].into_iter().collect();
        assert_eq!(artifacts.collect(&engine, &keep), 2);
        assert!(kept.exists() && fresh.exists() && not_ours.exists());
        assert!(!dropped.exists() && !other_engine.exists());
        assert_eq!(Artifacts(None).collect(&engine, &keep), 0);
    }
}
