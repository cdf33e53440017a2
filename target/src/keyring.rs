//! The keyring: named keys that other features refer to by name, as
//! SPDK's `lib/keyring` and its `keyring_file` module. A key is a file
//! holding the key's text (a `DHHC-1:...` secret for DH-HMAC-CHAP); the
//! file is read each time the key is used, so rotating it in place takes
//! effect on the next authentication, and its permissions are checked as
//! SPDK does (an absolute path, owned by us, no group or other access).
//!
//! Users hold an `Arc<Key>`: removing a key from the keyring marks it
//! removed, and users that still hold it see it fail to load.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The module name `keyring_get_keys` reports (SPDK's file keyring).
pub const FILE_MODULE: &str = "keyring_file";
/// Largest key file read: a DHHC-1 secret is under 100 bytes, and a
/// TLS PSK interchange string under 200; anything larger is not a key.
const MAX_KEY_FILE: u64 = 4096;

/// Why a key could not be added, removed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A key of that name exists.
    #[error("key {0:?} already exists")]
    Exists(String),
    /// No key of that name.
    #[error("no key named {0:?}")]
    NoKey(String),
    /// The path is relative.
    #[error("non-absolute paths are not allowed: {0}")]
    RelativePath(PathBuf),
    /// Group or others may access it, or another user owns it.
    #[error("invalid permissions for key file {path}: {mode:04o}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The file is larger than any key.
    #[error("key file {0} is too large")]
    TooLarge(PathBuf),
    /// The key was removed from the keyring.
    #[error("key {0:?} was removed")]
    Removed(String),
    /// The file could not be read.
    #[error("could not read key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl KeyringError {
    /// The negated errno SPDK answers the same failure with.
    pub fn errno(&self) -> i32 {
        match self {
            KeyringError::Exists(_) => -libc::EEXIST,
            KeyringError::NoKey(_) | KeyringError::Removed(_) => -libc::ENOKEY,
            KeyringError::RelativePath(_) | KeyringError::Permissions { .. } => -libc::EPERM,
            KeyringError::TooLarge(_) => -libc::ENOBUFS,
            KeyringError::Io { source, .. } => -source.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// One key of the file keyring.
#[derive(Debug)]
pub struct Key {
    name: String,
    path: PathBuf,
    removed: AtomicBool,
}

impl Key {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it was removed from the keyring.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Reads the key's text (control path or an authentication step:
    /// a file of at most [`MAX_KEY_FILE`] bytes).
    pub fn load(&self) -> Result<String, KeyringError> {
        if self.is_removed() {
            return Err(KeyringError::Removed(self.name.clone()));
        }
        check_path(&self.path)?;
        let io = |source| KeyringError::Io {
            path: self.path.clone(),
            source,
        };
        let f = std::fs::File::open(&self.path).map_err(io)?;
        let mut text = String::new();
        f.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_KEY_FILE {
            return Err(KeyringError::TooLarge(self.path.clone()));
        }
        Ok(text)
    }
}

fn check_path(path: &Path) -> Result<(), KeyringError> {
    if !path.is_absolute() {
        return Err(KeyringError::RelativePath(path.to_owned()));
    }
    let md = std::fs::metadata(path).map_err(|source| KeyringError::Io {
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if md.mode() & 0o077 != 0 || md.uid() != uid {
        return Err(KeyringError::Permissions {
            path: path.to_owned(),
            mode: md.mode() & 0o7777,
        });
    }
    if md.len() > MAX_KEY_FILE {
        return Err(KeyringError::TooLarge(path.to_owned()));
    }
    Ok(())
}

/// What `keyring_get_keys` reports of one key.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    /// Name.
    pub name: String,
    /// File.
    pub path: PathBuf,
    /// Users other than the keyring itself.
    pub refcnt: usize,
}

/// The process's keys, by name.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Mutex<BTreeMap<String, Arc<Key>>>,
}

impl Keyring {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Key>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a file key (`keyring_file_add_key`): the file must exist and
    /// have safe permissions now.
    pub fn add_file_key(&self, name: &str, path: &Path) -> Result<(), KeyringError> {
        check_path(path)?;
        let mut keys = self.lock();
        if keys.contains_key(name) {
            return Err(KeyringError::Exists(name.to_owned()));
        }
        keys.insert(
            name.to_owned(),
            Arc::new(Key {
                name: name.to_owned(),
                path: path.to_owned(),
                removed: AtomicBool::new(false),
            }),
        );
        Ok(())
    }

    /// Removes a key (`keyring_file_remove_key`); holders see it removed.
    pub fn remove(&self, name: &str) -> Result<(), KeyringError> {
        let key = self
            .lock()
            .remove(name)
            .ok_or_else(|| KeyringError::NoKey(name.to_owned()))?;
        key.removed.store(true, Ordering::Release);
        Ok(())
    }

    /// The key named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Key>> {
        self.lock().get(name).cloned()
    }

    /// Every key, by name.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.lock()
            .values()
            .map(|k| KeyInfo {
                name: k.name.clone(),
                path: k.path.clone(),
                refcnt: Arc::strong_count(k) - 1,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn key_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn add_get_remove_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::default();
        let good = key_file(dir.path(), "k0", "DHHC-1:00:x:\n", 0o600);
        let open = key_file(dir.path(), "k1", "x", 0o644);
        ring.add_file_key("key0", &good).unwrap();
        assert!(matches!(
            ring.add_file_key("key0", &good),
            Err(KeyringError::Exists(_))
        ));
        let e = ring.add_file_key("key1", &open).unwrap_err();
        assert!(matches!(e, KeyringError::Permissions { mode: 0o644, .. }));
        assert_eq!(e.errno(), -libc::EPERM);
        assert!(matches!(
            ring.add_file_key("key2", Path::new("rel/path")),
            Err(KeyringError::RelativePath(_))
        ));
        let k = ring.get("key0").unwrap();
        assert_eq!(k.load().unwrap(), "DHHC-1:00:x:\n");
        assert_eq!(ring.list()[0].refcnt, 1);
        // Permissions are checked again at every use.
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(k.load().is_err());
        ring.remove("key0").unwrap();
        assert!(matches!(k.load(), Err(KeyringError::Removed(_))));
        assert_eq!(ring.remove("key0").unwrap_err().errno(), -libc::ENOKEY);
        assert!(ring.list().is_empty());
    }
}
