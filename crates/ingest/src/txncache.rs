//! The data table's `txn` versions for the fencing check, without a log replay per lookup.
//!
//! `Snapshot::transaction_version` (deltalake 1.1) is delta-kernel's `get_app_id_version`: a
//! replay of the log from the last checkpoint on every call, and the fencing check asks once
//! per partition per commit. That replay was most of a commit's cost and peak memory under
//! steady load (BENCHMARKS.md). This cache holds the versions of the app ids it was asked for,
//! valid as of one table version, and moves forward by reading only the commit files after it
//! (each names every `txn` it sets, ours or another writer's). An id it has not seen, or any
//! commit file it cannot read, falls back to the replay at the table's current version, so an
//! answer is always the one the replay would give.

use std::collections::HashMap;

use deltalake::DeltaTable;
use finlake_core::delta;

use crate::error::Result;

/// Past this many new commits, a fresh start is cheaper than reading them one by one.
const MAX_STEP: u64 = 1_000;

/// See the module docs.
#[derive(Debug, Default)]
pub struct TxnCache {
    /// The table version the entries are valid at.
    seen: Option<u64>,
    /// App id to its `txn` version (`None`: the table has none).
    map: HashMap<String, Option<i64>>,
}

impl TxnCache {
    /// Forgets everything (a table reopened after a resync).
    pub fn clear(&mut self) {
        self.seen = None;
        self.map.clear();
    }

    /// `app`'s `txn` version in `table` as loaded (call after `update_incremental`).
    pub async fn version(&mut self, table: &DeltaTable, app: &str) -> Result<Option<i64>> {
        self.advance(table).await;
        if let Some(v) = self.map.get(app) {
            return Ok(*v);
        }
        let v = delta::txn_version(table, app).await?;
        self.map.insert(app.to_string(), v);
        Ok(v)
    }

    async fn advance(&mut self, table: &DeltaTable) {
        let Some(now) = table.version() else {
            self.clear();
            return;
        };
        match self.seen {
            Some(s) if s == now => return,
            Some(s) if s < now && now - s <= MAX_STEP && !self.map.is_empty() => {
                let store = table.log_store();
                for v in s + 1..=now {
                    match store.read_commit_entry(v).await {
                        Ok(Some(bytes)) => apply(&mut self.map, &bytes),
                        // cleaned up, or unreadable: ask the replay from here on
                        _ => {
                            self.map.clear();
                            break;
                        }
                    }
                }
            }
            _ => self.map.clear(),
        }
        self.seen = Some(now);
    }
}

/// Applies one commit file's `txn` actions to the ids the cache holds.
fn apply(map: &mut HashMap<String, Option<i64>>, commit: &[u8]) {
    for line in commit.split(|b| *b == b'\n') {
        // most lines are add actions: look for the key before parsing
        if !line.windows(6).any(|w| w == b"\"txn\":") {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Some(txn) = v.get("txn") else { continue };
        let (Some(app), Some(version)) = (
            txn.get("appId").and_then(|a| a.as_str()),
            txn.get("version").and_then(|n| n.as_i64()),
        ) else {
            continue;
        };
        if let Some(slot) = map.get_mut(app) {
            *slot = Some(version);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_updates_the_ids_held_and_no_others() {
        let mut map = HashMap::from([("p/t/0".to_string(), Some(5)), ("p/t/1".into(), None)]);
        let commit = br#"{"commitInfo":{"timestamp":1}}
{"txn":{"appId":"p/t/1","version":42,"lastUpdated":1}}
{"txn":{"appId":"p/t/9","version":7}}
{"add":{"path":"x.parquet","stats":"{\"txn\":1}"}}"#;
        apply(&mut map, commit);
        assert_eq!(map["p/t/0"], Some(5));
        assert_eq!(map["p/t/1"], Some(42));
        assert!(!map.contains_key("p/t/9"));
    }
}
