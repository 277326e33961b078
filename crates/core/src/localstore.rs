//! Local tables whose log listing does not grow with the table's history.
//!
//! Every commit, and every update of a table handle, lists `_delta_log` from the version it
//! holds (`list_with_offset`). On S3 that is a `start-after` request that returns only the
//! new files. object_store's `LocalFileSystem` walks the whole directory instead and turns
//! every entry into an object path (URL building, percent-encoding) before it compares it
//! with the offset: with a stream's thousands of log files that was ~9 % of the ingestor's
//! CPU on a 2-core machine after 1,500 commits, and the main part of why each commit cost
//! more than the one before (BENCHMARKS.md).
//!
//! [`FastListFs`] wraps `LocalFileSystem` and answers a listing whose offset lies in the
//! listed directory by comparing the directory's raw file names with the offset's name,
//! building paths and reading metadata only for the entries past it. On Linux's local
//! filesystems the names come from a watched copy of the directory (`watched`), so a listing
//! does not even read the directory. Everything else goes to `LocalFileSystem` unchanged. [`register`] makes it the store of every `file://` table
//! finlake opens (delta-rs's object-store factory registry).

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use deltalake::logstore::{
    object_store_factories, ObjectStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake::DeltaResult;
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use url::Url;

/// `LocalFileSystem` with a listing from an offset that reads only the names it skips.
#[derive(Debug)]
pub struct FastListFs {
    inner: Arc<LocalFileSystem>,
}

impl FastListFs {
    /// Over the whole filesystem (paths are absolute), as delta-rs's default store is.
    pub fn new() -> Self {
        FastListFs {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl Default for FastListFs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for FastListFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastListFs({})", self.inner)
    }
}

/// A name that is its own object-path segment (no percent-encoding), so comparing names
/// compares paths. Log files (`00000000000000001234.json`) are.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An upload's temporary file (`name#123`): `LocalFileSystem` hides them too.
fn in_flight(name: &str) -> bool {
    name.split_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl FastListFs {
    /// The entries of `prefix` (recursively) whose path is past `offset`, when `offset` is an
    /// entry of `prefix` itself; `None` otherwise (the caller falls back).
    fn list_past(
        &self,
        prefix: &Path,
        offset: &Path,
    ) -> Option<BoxStream<'static, Result<ObjectMeta>>> {
        let rest = offset.as_ref().strip_prefix(prefix.as_ref())?;
        let after = rest.strip_prefix('/')?;
        if after.contains('/') || !plain(after) {
            return None;
        }
        let dir = self.inner.path_to_filesystem(prefix).ok()?;
        let (after, prefix, inner) = (after.to_string(), prefix.clone(), self.inner.clone());
        let names = async move {
            let listed =
                tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<Path>, Vec<Path>)> {
                    let mut files = Vec::new();
                    let mut dirs = Vec::new();
                    let keep =
                        |files: &mut Vec<Path>, dirs: &mut Vec<Path>, name: &str, is_dir: bool| {
                            if in_flight(name) {
                                return;
                            }
                            let path = if plain(name) {
                                // the cheap case, nearly every entry: skipped on its name alone
                                if name <= after.as_str() {
                                    return;
                                }
                                prefix.clone().join(name)
                            } else {
                                // LocalFileSystem's own conversion (percent-encoding and all)
                                match Path::from_absolute_path(dir.join(name)) {
                                    Ok(p) if p > prefix.clone().join(after.as_str()) => p,
                                    _ => return,
                                }
                            };
                            if is_dir {
                                dirs.push(path);
                            } else {
                                files.push(path);
                            }
                        };
                    #[cfg(target_os = "linux")]
                    if let Some(names) = watched::past(&dir, &after) {
                        for (name, is_dir) in names {
                            keep(&mut files, &mut dirs, &name, is_dir);
                        }
                        return Ok((files, dirs));
                    }
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        // a missing directory lists as empty, as LocalFileSystem's does
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Ok((files, dirs))
                        }
                        Err(e) => return Err(e),
                    };
                    for entry in entries {
                        let entry = entry?;
                        let name = entry.file_name();
                        let Some(name) = name.to_str() else { continue };
                        if plain(name) && name <= after.as_str() {
                            continue;
                        }
                        keep(&mut files, &mut dirs, name, entry.file_type()?.is_dir());
                    }
                    Ok((files, dirs))
                })
                .await;
            let (files, dirs) = match listed {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    return futures::stream::once(async move {
                        Err(object_store::Error::Generic {
                            store: "FastListFs",
                            source: Box::new(e),
                        })
                    })
                    .boxed()
                }
                Err(e) => {
                    return futures::stream::once(async move {
                        Err(object_store::Error::Generic {
                            store: "FastListFs",
                            source: Box::new(e),
                        })
                    })
                    .boxed()
                }
            };
            let heads = {
                let inner = inner.clone();
                futures::stream::iter(files)
                    .then(move |p| {
                        let inner = inner.clone();
                        async move { inner.head(&p).await }
                    })
                    // a file removed between the listing and its metadata is not listed
                    .filter(|r| {
                        futures::future::ready(!matches!(
                            r,
                            Err(object_store::Error::NotFound { .. })
                        ))
                    })
            };
            // subdirectories are past the offset as a whole: listed as LocalFileSystem would
            let nested = futures::stream::iter(dirs)
                .map(move |d| inner.list(Some(&d)))
                .flatten();
            heads.chain(nested).boxed()
        };
        Some(futures::stream::once(names).flatten().boxed())
    }
}

#[async_trait::async_trait]
impl ObjectStore for FastListFs {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        match prefix.and_then(|p| self.list_past(p, offset)) {
            Some(s) => s,
            None => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// The names of watched directories, kept current by inotify, so a listing past an offset
/// reads only the names past it.
///
/// Even skipping by name, a listing reads the whole directory: the kernel walks and hashes
/// every entry (ext4's `htree` readdir), so each listing of a stream's `_delta_log` cost more
/// with every version, several listings a commit (BENCHMARKS.md). Here the first listing of a
/// directory adds an inotify watch and then reads the directory once; every later listing
/// first applies the events queued since (files created, deleted or renamed by any process on
/// this machine) and answers from the sorted names. It is exact, not a cache that can be
/// stale: an event is queued before the call that changed the directory returns, so whatever
/// happened before a listing is in the names it answers from. What inotify cannot vouch for
/// is not watched: directories on network or FUSE filesystems (another machine's writes raise
/// no event here; only ext4, xfs, btrfs, tmpfs, f2fs and overlayfs are watched), a directory
/// whose inode is no longer the one at its path, and everything after the event queue
/// overflowed (every watch is dropped and the directories are read afresh).
#[cfg(target_os = "linux")]
mod watched {
    use std::collections::{BTreeMap, HashMap};
    use std::mem::MaybeUninit;
    use std::ops::Bound;
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use rustix::fd::OwnedFd;
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    use rustix::io::Errno;

    use super::plain;

    /// Plain names kept at or below the lowest offset asked for: a handle a few checkpoints
    /// behind still lists from the names; anything lower reads the directory.
    const KEEP_BELOW: usize = 1024;
    /// Directories watched at once (each table's `_delta_log`); past it the oldest go.
    const MAX_DIRS: usize = 256;

    /// Filesystems whose every change on this machine raises an inotify event here.
    const LOCAL: [u64; 6] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x794C_7630, // overlayfs
    ];

    struct Dir {
        id: (u64, u64),
        /// Every plain name above `floor` is in `plain`.
        floor: String,
        plain: BTreeMap<String, bool>,
        /// Names that are not their own path segment, all of them (a handful).
        other: BTreeMap<String, bool>,
        last_used: u64,
    }

    impl Dir {
        fn apply(&mut self, name: &str, is_dir: bool, present: bool) {
            let set = if plain(name) {
                if name <= self.floor.as_str() {
                    return;
                }
                &mut self.plain
            } else {
                &mut self.other
            };
            if present {
                set.insert(name.to_string(), is_dir);
            } else {
                set.remove(name);
            }
        }
    }

    struct State {
        fd: OwnedFd,
        dirs: HashMap<i32, Dir>,
        by_path: HashMap<PathBuf, i32>,
        clock: u64,
    }

    impl State {
        fn forget(&mut self, wd: i32, remove_watch: bool) {
            if self.dirs.remove(&wd).is_some() {
                self.by_path.retain(|_, w| *w != wd);
                if remove_watch {
                    let _ = inotify::remove_watch(&self.fd, wd);
                }
            }
        }

        fn forget_all(&mut self) {
            let wds: Vec<i32> = self.dirs.keys().copied().collect();
            for wd in wds {
                self.forget(wd, true);
            }
        }

        /// Applies every queued event.
        fn drain(&mut self) {
            let mut buf = [MaybeUninit::<u8>::uninit(); 16384];
            let mut gone = Vec::new();
            let mut overflow = false;
            {
                let State { fd, dirs, .. } = self;
                let mut reader = inotify::Reader::new(&*fd, &mut buf);
                loop {
                    let ev = match reader.next() {
                        Ok(ev) => ev,
                        Err(Errno::AGAIN) => break,
                        Err(Errno::INTR) => continue,
                        Err(_) => {
                            overflow = true;
                            break;
                        }
                    };
                    let flags = ev.events();
                    if flags.contains(ReadFlags::QUEUE_OVERFLOW) {
                        overflow = true;
                        continue;
                    }
                    if flags.intersects(
                        ReadFlags::IGNORED
                            | ReadFlags::DELETE_SELF
                            | ReadFlags::MOVE_SELF
                            | ReadFlags::UNMOUNT,
                    ) {
                        gone.push((ev.wd(), !flags.contains(ReadFlags::IGNORED)));
                        continue;
                    }
                    let Some(dir) = dirs.get_mut(&ev.wd()) else {
                        continue;
                    };
                    let Some(name) = ev.file_name().and_then(|n| n.to_str().ok()) else {
                        // a name that is not UTF-8 is not listed either way
                        continue;
                    };
                    let is_dir = flags.contains(ReadFlags::ISDIR);
                    if flags.intersects(ReadFlags::CREATE | ReadFlags::MOVED_TO) {
                        dir.apply(name, is_dir, true);
                    } else if flags.intersects(ReadFlags::DELETE | ReadFlags::MOVED_FROM) {
                        dir.apply(name, is_dir, false);
                    }
                }
            }
            for (wd, remove) in gone {
                self.forget(wd, remove);
            }
            if overflow {
                self.forget_all();
            }
        }

        /// Watches `path` and reads it once; `None` if it cannot be watched.
        fn watch(&mut self, path: &Path, id: (u64, u64)) -> Option<i32> {
            let fs = rustix::fs::statfs(path).ok()?;
            #[allow(clippy::unnecessary_cast)]
            let magic = (fs.f_type as u64) & 0xFFFF_FFFF;
            if !LOCAL.contains(&magic) {
                return None;
            }
            if self.dirs.len() >= MAX_DIRS {
                if let Some((&wd, _)) = self.dirs.iter().min_by_key(|(_, d)| d.last_used) {
                    self.forget(wd, true);
                }
            }
            let wd = inotify::add_watch(
                &self.fd,
                path,
                WatchFlags::CREATE
                    | WatchFlags::DELETE
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::MOVED_TO
                    | WatchFlags::DELETE_SELF
                    | WatchFlags::MOVE_SELF
                    | WatchFlags::ONLYDIR
                    | WatchFlags::EXCL_UNLINK,
            )
            .ok()?;
            if self.dirs.get(&wd).is_some_and(|d| d.id == id) {
                // the same directory by another path
                self.by_path.insert(path.to_path_buf(), wd);
                return Some(wd);
            }
            self.forget(wd, false);
            // watched first, read second: a change during the read is also an event
            let mut dir = Dir {
                id,
                floor: String::new(),
                plain: BTreeMap::new(),
                other: BTreeMap::new(),
                last_used: 0,
            };
            let read = (|| -> std::io::Result<()> {
                for entry in std::fs::read_dir(path)? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    dir.apply(name, entry.file_type()?.is_dir(), true);
                }
                Ok(())
            })();
            if read.is_err() {
                let _ = inotify::remove_watch(&self.fd, wd);
                return None;
            }
            self.dirs.insert(wd, dir);
            self.by_path.insert(path.to_path_buf(), wd);
            self.drain();
            self.dirs.contains_key(&wd).then_some(wd)
        }
    }

    fn state() -> Option<&'static Mutex<State>> {
        static STATE: OnceLock<Option<Mutex<State>>> = OnceLock::new();
        STATE
            .get_or_init(|| {
                inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)
                    .ok()
                    .map(|fd| {
                        Mutex::new(State {
                            fd,
                            dirs: HashMap::new(),
                            by_path: HashMap::new(),
                            clock: 0,
                        })
                    })
            })
            .as_ref()
    }

    /// Whether listings of `path` are answered from a watch (for the tests).
    #[cfg(test)]
    pub(super) fn is_watched(path: &Path) -> bool {
        state()
            .and_then(|s| s.lock().ok())
            .is_some_and(|s| s.by_path.contains_key(path))
    }

    /// The entries of `path` (name, is a directory) that can be past `after`: every plain
    /// name above it and every other name. `None` when the directory is not watched and
    /// cannot be: the caller reads it.
    pub(super) fn past(path: &Path, after: &str) -> Option<Vec<(String, bool)>> {
        let st = rustix::fs::stat(path).ok()?;
        #[allow(clippy::unnecessary_cast)]
        let id = (st.st_dev as u64, st.st_ino as u64);
        let mut state = state()?.lock().ok()?;
        state.drain();
        let known = state.by_path.get(path).copied();
        let wd = match known {
            Some(wd) if state.dirs.get(&wd).is_some_and(|d| d.id == id) => wd,
            _ => {
                if let Some(wd) = known {
                    // another directory at this path now
                    state.forget(wd, true);
                }
                state.watch(path, id)?
            }
        };
        state.clock += 1;
        let clock = state.clock;
        let dir = state.dirs.get_mut(&wd)?;
        if after < dir.floor.as_str() {
            return None;
        }
        dir.last_used = clock;
        let mut out: Vec<(String, bool)> = dir
            .plain
            .range::<str, _>((Bound::Excluded(after), Bound::Unbounded))
            .map(|(n, d)| (n.clone(), *d))
            .collect();
        out.extend(dir.other.iter().map(|(n, d)| (n.clone(), *d)));
        // the names at or below `after` beyond what a lagging handle needs are let go
        let below = dir.plain.len() - (out.len() - dir.other.len());
        if below > 2 * KEEP_BELOW {
            let floor = dir
                .plain
                .range::<str, _>((Bound::Unbounded, Bound::Included(after)))
                .rev()
                .nth(KEEP_BELOW)
                .map(|(n, _)| n.clone());
            if let Some(floor) = floor {
                dir.plain = dir.plain.split_off(floor.as_str());
                dir.floor = floor;
            }
        }
        Some(out)
    }
}

/// delta-rs's factory for `file://` tables, with [`FastListFs`] as the store.
#[derive(Debug, Default)]
struct Factory;

impl ObjectStoreFactory for Factory {
    fn parse_url_opts(
        &self,
        url: &Url,
        config: &StorageConfig,
    ) -> DeltaResult<(ObjectStoreRef, Path)> {
        let (_, path) = object_store::parse_url_opts(url, &config.raw)?;
        let store: ObjectStoreRef = Arc::new(FastListFs::new());
        let store = match &config.runtime {
            Some(rt) => Arc::new(deltalake::logstore::DeltaIOStorageBackend::new(
                store,
                rt.clone(),
            )),
            None => store,
        };
        Ok((store, path))
    }
}

/// Makes [`FastListFs`] the store of every `file://` table opened from now on (idempotent).
pub fn register() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        #[allow(clippy::expect_used)]
        let scheme = Url::parse("file://").expect("a constant URL");
        object_store_factories().insert(scheme, Arc::new(Factory));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    async fn listed(s: BoxStream<'static, Result<ObjectMeta>>) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = s
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap();
        v.sort();
        v
    }

    #[tokio::test]
    async fn lists_what_local_file_system_lists_past_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t/_delta_log");
        std::fs::create_dir_all(log.join("_staged_commits")).unwrap();
        for v in 0..30u32 {
            std::fs::write(log.join(format!("{v:020}.json")), vec![b'x'; v as usize]).unwrap();
        }
        std::fs::write(log.join("00000000000000000010.checkpoint.parquet"), b"cp").unwrap();
        std::fs::write(log.join("_last_checkpoint"), b"{}").unwrap();
        std::fs::write(
            log.join("_staged_commits/00000000000000000031.uuid.json"),
            b"s",
        )
        .unwrap();
        std::fs::write(log.join("odd name %.json"), b"o").unwrap();
        std::fs::write(log.join("00000000000000000040.json#12"), b"upload").unwrap();
        let fast = FastListFs::new();
        let plain_fs = LocalFileSystem::new();
        let prefix = Path::from_filesystem_path(&log).unwrap();
        for offset in [
            prefix.clone().join("00000000000000000010.json"),
            prefix.clone().join("00000000000000000000.json"),
            prefix.clone().join("00000000000000000029.json"),
            prefix.clone().join("0"),
            prefix.clone().join("odd name %.json"),
        ] {
            let want = listed(plain_fs.list_with_offset(Some(&prefix), &offset)).await;
            let got = listed(fast.list_with_offset(Some(&prefix), &offset)).await;
            assert_eq!(got, want, "offset {offset}");
        }
        let from_10 = prefix.clone().join("00000000000000000010.json");
        // 11..=29, the checkpoint pointer, the staged commit, the odd name; not the upload
        assert_eq!(
            listed(fast.list_with_offset(Some(&prefix), &from_10))
                .await
                .len(),
            22
        );
        // an offset elsewhere falls back to LocalFileSystem's walk
        let root = Path::from_filesystem_path(dir.path()).unwrap();
        let offset = prefix.clone().join("00000000000000000020.json");
        assert_eq!(
            listed(fast.list_with_offset(Some(&root), &offset)).await,
            listed(plain_fs.list_with_offset(Some(&root), &offset)).await
        );
        // a directory that is not there lists as empty
        let gone = root.clone().join("nope");
        let off = gone.clone().join("00000000000000000001.json");
        assert!(listed(fast.list_with_offset(Some(&gone), &off))
            .await
            .is_empty());
    }

    async fn same(fast: &FastListFs, prefix: &Path, offset: &str) -> usize {
        let offset = prefix.clone().join(offset);
        let want = listed(LocalFileSystem::new().list_with_offset(Some(prefix), &offset)).await;
        let got = listed(fast.list_with_offset(Some(prefix), &offset)).await;
        assert_eq!(got, want, "offset {offset}");
        got.len()
    }

    fn touch(dir: &std::path::Path, v: u32) {
        std::fs::write(dir.join(format!("{v:020}.json")), v.to_string()).unwrap();
    }

    /// A watched directory's listing follows every change other code makes to it, through
    /// the event queue's overflow, the dropping of old names and the directory's replacement.
    #[tokio::test]
    async fn a_watched_directory_lists_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("t/_delta_log");
        std::fs::create_dir_all(&log).unwrap();
        let fast = FastListFs::new();
        let prefix = Path::from_filesystem_path(&log).unwrap();
        for v in 0..50 {
            touch(&log, v);
        }
        // 10..=49 (the offset is a version, not a file name)
        assert_eq!(same(&fast, &prefix, &format!("{:020}", 10)).await, 40);
        #[cfg(target_os = "linux")]
        assert!(
            watched::is_watched(&log),
            "a local directory is listed from its watch"
        );
        // created, deleted, renamed, a subdirectory and a non-plain name, all after the watch
        for v in 50..60 {
            touch(&log, v);
        }
        for v in 5..15 {
            std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
        }
        std::fs::rename(
            log.join(format!("{:020}.json", 55)),
            log.join(format!("{:020}.json", 70)),
        )
        .unwrap();
        std::fs::create_dir_all(log.join("_staged_commits")).unwrap();
        std::fs::write(
            log.join("_staged_commits/00000000000000000071.u.json"),
            b"s",
        )
        .unwrap();
        std::fs::write(log.join("_last_checkpoint"), b"{}").unwrap();
        std::fs::write(log.join("00000000000000000072.json#3"), b"upload").unwrap();
        // 15..=54, 56..=59, 70, _last_checkpoint, the staged commit; not the upload
        assert_eq!(same(&fast, &prefix, &format!("{:020}", 10)).await, 47);
        same(&fast, &prefix, &format!("{:020}.json", 0)).await;
        same(&fast, &prefix, &format!("{:020}.json", 56)).await;
        // more changes than the event queue holds (16,384 by default): read afresh
        for v in 100..20_100 {
            touch(&log, v);
        }
        assert_eq!(same(&fast, &prefix, &format!("{:020}", 20_090)).await, 12);
        // a listing far ahead lets the old names go; one below them reads the directory
        same(&fast, &prefix, &format!("{:020}", 19_000)).await;
        same(&fast, &prefix, &format!("{:020}", 18_000)).await;
        same(&fast, &prefix, &format!("{:020}", 100)).await;
        touch(&log, 30_000);
        assert_eq!(same(&fast, &prefix, &format!("{:020}", 20_099)).await, 4);
        // another directory at the same path
        std::fs::remove_dir_all(&log).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        for v in 0..3 {
            touch(&log, v);
        }
        assert_eq!(same(&fast, &prefix, &format!("{:020}", 0)).await, 3);
    }
}
