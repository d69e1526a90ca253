//! Deployed component versions on disk, so a deploy survives a restart.
//!
//! Under `{state_dir}/deployments/{component}/`: each uploaded version as
//! `{digest}.wasm`, and `history`, the digests of the versions kept, oldest
//! first, the last one serving. Files are written to a temporary name and
//! renamed, so a crash never leaves a half-written version or history.

use std::io;
use std::path::PathBuf;

/// One recorded version of a component.
pub struct StoredVersion {
    /// Hex SHA-256 of `bytes`.
    pub digest: String,
    /// The `.wasm` bytes.
    pub bytes: Vec<u8>,
}

/// The deployments directory.
#[derive(Debug, Clone)]
pub struct DeploymentStore {
    /// `{state_dir}/deployments`.
    dir: PathBuf,
}

impl DeploymentStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn component_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Keeps the bytes of a version (again, if the copy kept differs).
    pub fn save_version(&self, name: &str, digest: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.component_dir(name).join(format!("{digest}.wasm"));
        if std::fs::read(&path).is_ok_and(|kept| kept == bytes) {
            return Ok(());
        }
        crate::files::write_atomically(&path, bytes)
    }

    /// Records the versions kept, oldest first, the last one serving, and
    /// deletes the bytes of versions no longer kept.
    pub fn save_history(&self, name: &str, digests: &[String]) -> io::Result<()> {
        let dir = self.component_dir(name);
        crate::files::write_atomically(&dir.join("history"), digests.join("\n").as_bytes())?;
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            let kept = path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|stem| digests.iter().any(|d| d == stem));
            if path.extension().is_some_and(|e| e == "wasm") && !kept {
                // A file left behind is only disk space.
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// The versions recorded for `name`, oldest first, with their bytes;
    /// `None` if it was never deployed. A version whose file cannot be
    /// read is left out, with a warning: one lost file must not stop the
    /// host from serving the others.
    pub fn load(&self, name: &str) -> io::Result<Option<Vec<StoredVersion>>> {
        let history = match std::fs::read_to_string(self.component_dir(name).join("history")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut versions = Vec::new();
        for digest in history.lines().filter(|l| !l.is_empty()) {
            let file = self.component_dir(name).join(format!("{digest}.wasm"));
            match std::fs::read(&file) {
                Ok(bytes) => versions.push(StoredVersion {
                    digest: digest.to_string(),
                    bytes,
                }),
                Err(e) => tracing::warn!(
                    component = name,
                    %digest,
                    error = %e,
                    file = %file.display(),
                    "a recorded version cannot be read; left out"
                ),
            }
        }
        Ok(Some(versions))
    }
}
