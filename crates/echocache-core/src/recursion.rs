//! Detects loads that wait on themselves, so that they fail with
//! [`Error::RecursiveLoad`](crate::Error::RecursiveLoad) instead of hanging.
//!
//! Each loader runs with its flight's id in a task-local. When code inside a loader waits
//! on a flight (of any cache), an edge "this flight waits on that one" is added to a
//! process-wide wait-for graph; a wait that would close a cycle is refused. Only fetches
//! made from the loader's own task are seen: a loader that spawns a task which fetches
//! is outside the check.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

tokio::task_local! {
    static CURRENT_FLIGHT: u64;
}

/// Edges `waiter -> [flights it waits on]`; touched only by fetches made inside loaders.
static WAITS: Mutex<Option<HashMap<u64, Vec<u64>>>> = Mutex::new(None);

fn graph() -> MutexGuard<'static, Option<HashMap<u64, Vec<u64>>>> {
    WAITS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `fut` as the loader of flight `id`.
pub(crate) fn scope<F: Future>(id: u64, fut: F) -> impl Future<Output = F::Output> {
    CURRENT_FLIGHT.scope(id, fut)
}

/// The flight whose loader the current task runs, if any.
#[inline]
pub(crate) fn current() -> Option<u64> {
    CURRENT_FLIGHT.try_with(|id| *id).ok()
}

/// A recorded wait; removed from the graph when dropped.
pub(crate) struct WaitEdge {
    from: u64,
    to: u64,
}

/// Records that flight `from` is about to wait on flight `to`, or returns `None` when `to`
/// already waits (directly or transitively) on `from`.
pub(crate) fn enter_wait(from: u64, to: u64) -> Option<WaitEdge> {
    let mut guard = graph();
    let edges = guard.get_or_insert_with(HashMap::new);
    // Is `from` reachable from `to`? (`to == from` is the direct case.)
    let mut stack = vec![to];
    let mut seen = Vec::new();
    while let Some(node) = stack.pop() {
        if node == from {
            return None;
        }
        if seen.contains(&node) {
            continue;
        }
        seen.push(node);
        if let Some(next) = edges.get(&node) {
            stack.extend_from_slice(next);
        }
    }
    edges.entry(from).or_default().push(to);
    Some(WaitEdge { from, to })
}

impl Drop for WaitEdge {
    fn drop(&mut self) {
        let mut guard = graph();
        if let Some(edges) = guard.as_mut()
            && let Some(list) = edges.get_mut(&self.from)
        {
            if let Some(pos) = list.iter().position(|&t| t == self.to) {
                list.swap_remove(pos);
            }
            if list.is_empty() {
                edges.remove(&self.from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_cycles_and_forgets_edges() {
        // Ids far from the ones flights use.
        let (a, b, c) = (u64::MAX - 1, u64::MAX - 2, u64::MAX - 3);
        assert!(enter_wait(a, a).is_none());
        let ab = enter_wait(a, b).expect("a waits on b");
        let bc = enter_wait(b, c).expect("b waits on c");
        assert!(enter_wait(c, a).is_none(), "c -> a closes a -> b -> c -> a");
        drop(ab);
        let ca = enter_wait(c, a).expect("no cycle once a stopped waiting");
        drop((bc, ca));
        assert!(graph().as_ref().is_none_or(|g| !g.contains_key(&a)));
    }
}
