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
//! building paths and reading metadata only for the entries past it. Everything else goes
//! to `LocalFileSystem` unchanged. [`register`] makes it the store of every `file://` table
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
                        if in_flight(name) {
                            continue;
                        }
                        if plain(name) {
                            // the cheap case, nearly every entry: skipped on its name alone
                            if name <= after.as_str() {
                                continue;
                            }
                        }
                        let path = if plain(name) {
                            prefix.clone().join(name)
                        } else {
                            // LocalFileSystem's own conversion (percent-encoding and all)
                            match Path::from_absolute_path(entry.path()) {
                                Ok(p) if p > prefix.clone().join(after.as_str()) => p,
                                _ => continue,
                            }
                        };
                        if entry.file_type()?.is_dir() {
                            dirs.push(path);
                        } else {
                            files.push(path);
                        }
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
}
