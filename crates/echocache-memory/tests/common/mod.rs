//! Helpers shared by the integration tests.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Runs a future that completes on its first poll, as every in-memory store operation
/// (and a cache hit over one) does; no runtime, no allocation.
pub(crate) fn run<F: Future>(future: F) -> F::Output {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("expected the future to complete on its first poll"),
    }
}
