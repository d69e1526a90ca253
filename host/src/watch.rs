//! Hot swap by file: the directory holding the manifest's component files is
//! watched, and a component whose file changes is deployed like an upload.
//!
//! Events for a file are debounced (`QUIET`: nothing written for that long)
//! before the file is read; then it is compiled and checked against the
//! world like any upload. A half-written file fails that check and is left
//! alone (logged); the next event, when the write completes, tries again.
//! Replacing the file by a rename is the safe way to publish one.

use crate::registry::Registry;
use crate::runtime::Runtime;
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a file must go unwritten before it is loaded.
const QUIET: Duration = Duration::from_millis(300);

/// Watches `dir` for the files of `components` (name, file name) and
/// deploys each when it changes, until the registry is dropped (noticed at
/// the next change).
pub fn spawn(
    dir: &Path,
    components: Vec<(String, OsString)>,
    runtime: Arc<Runtime>,
    registry: Arc<Registry>,
) -> anyhow::Result<()> {
    let (runtime, registry) = (Arc::downgrade(&runtime), Arc::downgrade(&registry));
    let by_file: HashMap<OsString, String> = components
        .into_iter()
        .map(|(name, file)| (file, name))
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_))
        {
            for path in event.paths {
                // The receiver is gone only when the runtime shuts down.
                let _ = tx.send(path);
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        // The watcher stops when dropped: this task owns it.
        let _watcher = watcher;
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied();
            tokio::select! {
                event = rx.recv() => {
                    let Some(path) = event else { return };
                    if let Some(name) = path.file_name().and_then(|f| by_file.get(f)) {
                        due.insert(name.clone(), Instant::now() + QUIET);
                    }
                }
                () = async { tokio::time::sleep_until(next.unwrap_or_else(Instant::now)).await }, if next.is_some() => {
                    let now = Instant::now();
                    let ready: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(n, _)| n.clone()).collect();
                    for name in ready {
                        due.remove(&name);
                        let Some(file) = by_file.iter().find(|(_, n)| **n == name).map(|(f, _)| dir.join(f)) else { continue };
                        let (Some(runtime), Some(registry)) = (runtime.upgrade(), registry.upgrade()) else { return };
                        reload(&name, &file, &runtime, &registry).await;
                    }
                }
            }
        }
    });
    Ok(())
}

async fn reload(name: &str, file: &Path, runtime: &Arc<Runtime>, registry: &Registry) {
    let bytes = match tokio::fs::read(file).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(component = name, file = %file.display(), error = %e, "changed component file unreadable");
            return;
        }
    };
    let runtime = runtime.clone();
    let compile_name = name.to_string();
    let loaded = match tokio::task::spawn_blocking(move || runtime.load(&compile_name, &bytes))
        .await
    {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            tracing::warn!(component = name, file = %file.display(), error = %e, "changed component file not loaded; the running version keeps serving");
            return;
        }
        Err(_) => return,
    };
    if registry.current_digest(name).as_deref() == Some(loaded.digest.as_str()) {
        return;
    }
    match registry
        .deploy(name, loaded, "the watched file changed", None)
        .await
    {
        Ok(info) => {
            tracing::info!(component = name, digest = %info.current.digest, "component file changed; deployed")
        }
        Err(e) => {
            tracing::error!(component = name, error = %e, "changed component file not deployed")
        }
    }
}
