//! Files the host writes (deployed versions, compiled artifacts): whole or
//! not at all. Shared by `deployments` and `runtime`, so that neither
//! reaches into the other.

use std::io::{self, Write as _};
use std::path::Path;

/// Writes `bytes` to `path` atomically: into a uniquely named temporary
/// file in the same directory, synced, then renamed over `path`. A crash
/// leaves the old file or the new one, never a part; two writers at once
/// each write a whole file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("v.wasm");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("v.wasm")]);
    }
}
