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
