//! The refresh scheduler of [`LazyEchoCache`](crate::LazyEchoCache): a bounded queue, a
//! per-key pending set, `workers` concurrent refreshes, and a graceful shutdown.
//!
//! A stale hit marks its key pending and tries to enqueue a job, never waiting: when the
//! key is already pending nothing happens (Go bug 6); when the queue is full the job is
//! dropped and the mark removed. A dispatcher task takes a worker permit, then a job, and
//! runs the job as its own task, so a slow loader holds one permit and never stalls the
//! others (Go bug 7). Pending marks are removed by a guard when the job ends or is
//! dropped, so nothing stays pending after shutdown.
//!
//! The dispatcher holds no handle on the cache: when the last cache handle is dropped the
//! queue's sender goes with it and the dispatcher ends after the running jobs.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foldhash::fast::RandomState;
use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, watch};

/// One refresh, type-erased: the key, the loader and the cache are inside.
pub(crate) type Job = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// What became of a refresh request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheduled {
    /// Queued.
    Queued,
    /// A refresh for this key is already queued or running.
    AlreadyPending,
    /// The queue was full: dropped.
    QueueFull,
    /// The scheduler is shut down.
    Closed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type PendingShard = Mutex<HashSet<Box<str>, RandomState>>;

/// Keys with a refresh queued or running.
pub(crate) struct Pending {
    shards: Box<[PendingShard]>,
    hasher: RandomState,
}

impl Pending {
    fn new() -> Self {
        Self {
            shards: (0..16)
                .map(|_| Mutex::new(HashSet::with_hasher(RandomState::default())))
                .collect(),
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, key: &str) -> &PendingShard {
        &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()]
    }

    /// Marks `key` pending, or `None` when it already is.
    fn try_mark(self: &Arc<Self>, key: &str) -> Option<PendingMark> {
        let mut set = lock(self.shard(key));
        if set.contains(key) {
            return None;
        }
        set.insert(key.into());
        Some(PendingMark {
            pending: Arc::clone(self),
            key: key.into(),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }
}

/// A key's pending mark; removed when dropped (job done, dropped, or never queued).
pub(crate) struct PendingMark {
    pending: Arc<Pending>,
    key: Box<str>,
}

impl PendingMark {
    pub(crate) fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for PendingMark {
    fn drop(&mut self) {
        lock(self.pending.shard(&self.key)).remove(&*self.key);
    }
}

pub(crate) struct Scheduler {
    tx: mpsc::Sender<Job>,
    pending: Arc<Pending>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl Scheduler {
    /// Starts the dispatcher on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        queue_capacity: usize,
        workers: u32,
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        runtime.spawn(dispatch(rx, workers, shutdown_rx, done_tx));
        Self {
            tx,
            pending: Arc::new(Pending::new()),
            closed: AtomicBool::new(false),
            shutdown,
            done,
        }
    }

    /// Queues the job `make_job` builds for `key`, unless `key` is pending already, the
    /// queue is full or the scheduler is shut down. Never waits.
    pub(crate) fn schedule(
        &self,
        key: &str,
        make_job: impl FnOnce(PendingMark) -> Job,
    ) -> Scheduled {
        if self.closed.load(Ordering::Acquire) {
            return Scheduled::Closed;
        }
        let Some(mark) = self.pending.try_mark(key) else {
            return Scheduled::AlreadyPending;
        };
        match self.tx.try_send(make_job(mark)) {
            Ok(()) => Scheduled::Queued,
            // Dropping the job drops its mark.
            Err(mpsc::error::TrySendError::Full(_)) => Scheduled::QueueFull,
            Err(mpsc::error::TrySendError::Closed(_)) => Scheduled::Closed,
        }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops taking refreshes, drops the queued ones and waits for the running ones.
    /// Idempotent; concurrent callers all wait.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        let mut done = self.done.clone();
        // An error means the dispatcher is gone (its runtime shut down): nothing runs.
        let _ = done.wait_for(|d| *d).await;
    }
}

async fn dispatch(
    mut rx: mpsc::Receiver<Job>,
    workers: u32,
    mut shutdown: watch::Receiver<bool>,
    done: watch::Sender<bool>,
) {
    let permits = Arc::new(Semaphore::new(workers as usize));
    loop {
        // `wait_for` also returns (with an error) when the cache was dropped.
        let permit = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let job = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
        };
        tokio::spawn(async move {
            job().await;
            drop(permit);
        });
    }
    // Refuse new jobs and drop the queued ones (their marks go with them).
    rx.close();
    while rx.try_recv().is_ok() {}
    // Every permit back means every running refresh has ended.
    let _ = permits.acquire_many(workers).await;
    done.send_replace(true);
}
