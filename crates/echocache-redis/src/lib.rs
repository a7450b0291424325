//! echocache redis store (in progress).
