//! echocache nats store (in progress).
