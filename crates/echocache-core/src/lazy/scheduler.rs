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

use futures::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::sync::{Arc, AtomicBool, HashState, Mutex, Ordering, lock};

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
    /// The dispatcher had stopped with the runtime it ran on; it was started again on
    /// the current runtime and the job queued there.
    Restarted,
    /// The dispatcher had stopped with its runtime and no runtime is current: dropped.
    NoRuntime,
}

type PendingShard = Mutex<HashSet<Box<str>, HashState>>;

/// Keys with a refresh queued or running.
pub(crate) struct Pending {
    shards: Box<[PendingShard]>,
    hasher: HashState,
}

impl Pending {
    fn new() -> Self {
        Self {
            shards: (0..16)
                .map(|_| Mutex::new(HashSet::with_hasher(HashState::default())))
                .collect(),
            hasher: HashState::default(),
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
    /// The running dispatcher's queue and end signal; replaced when the dispatcher is
    /// started again (its runtime shut down while the cache lives on).
    dispatcher: Mutex<Dispatcher>,
    queue_capacity: usize,
    workers: u32,
    pending: Arc<Pending>,
    closed: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// How long `shutdown` waits for running refreshes (`None` in the model checks, which
    /// have no tokio timer).
    shutdown_bound: Option<std::time::Duration>,
}

struct Dispatcher {
    tx: mpsc::Sender<Job>,
    done: watch::Receiver<bool>,
}

impl Scheduler {
    /// Starts the dispatcher on `runtime`.
    pub(crate) fn start(
        runtime: &tokio::runtime::Handle,
        queue_capacity: usize,
        workers: u32,
        shutdown_bound: std::time::Duration,
    ) -> Self {
        let mut scheduler = Self::start_with(queue_capacity, workers, |dispatcher| {
            runtime.spawn(dispatcher);
        });
        scheduler.shutdown_bound = Some(shutdown_bound);
        scheduler
    }

    /// Starts the dispatcher with `spawn` (the model checks run it on shuttle).
    fn start_with(
        queue_capacity: usize,
        workers: u32,
        spawn: impl FnOnce(BoxFuture<'static, ()>),
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        let dispatcher = Dispatcher::start(queue_capacity, workers, &shutdown, spawn);
        Self {
            dispatcher: Mutex::new(dispatcher),
            queue_capacity,
            workers,
            pending: Arc::new(Pending::new()),
            closed: AtomicBool::new(false),
            shutdown,
            shutdown_bound: None,
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
        let mut dispatcher = lock(&self.dispatcher);
        match dispatcher.tx.try_send(make_job(mark)) {
            Ok(()) => Scheduled::Queued,
            // Dropping the job drops its mark.
            Err(mpsc::error::TrySendError::Full(_)) => Scheduled::QueueFull,
            // The dispatcher is gone while the cache is not shut down: the runtime it ran
            // on has shut down. Start it again on the current one, if any, rather than
            // leave every later stale hit without a refresh.
            Err(mpsc::error::TrySendError::Closed(job)) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return Scheduled::NoRuntime;
                };
                *dispatcher =
                    Dispatcher::start(self.queue_capacity, self.workers, &self.shutdown, |d| {
                        runtime.spawn(d);
                    });
                match dispatcher.tx.try_send(job) {
                    Ok(()) => Scheduled::Restarted,
                    Err(_) => Scheduled::QueueFull,
                }
            }
        }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Stops taking refreshes, drops the queued ones and waits for the running ones, at
    /// most `shutdown_bound`. Idempotent; concurrent callers all wait.
    pub(crate) async fn shutdown(&self) {
        self.closed.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
        let mut done = lock(&self.dispatcher).done.clone();
        // An error means the dispatcher is gone (its runtime shut down): nothing runs.
        let wait = done.wait_for(|d| *d);
        match self.shutdown_bound {
            Some(bound) if tokio::runtime::Handle::try_current().is_ok() => {
                if tokio::time::timeout(bound, wait).await.is_err() {
                    crate::events::shutdown_gave_up(bound);
                }
            }
            _ => {
                let _ = wait.await;
            }
        }
    }
}

impl Dispatcher {
    /// Starts a dispatcher with `spawn`, stopped by `shutdown`.
    fn start(
        queue_capacity: usize,
        workers: u32,
        shutdown: &watch::Sender<bool>,
        spawn: impl FnOnce(BoxFuture<'static, ()>),
    ) -> Self {
        let (tx, rx) = mpsc::channel(queue_capacity);
        let (done_tx, done) = watch::channel(false);
        spawn(Box::pin(dispatch(
            rx,
            workers,
            shutdown.subscribe(),
            done_tx,
        )));
        Self { tx, done }
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
        crate::sync::spawn(async move {
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

/// Model checks of the pending set and the scheduler with shuttle (see `model_tests.rs`):
/// the pending set's locks are shuttle's; the dispatcher and the refresh jobs run as
/// shuttle tasks; tokio's channel, semaphore and watch are single steps to shuttle.
#[cfg(all(test, echocache_shuttle))]
mod model_tests {
    use shuttle::future::{self, JoinHandle};
    use shuttle::rand::{Rng, thread_rng};
    use shuttle::sync::atomic::AtomicUsize;

    use super::{Job, Pending, PendingMark, Scheduled, Scheduler};
    use crate::model_tests::check;
    use crate::sync::{Arc, AtomicBool, Mutex, Ordering, lock};

    /// Concurrent marks of one key: one holder at a time; of another key: independent;
    /// nothing left once the marks are dropped.
    #[test]
    fn model_pending_one_mark_per_key() {
        check(6000, || {
            let pending = Arc::new(Pending::new());
            let holders = Arc::new(AtomicUsize::new(0));
            let handles: Vec<JoinHandle<usize>> = (0..3)
                .map(|i| {
                    let pending = Arc::clone(&pending);
                    let holders = Arc::clone(&holders);
                    future::spawn(async move {
                        let mut marked = 0;
                        for _ in 0..2 {
                            if let Some(mark) = pending.try_mark("k") {
                                marked += 1;
                                let before = holders.fetch_add(1, Ordering::SeqCst);
                                assert_eq!(before, 0, "two marks for one key");
                                if i == 0 {
                                    // Another key is marked beside it, whatever "k" does.
                                    let other = pending.try_mark("other");
                                    assert!(other.is_some(), "keys interfered");
                                }
                                future::yield_now().await;
                                holders.fetch_sub(1, Ordering::SeqCst);
                                drop(mark);
                            }
                        }
                        marked
                    })
                })
                .collect();
            let marked: usize = future::block_on(async move {
                let mut total = 0;
                for handle in handles {
                    total += handle.await.expect("marker");
                }
                total
            });
            assert!(marked >= 1, "no one could mark a free key");
            assert_eq!(pending.len(), 0, "a dropped mark stayed pending");
        });
    }

    /// What the model's refresh jobs share.
    struct World {
        /// Jobs of the key built and not yet dropped (queued or running).
        outstanding: AtomicUsize,
        /// Jobs that started to run.
        ran: AtomicUsize,
        /// Set once `shutdown` has returned.
        shut_down: AtomicBool,
    }

    /// A job's part of the count: taken when the job is built, given back when it ends or
    /// is dropped unrun.
    struct Outstanding(Arc<World>);

    impl Outstanding {
        fn new(world: &Arc<World>) -> Self {
            let before = world.outstanding.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "a second refresh of one key was queued");
            Self(Arc::clone(world))
        }
    }

    impl Drop for Outstanding {
        fn drop(&mut self) {
            self.0.outstanding.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A job's mark and count, given back in that order (fields drop in order) so that
    /// the count is down before the key can be marked again.
    struct Ticket {
        _count: Outstanding,
        mark: PendingMark,
    }

    fn job(world: &Arc<World>, mark: PendingMark) -> Job {
        let ticket = Ticket {
            _count: Outstanding::new(world),
            mark,
        };
        let world = Arc::clone(world);
        Box::new(move || {
            Box::pin(async move {
                assert!(
                    !world.shut_down.load(Ordering::SeqCst),
                    "a refresh started after shutdown returned"
                );
                world.ran.fetch_add(1, Ordering::SeqCst);
                assert_eq!(ticket.mark.key(), "k");
                // The refresh's loads and store writes.
                future::yield_now().await;
                future::yield_now().await;
                assert!(
                    !world.shut_down.load(Ordering::SeqCst),
                    "shutdown returned while a refresh ran"
                );
                drop(ticket);
            })
        })
    }

    /// Starts a scheduler whose dispatcher is a shuttle task; returns the dispatcher's
    /// handle too.
    fn start(queue: usize, workers: u32) -> (Scheduler, JoinHandle<()>) {
        let handle = Mutex::new(None);
        let scheduler = Scheduler::start_with(queue, workers, |dispatcher| {
            *lock(&handle) = Some(future::spawn(dispatcher));
        });
        let handle = lock(&handle).take().expect("the dispatcher was spawned");
        (scheduler, handle)
    }

    /// Stale hits of one key from several callers schedule refreshes while `shutdown`
    /// runs (queue of 1 or 2, 1 or 2 workers). At most one refresh of the key is queued
    /// or running at a time; none runs once `shutdown` has returned; after it, and once
    /// the callers are done, nothing is pending and scheduling says `Closed`.
    #[test]
    fn model_schedule_races_shutdown() {
        check(6000, || {
            let mut rng = thread_rng();
            let (queue, workers) = (rng.gen_range(1..=2), rng.gen_range(1..=2));
            let (scheduler, dispatcher) = start(queue, workers);
            let scheduler = Arc::new(scheduler);
            let world = Arc::new(World {
                outstanding: AtomicUsize::new(0),
                ran: AtomicUsize::new(0),
                shut_down: AtomicBool::new(false),
            });
            let hits: Vec<JoinHandle<()>> = (0..2)
                .map(|_| {
                    let scheduler = Arc::clone(&scheduler);
                    let world = Arc::clone(&world);
                    future::spawn(async move {
                        for _ in 0..2 {
                            let after = world.shut_down.load(Ordering::SeqCst);
                            let outcome = scheduler.schedule("k", |mark| job(&world, mark));
                            if after {
                                assert_eq!(outcome, Scheduled::Closed);
                            }
                            future::yield_now().await;
                        }
                    })
                })
                .collect();
            let stop = future::spawn({
                let scheduler = Arc::clone(&scheduler);
                let world = Arc::clone(&world);
                async move {
                    future::yield_now().await;
                    scheduler.shutdown().await;
                    world.shut_down.store(true, Ordering::SeqCst);
                }
            });
            future::block_on(async {
                for hit in hits {
                    hit.await.expect("stale hit");
                }
                stop.await.expect("shutdown");
            });
            // Checked before the dispatcher task is seen to end: `shutdown` returning is
            // the promise.
            assert_eq!(
                scheduler.pending_len(),
                0,
                "a key stayed pending after shutdown"
            );
            future::block_on(async move { dispatcher.await.expect("dispatcher") });
            assert_eq!(
                world.outstanding.load(Ordering::SeqCst),
                0,
                "a job was kept"
            );
            assert_eq!(
                scheduler.schedule("k", |mark| job(&world, mark)),
                Scheduled::Closed
            );
            assert!(world.ran.load(Ordering::SeqCst) <= 4);
        });
    }

    /// The last cache handle goes away (the scheduler is dropped) without `shutdown`
    /// while refreshes are queued and running: the dispatcher ends after the running ones
    /// and nothing stays pending.
    #[test]
    fn model_drop_without_shutdown() {
        check(4000, || {
            let (scheduler, dispatcher) = start(2, 1);
            let world = Arc::new(World {
                outstanding: AtomicUsize::new(0),
                ran: AtomicUsize::new(0),
                shut_down: AtomicBool::new(false),
            });
            let pending = Arc::clone(&scheduler.pending);
            let scheduler = Arc::new(scheduler);
            let hit = future::spawn({
                let scheduler = Arc::clone(&scheduler);
                let world = Arc::clone(&world);
                async move {
                    for _ in 0..3 {
                        scheduler.schedule("k", |mark| job(&world, mark));
                        future::yield_now().await;
                    }
                }
            });
            future::block_on(async move {
                hit.await.expect("stale hit");
                drop(scheduler);
                dispatcher.await.expect("dispatcher");
            });
            assert_eq!(
                pending.len(),
                0,
                "a key stayed pending after the cache went away"
            );
            assert_eq!(
                world.outstanding.load(Ordering::SeqCst),
                0,
                "a job was kept"
            );
        });
    }
}
