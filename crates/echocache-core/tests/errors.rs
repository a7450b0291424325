//! `fetch`'s errors in the error-handling crates people use: `?` into `anyhow::Result`
//! keeps the loader's chain, and `Box<dyn Error>` and plain error types read well.

use std::error::Error as StdError;
use std::sync::Arc;

use anyhow::Context as _;
use echocache_core::test_util::TestStore;
use echocache_core::{EchoCache, Error, LazyEchoCache};

/// A loader in anyhow style: a low-level error with context added on the way up.
async fn load_user(id: u64) -> anyhow::Result<String> {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    Err(io).with_context(|| format!("query user {id}"))
}

/// A handler in anyhow style: `?` straight from `fetch`.
async fn handler(cache: &EchoCache<String, TestStore<String>>) -> anyhow::Result<String> {
    let user = cache.fetch("user:42", || load_user(42)).await?;
    Ok(user)
}

#[tokio::test]
async fn question_mark_into_anyhow_keeps_the_loaders_chain() {
    let cache = EchoCache::new(TestStore::<String>::new());
    let err = handler(&cache).await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "loader failed: query user 42: connection refused"
    );
    // `{}` alone (what most log lines print) still names the cause.
    assert!(err.to_string().contains("connection refused"), "{err}");
    // The loader's own error, with its chain, is one downcast away: the same `Arc` every
    // waiter of that load got.
    let fetch_err = err
        .downcast_ref::<Error<anyhow::Error>>()
        .expect("the fetch error is the anyhow error's outermost layer");
    let loader_err: &Arc<anyhow::Error> = fetch_err.load_error().unwrap();
    let chain: Vec<String> = loader_err.chain().map(ToString::to_string).collect();
    assert_eq!(chain, ["query user 42", "connection refused"]);
    let io = loader_err.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn question_mark_into_anyhow_from_the_lazy_cache() {
    let cache = LazyEchoCache::builder(TestStore::<String>::new())
        .build()
        .unwrap();
    let run = async {
        let v = cache.fetch("k", || load_user(7)).await?;
        anyhow::Ok(v)
    };
    let err = run.await.unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "loader failed: query user 7: connection refused"
    );
    cache.shutdown().await;
}

#[tokio::test]
async fn question_mark_into_box_dyn_error() {
    #[derive(Debug, thiserror::Error)]
    #[error("user service unavailable")]
    struct Unavailable(#[source] std::io::Error);

    async fn handler(
        cache: &EchoCache<String, TestStore<String>>,
    ) -> Result<String, Box<dyn StdError + Send + Sync>> {
        let v = cache
            .fetch("k", || async {
                Err::<String, _>(Unavailable(std::io::Error::other("connection reset")))
            })
            .await?;
        Ok(v)
    }
    let cache = EchoCache::new(TestStore::<String>::new());
    let err = handler(&cache).await.unwrap_err();
    assert_eq!(err.to_string(), "loader failed: user service unavailable");
    // A user type's own sources are reached through `load_error` (see `Error`'s docs).
    let fetch_err = err.downcast_ref::<Error<Unavailable>>().unwrap();
    let cause = fetch_err.load_error().unwrap().source().unwrap();
    assert_eq!(cause.to_string(), "connection reset");
}

#[tokio::test]
async fn a_boxed_loader_error_continues_the_chain_through_source() {
    let cache = EchoCache::new(TestStore::<String>::new());
    let err = cache
        .fetch("k", || async {
            let inner = std::io::Error::other("connection reset");
            let outer: Box<dyn StdError + Send + Sync> = Box::new(std::io::Error::other(inner));
            Err::<String, _>(outer)
        })
        .await
        .unwrap_err();
    let err = anyhow::Error::from(err);
    assert_eq!(
        format!("{err:#}"),
        "loader failed: connection reset",
        "io::Error shows its inner error's message and passes on its source"
    );
}
