//! [`BoxStore`] and [`DynStore`]: a store chosen at run time behind one type.
//!
//! [`Store`]'s methods return `impl Future`, so `dyn Store<V>` does not exist (E0038).
//! [`DynStore`] is its object-safe twin (each method returns a boxed future), implemented
//! for every `Store`; [`BoxStore`] holds a `Box<dyn DynStore<V>>` and is a `Store` again,
//! so `EchoCache<V, BoxStore<V>>` is one type whatever store the configuration picks.
//!
//! Every method of [`Store`] is forwarded, so a store's own behaviour (real locks, lock
//! extension) survives the erasure; a method added to `Store` must be added here too.

use std::any::Any;
use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::{Entry, LockToken, Store, StoreError, Version};

/// What [`DynStore::get_versioned`] resolves to: the entry, if any, and the
/// version it was read at.
pub type VersionedRead<V> = Result<(Option<Entry<V>>, Version), StoreError>;

/// The object-safe form of [`Store`]: the same methods, returning boxed futures.
///
/// Implemented for every `S: Store<V>`; there is no need to implement it by hand. Use it
/// through [`BoxStore`].
pub trait DynStore<V>: Send + Sync + 'static {
    /// [`Store::get`].
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry<V>>, StoreError>>;
    /// [`Store::set`].
    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry<V>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`Store::remove`].
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`Store::try_lock`].
    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>>;
    /// [`Store::unlock`].
    fn unlock<'a>(
        &'a self,
        key: &'a str,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// [`Store::extend_lock`].
    fn extend_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// [`Store::get_versioned`].
    fn get_versioned<'a>(&'a self, key: &'a str) -> BoxFuture<'a, VersionedRead<V>>;
    /// [`Store::set_if_version`].
    fn set_if_version<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry<V>,
        version: &'a Version,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
    /// [`Store::changed`].
    fn changed<'a>(&'a self, key: &'a str, within: Duration) -> BoxFuture<'a, ()>;
    /// [`Store::shares_locks`].
    fn shares_locks(&self) -> bool;
    /// The store itself, for [`BoxStore::downcast_ref`].
    fn as_any(&self) -> &dyn Any;
    /// The store's type name, for `Debug`.
    fn type_name(&self) -> &'static str;
}

impl<V: 'static, S: Store<V>> DynStore<V> for S {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry<V>>, StoreError>> {
        Box::pin(Store::get(self, key))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry<V>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::set(self, key, entry))
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::remove(self, key))
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<LockToken>, StoreError>> {
        Box::pin(Store::try_lock(self, key, ttl))
    }

    fn unlock<'a>(
        &'a self,
        key: &'a str,
        token: &'a LockToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::unlock(self, key, token))
    }

    fn extend_lock<'a>(
        &'a self,
        key: &'a str,
        token: &'a LockToken,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Store::extend_lock(self, key, token, ttl))
    }

    fn get_versioned<'a>(&'a self, key: &'a str) -> BoxFuture<'a, VersionedRead<V>> {
        Box::pin(Store::get_versioned(self, key))
    }

    fn set_if_version<'a>(
        &'a self,
        key: &'a str,
        entry: &'a Entry<V>,
        version: &'a Version,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(Store::set_if_version(self, key, entry, version))
    }

    fn changed<'a>(&'a self, key: &'a str, within: Duration) -> BoxFuture<'a, ()> {
        Box::pin(Store::changed(self, key, within))
    }

    fn shares_locks(&self) -> bool {
        Store::shares_locks(self)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<S>()
    }
}

/// Any [`Store`] behind one type, for a store chosen at run time (from configuration,
/// per environment, in tests).
///
/// Each store call allocates its future (a `Box`), which a memory hit otherwise does not:
/// `docs/benchmarks.md` gives the cost. A store known at compile time is faster as the
/// cache's type parameter.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use echocache_core::{BoxStore, EchoCache};
/// # use echocache_core::{Entry, LockToken, Store, StoreError};
/// # #[derive(Default)]
/// # struct MapStore(std::sync::Mutex<std::collections::HashMap<String, Entry<String>>>);
/// # impl Store<String> for MapStore {
/// #     async fn get(&self, key: &str) -> Result<Option<Entry<String>>, StoreError> { Ok(self.0.lock().unwrap().get(key).cloned()) }
/// #     async fn set(&self, key: &str, entry: &Entry<String>) -> Result<(), StoreError> { self.0.lock().unwrap().insert(key.into(), entry.clone()); Ok(()) }
/// #     async fn remove(&self, key: &str) -> Result<(), StoreError> { self.0.lock().unwrap().remove(key); Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
/// # struct OtherStore;
/// # impl Store<String> for OtherStore {
/// #     async fn get(&self, _: &str) -> Result<Option<Entry<String>>, StoreError> { Ok(None) }
/// #     async fn set(&self, _: &str, _: &Entry<String>) -> Result<(), StoreError> { Ok(()) }
/// #     async fn remove(&self, _: &str) -> Result<(), StoreError> { Ok(()) }
/// #     async fn try_lock(&self, _: &str, _: Duration) -> Result<Option<LockToken>, StoreError> { Ok(Some(LockToken::generate())) }
/// #     async fn unlock(&self, _: &str, _: &LockToken) -> Result<(), StoreError> { Ok(()) }
/// # }
///
/// /// One cache type, whatever the configuration says (with the facade: `LruStore`,
/// /// `RedisStore`, `NatsStore`, …).
/// fn cache_for(backend: &str) -> EchoCache<String, BoxStore<String>> {
///     let store = match backend {
///         "memory" => BoxStore::new(MapStore::default()),
///         _ => BoxStore::new(OtherStore),
///     };
///     EchoCache::new(store)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = cache_for("memory");
/// let v = cache.fetch("k", || async { Ok::<_, std::io::Error>("v".to_string()) }).await.unwrap();
/// assert_eq!(v, "v");
/// assert!(cache.store().downcast_ref::<MapStore>().is_some());
/// # }
/// ```
pub struct BoxStore<V> {
    inner: Box<dyn DynStore<V>>,
}

impl<V: 'static> BoxStore<V> {
    /// Erases `store`'s type.
    pub fn new<S: Store<V>>(store: S) -> Self {
        Self {
            inner: Box::new(store),
        }
    }

    /// The store inside, when it is an `S`.
    pub fn downcast_ref<S: Store<V>>(&self) -> Option<&S> {
        self.inner.as_any().downcast_ref::<S>()
    }

    /// The store inside, as a [`DynStore`].
    pub fn as_dyn(&self) -> &dyn DynStore<V> {
        &*self.inner
    }
}

impl<V> From<Box<dyn DynStore<V>>> for BoxStore<V> {
    fn from(inner: Box<dyn DynStore<V>>) -> Self {
        Self { inner }
    }
}

impl<V: 'static> fmt::Debug for BoxStore<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BoxStore")
            .field(&self.inner.type_name())
            .finish()
    }
}

impl<V: Send + Sync + 'static> Store<V> for BoxStore<V> {
    async fn get(&self, key: &str) -> Result<Option<Entry<V>>, StoreError> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, entry: &Entry<V>) -> Result<(), StoreError> {
        self.inner.set(key, entry).await
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.inner.remove(key).await
    }

    async fn try_lock(&self, key: &str, ttl: Duration) -> Result<Option<LockToken>, StoreError> {
        self.inner.try_lock(key, ttl).await
    }

    async fn unlock(&self, key: &str, token: &LockToken) -> Result<(), StoreError> {
        self.inner.unlock(key, token).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        token: &LockToken,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.extend_lock(key, token, ttl).await
    }

    async fn get_versioned(&self, key: &str) -> Result<(Option<Entry<V>>, Version), StoreError> {
        self.inner.get_versioned(key).await
    }

    async fn set_if_version(
        &self,
        key: &str,
        entry: &Entry<V>,
        version: &Version,
    ) -> Result<bool, StoreError> {
        self.inner.set_if_version(key, entry, version).await
    }

    async fn changed(&self, key: &str, within: Duration) {
        self.inner.changed(key, within).await;
    }

    fn shares_locks(&self) -> bool {
        self.inner.shares_locks()
    }
}
