//! The reference-data cache: one load for a crowd of cold callers, a TTL, and a backoff
//! after a failed load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use finlake_core::transform::RefCache;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cold_callers_cause_one_load() {
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    let cache = Arc::new(RefCache::new(
        "symbols",
        Duration::from_secs(60),
        Duration::from_secs(5),
        move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, finlake_core::Error>(42u32)
            }
        },
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let cache = cache.clone();
        tasks.spawn(async move { *cache.get().await.unwrap() });
    }
    while let Some(v) = tasks.join_next().await {
        assert_eq!(v.unwrap(), 42);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_loader_backs_off_then_serves_the_previous_value() {
    let loads = Arc::new(AtomicUsize::new(0));
    let counter = loads.clone();
    // succeeds first, then fails; the TTL is short so every get after it wants a refresh
    let cache = RefCache::new(
        "rates",
        Duration::from_millis(20),
        Duration::from_millis(300),
        move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Ok(7u32)
                } else {
                    Err(finlake_core::Error::Usage("rates source down".into()))
                }
            }
        },
    );
    assert_eq!(*cache.get().await.unwrap(), 7);
    tokio::time::sleep(Duration::from_millis(40)).await;
    // the refresh fails: the previous value is served
    assert_eq!(*cache.get().await.unwrap(), 7);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // within the backoff, no caller reaches the loader
    for _ in 0..20 {
        assert_eq!(*cache.get().await.unwrap(), 7);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ = cache.get().await;
    assert_eq!(
        loads.load(Ordering::SeqCst),
        3,
        "after the backoff it tries again"
    );
}

#[tokio::test]
async fn a_cold_failure_is_an_error_naming_the_source() {
    let cache: RefCache<u32> = RefCache::new(
        "fx_rates.csv",
        Duration::from_secs(60),
        Duration::from_secs(60),
        || async { Err(finlake_core::Error::Usage("no such file".into())) },
    );
    let err = cache.get().await.unwrap_err().to_string();
    assert!(
        err.contains("fx_rates.csv") && err.contains("no such file"),
        "{err}"
    );
}
