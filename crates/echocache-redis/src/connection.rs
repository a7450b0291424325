//! [`RedisConnection`]: the fred client (or pool) a [`RedisStore`](crate::RedisStore) runs
//! its commands on, and the error a failed command becomes.

use std::error::Error as StdError;
use std::fmt;

use echocache_core::StoreError;
use fred::clients::{Client, Pool, WithOptions};
use fred::error::Error as FredError;
use fred::interfaces::ClientLike;
use fred::types::config::Options;

/// The fred client a [`RedisStore`](crate::RedisStore) sends its commands through: one [`Client`] or a
/// round-robin [`Pool`] of them.
///
/// Both work against a single server, a replicated setup or Redis Cluster (the client's
/// configuration decides); the store never sends a command that spans two keys.
/// Build one with `From`: `RedisStore::new(client, ..)` accepts a [`Client`], a [`Pool`],
/// or a reference to either (cloned: fred clients are cheap handles to shared state).
#[non_exhaustive]
#[derive(Clone)]
pub enum RedisConnection {
    /// One client (one connection per server; commands are pipelined on it).
    Client(Client),
    /// A pool of clients; each command goes to the next connected one.
    Pool(Pool),
}

/// A client whose commands carry the store's per-command options (see
/// [`RedisConnection::commands`]).
pub(crate) type Commands = WithOptions<Client>;

impl RedisConnection {
    /// The client for the next command (for a pool, the next connected client in turn),
    /// with fred's per-command `fail_fast`: while the client is not connected, a command
    /// fails at once instead of waiting in fred's buffer for the reconnection. A buffered
    /// write that its caller gave up on (as the caches give up on a slow store call) would
    /// otherwise land whenever the client reconnects, over what others wrote meanwhile; and
    /// every call would wait out the command timeout while Redis is down.
    pub(crate) fn commands(&self) -> Commands {
        let client = match self {
            RedisConnection::Client(client) => client,
            RedisConnection::Pool(pool) => pool.next_connected(),
        };
        client.with_options(&Options {
            fail_fast: true,
            ..Options::default()
        })
    }

    /// Whether the client (or, for a pool, at least one client) is connected now.
    pub fn is_connected(&self) -> bool {
        match self {
            RedisConnection::Client(client) => client.is_connected(),
            RedisConnection::Pool(pool) => pool.clients().iter().any(ClientLike::is_connected),
        }
    }
}

impl From<Client> for RedisConnection {
    fn from(client: Client) -> Self {
        RedisConnection::Client(client)
    }
}

impl From<&Client> for RedisConnection {
    fn from(client: &Client) -> Self {
        RedisConnection::Client(client.clone())
    }
}

impl From<Pool> for RedisConnection {
    fn from(pool: Pool) -> Self {
        RedisConnection::Pool(pool)
    }
}

impl From<&Pool> for RedisConnection {
    fn from(pool: &Pool) -> Self {
        RedisConnection::Pool(pool.clone())
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the client id and shape: never the configuration, which may hold a password.
        match self {
            RedisConnection::Client(client) => f
                .debug_struct("Client")
                .field("id", &client.id())
                .finish_non_exhaustive(),
            RedisConnection::Pool(pool) => f
                .debug_struct("Pool")
                .field("size", &pool.size())
                .finish_non_exhaustive(),
        }
    }
}

/// A Redis command failed; the fred error is the source.
#[derive(Debug)]
struct CommandError {
    command: &'static str,
    source: FredError,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis {} failed", self.command)
    }
}

impl StdError for CommandError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// Maps a fred error to a backend [`StoreError`] at the store's boundary.
pub(crate) fn backend(command: &'static str) -> impl FnOnce(FredError) -> StoreError {
    move |source| StoreError::backend(CommandError { command, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_name_the_command_and_keep_the_cause() {
        let err = backend("GET")(FredError::new(
            fred::error::ErrorKind::IO,
            "connection refused",
        ));
        assert!(!err.is_decode());
        let cause = err.source().unwrap();
        assert_eq!(cause.to_string(), "redis GET failed");
        assert!(
            cause
                .source()
                .unwrap()
                .to_string()
                .contains("connection refused")
        );
    }
}
