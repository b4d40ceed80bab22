//! A profile: the directory where one device of one user keeps its account, keys, sessions and
//! decrypted history.
//!
//! ```text
//! <profile>/                 mode 0700
//!   lock                     empty; every change holds an exclusive lock on it
//!   state.json               mode 0600; account, keys, sessions, peers, processed ids, outbox
//!   history/                 mode 0700
//!     <userId>.jsonl         mode 0600; one HistoryEntry per line, appended
//! ```
//!
//! `state.json` is only ever replaced whole: written to a temporary file, `fsync`ed, renamed
//! over the old one, and the directory `fsync`ed, so a crash leaves either the old or the new
//! state, never a mix. History lines are appended and `fsync`ed before the state that records
//! the message as processed; a torn last line (a crash mid-append) is skipped when reading,
//! and a line written twice (a crash between the two writes, then a redelivery) is shown once.
//!
//! Several processes may use one profile (`listen` in one terminal, `send` in another): each
//! change takes the lock, reads the current state, changes it and writes it back before
//! releasing the lock, so no process works on an outdated copy. The lock is never held across
//! a network call.
//!
//! Nothing is encrypted at rest beyond the file permissions; use disk encryption.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use kith_proto::UserId;

use crate::history::HistoryEntry;
use crate::state::{Account, State};

/// Why a profile could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// There is no profile in the directory.
    #[error("no kith profile in {}", .0.display())]
    Missing(PathBuf),
    /// The directory already holds a profile (of another account, or when registering).
    #[error("the profile in {} already belongs to {user} (device {device})", path.display())]
    Taken {
        /// The profile directory.
        path: PathBuf,
        /// Its user.
        user: UserId,
        /// Its device.
        device: kith_proto::DeviceId,
    },
    /// `state.json` is not a state this client can read.
    #[error("{} is damaged or from another version: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ProfileError + '_ {
    move |source| ProfileError::Io { path: path.to_owned(), source }
}

/// A profile directory.
#[derive(Debug, Clone)]
pub struct Profile {
    dir: PathBuf,
}

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";
const HISTORY_DIR: &str = "history";

impl Profile {
    /// The profile in `dir` (which need not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default profile directory: `$XDG_CONFIG_HOME/kith/default`, or
    /// `$HOME/.config/kith/default` when `XDG_CONFIG_HOME` is unset; `None` without either.
    pub fn default_dir() -> Option<PathBuf> {
        let config =
            std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
                std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|home| PathBuf::from(home).join(".config"))
            })?;
        Some(config.join("kith").join("default"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory holds a profile.
    pub fn exists(&self) -> bool {
        self.dir.join(STATE_FILE).exists()
    }

    /// The account the profile belongs to.
    ///
    /// # Errors
    /// [`ProfileError::Missing`], I/O and decoding errors.
    pub fn account(&self) -> Result<Account, ProfileError> {
        Ok(self.read()?.account)
    }

    /// Reads the state without locking (a reader always sees a whole state, as it is replaced
    /// atomically); for looking, not for changing.
    pub(crate) fn read(&self) -> Result<State, ProfileError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => kith_crypto::Zeroizing::new(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ProfileError::Missing(self.dir.clone())),
            Err(e) => return Err(ProfileError::Io { path, source: e }),
        };
        State::from_json(&bytes).map_err(|e| ProfileError::Corrupt { path, reason: e.0 })
    }

    /// Creates the directory (mode 0700) and writes a first state into it.
    ///
    /// # Errors
    /// [`ProfileError::Taken`] when it already holds a profile; I/O errors.
    pub(crate) async fn create(&self, state: &State) -> Result<(), ProfileError> {
        make_private_dir(&self.dir)?;
        let lock = self.lock_file().await?;
        if let Ok(existing) = self.read() {
            return Err(ProfileError::Taken {
                path: self.dir.clone(),
                user: existing.account.user_id,
                device: existing.account.device_id,
            });
        }
        write_state(&self.dir, state)?;
        drop(lock);
        Ok(())
    }

    /// Takes the profile's lock and reads the current state, for a change.
    ///
    /// # Errors
    /// [`ProfileError::Missing`], I/O and decoding errors.
    pub(crate) async fn lock(&self) -> Result<Locked, ProfileError> {
        if !self.exists() {
            return Err(ProfileError::Missing(self.dir.clone()));
        }
        let lock = self.lock_file().await?;
        let state = self.read()?;
        Ok(Locked { dir: self.dir.clone(), _lock: lock, state })
    }

    async fn lock_file(&self) -> Result<File, ProfileError> {
        let path = self.dir.join(LOCK_FILE);
        let file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error(&path))?;
        let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
        match locked {
            Ok(result) => result.map_err(io_error(&path)),
            Err(e) => Err(ProfileError::Io { path, source: io::Error::other(e.to_string()) }),
        }
    }

    /// The stored history of the conversation with `peer`, in the node's order (by message id),
    /// each message once.
    ///
    /// # Errors
    /// I/O errors (a missing history is empty).
    pub fn history(&self, peer: &UserId) -> Result<Vec<HistoryEntry>, ProfileError> {
        let path = history_path(&self.dir, peer);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProfileError::Io { path, source: e }),
        };
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for (number, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<HistoryEntry>(line) {
                Ok(entry) => {
                    if seen.insert(entry.message_id) {
                        entries.push(entry);
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), line = number + 1, error = %e, "skipping a damaged history line")
                }
            }
        }
        entries.sort_by_key(|e| e.message_id);
        Ok(entries)
    }
}

/// The profile, locked, with its current state; changes are written by [`Locked::save`], and
/// dropping it without saving discards them.
#[derive(Debug)]
pub(crate) struct Locked {
    dir: PathBuf,
    _lock: File,
    pub(crate) state: State,
}

impl Locked {
    /// Replaces `state.json` with the current state, atomically.
    pub(crate) fn save(&self) -> Result<(), ProfileError> {
        write_state(&self.dir, &self.state)
    }

    /// Appends `entry` to the history of the conversation with `peer`, durably.
    pub(crate) fn append_history(&self, peer: &UserId, entry: &HistoryEntry) -> Result<(), ProfileError> {
        let dir = self.dir.join(HISTORY_DIR);
        make_private_dir(&dir)?;
        let path = history_path(&self.dir, peer);
        let mut line = serde_json::to_vec(entry)
            .map_err(|e| ProfileError::Io { path: path.clone(), source: io::Error::other(e.to_string()) })?;
        line.push(b'\n');
        let created = !path.exists();
        let mut file =
            private_file_options().read(true).append(true).create(true).open(&path).map_err(io_error(&path))?;
        // A crash mid-append leaves a line without its newline; start on a fresh line.
        let len = file.metadata().map_err(io_error(&path))?.len();
        if len > 0 {
            let mut last = [0u8];
            file.seek(SeekFrom::End(-1)).and_then(|_| file.read_exact(&mut last)).map_err(io_error(&path))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        file.write_all(&line).and_then(|()| file.sync_all()).map_err(io_error(&path))?;
        if created {
            sync_dir(&dir)?;
        }
        Ok(())
    }
}

fn history_path(dir: &Path, peer: &UserId) -> PathBuf {
    // User ids are `[a-z0-9._-]+@[a-z0-9.-]+(:port)?`: safe as file names.
    dir.join(HISTORY_DIR).join(format!("{peer}.jsonl"))
}

fn write_state(dir: &Path, state: &State) -> Result<(), ProfileError> {
    let path = dir.join(STATE_FILE);
    let json = state.to_json().map_err(|e| ProfileError::Corrupt { path: path.clone(), reason: e.0 })?;
    write_atomically(&path, &json)
}

/// Replaces `path` with `bytes`: temporary file, `fsync`, rename, `fsync` of the directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = private_file_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(ProfileError::Io { path: temp, source: e });
    }
    fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), ProfileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

fn make_private_dir(dir: &Path) -> Result<(), ProfileError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use kith_proto::{DeviceId, MessageId, Timestamp};
    use rand_core::UnwrapErr;

    use super::*;
    use crate::history::Body;
    use crate::sessions::KeyStore;
    use crate::state::Processed;

    fn state(user: &str) -> State {
        State {
            account: Account {
                server: "http://127.0.0.1:1".into(),
                user_id: UserId::parse(user).unwrap(),
                device_id: DeviceId(9),
                token: "token".into(),
            },
            keys: KeyStore::generate(Timestamp::now(), &mut UnwrapErr(getrandom::SysRng)),
            processed: Processed::default(),
            outbox: Vec::new(),
            keys_published: false,
        }
    }

    fn entry(text: &str) -> HistoryEntry {
        HistoryEntry {
            message_id: MessageId::now(),
            timestamp: Timestamp::now(),
            from: UserId::parse("a@t").unwrap(),
            from_device: None,
            to: UserId::parse("b@t").unwrap(),
            body: Body::Message { text: text.into(), encrypted: true },
        }
    }

    #[tokio::test]
    async fn a_profile_is_private_and_replaced_whole() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::new(temp.path().join("p"));
        assert!(matches!(profile.lock().await, Err(ProfileError::Missing(_))));
        profile.create(&state("a@t")).await.unwrap();
        assert!(matches!(profile.create(&state("b@t")).await, Err(ProfileError::Taken { .. })));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(profile.dir()), 0o700);
            assert_eq!(mode(&profile.dir().join(STATE_FILE)), 0o600);
        }
        let mut locked = profile.lock().await.unwrap();
        locked.state.account.token = "new".into();
        // Unsaved changes are not visible; saved ones are, and no temporary file is left.
        assert_eq!(profile.account().unwrap().token, "token");
        locked.save().unwrap();
        drop(locked);
        assert_eq!(profile.account().unwrap().token, "new");
        let names: Vec<_> = fs::read_dir(profile.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().ends_with(".tmp")), "{names:?}");
        fs::write(profile.dir().join(STATE_FILE), b"{not json").unwrap();
        assert!(matches!(profile.account(), Err(ProfileError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn history_survives_torn_and_repeated_lines() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::new(temp.path());
        profile.create(&state("a@t")).await.unwrap();
        let peer = UserId::parse("b@t").unwrap();
        let (first, second) = (entry("one"), entry("two"));
        let locked = profile.lock().await.unwrap();
        locked.append_history(&peer, &second).unwrap();
        locked.append_history(&peer, &first).unwrap();
        locked.append_history(&peer, &second).unwrap();
        // A crash in the middle of an append.
        let path = history_path(profile.dir(), &peer);
        OpenOptions::new().append(true).open(&path).unwrap().write_all(br#"{"messageId":"019a"#).unwrap();
        let third = entry("three");
        locked.append_history(&peer, &third).unwrap();
        drop(locked);
        let texts: Vec<_> = profile.history(&peer).unwrap().iter().map(|e| e.text().unwrap().to_owned()).collect();
        assert_eq!(texts, ["one", "two", "three"], "in id order, once each, the torn line skipped");
        assert!(profile.history(&UserId::parse("c@t").unwrap()).unwrap().is_empty());
    }

    #[tokio::test]
    async fn while_a_change_holds_the_lock_nobody_else_can_take_it_and_a_waiter_sees_the_change() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::new(temp.path());
        profile.create(&state("a@t")).await.unwrap();
        // Another process's view of the lock: an open file of its own.
        let lock_path = profile.dir().join(LOCK_FILE);
        let elsewhere = || File::open(&lock_path).unwrap();

        let mut held = profile.lock().await.unwrap();
        assert!(matches!(elsewhere().try_lock(), Err(std::fs::TryLockError::WouldBlock)), "the lock is held");
        let other = profile.clone();
        let waiter = tokio::spawn(async move { other.lock().await.map(|l| l.state.account.token) });
        held.state.account.token = "changed while locked".into();
        held.save().unwrap();
        drop(held);
        assert_eq!(waiter.await.unwrap().unwrap(), "changed while locked", "the waiter reads the newest state");
        elsewhere().try_lock().expect("free once every change is done");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_are_never_lost() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::new(temp.path());
        let mut first = state("a@t");
        first.account.token = "0".into();
        profile.create(&first).await.unwrap();
        // Each task increments a counter: read it under the lock, write it back, many times.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let profile = profile.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        let mut locked = profile.lock().await.unwrap();
                        let n: u32 = locked.state.account.token.parse().unwrap();
                        locked.state.account.token = (n + 1).to_string();
                        locked.save().unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(profile.account().unwrap().token, "40", "every increment counted");
    }
}
