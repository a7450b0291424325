//! echocache memory store (in progress).
