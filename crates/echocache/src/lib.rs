//! echocache facade (in progress).
