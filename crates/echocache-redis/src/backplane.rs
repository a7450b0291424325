//! [`RedisBackplane`]: the [`Backplane`] of a [`TieredStore`](echocache_core::TieredStore)
//! over Redis pub/sub, one channel per prefix.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use echocache_core::{Backplane, BuildError, Listener, LockToken, StoreError};
use fred::clients::Client;
use fred::error::Error as FredError;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::types::config::Server;
use fred::types::{Message, Value};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::connect::{ConnectError, client, start};
use crate::connection::RedisConnection;
use crate::keys::KeySpace;

/// How long to wait between two attempts to subscribe while Redis does not answer.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(100);

/// How often the subscriber task looks whether its tiered store is gone.
const CLOSED_CHECK: Duration = Duration::from_secs(1);

/// A [`Backplane`] over Redis pub/sub: each change is `PUBLISH {prefix}:i "{node}\n{key}"`,
/// and a client of its own subscribes to that channel.
///
/// Why pub/sub rather than client-side-caching tracking (`CLIENT TRACKING … BCAST`): a
/// message names the key the echocache process changed, in any deployment (Cluster
/// included: `PUBLISH` reaches every node's subscribers), with nothing to configure on the
/// server; tracking would also report writes made outside echocache (Go services,
/// `redis-cli`), but needs RESP3 and a redirect connection per client, and reports
/// expiries too. Writes made outside echocache are bounded by the L1 TTL instead (see
/// docs/ARCHITECTURE.md).
///
/// Connection changes: when the subscriber's connection reports an error or a reconnection,
/// or falls behind (its message buffer overflowed), the tiered store stops serving from
/// L1; the backplane subscribes again and only then lets the L1 serve, having dropped what
/// it held (messages sent meanwhile may have been missed).
pub struct RedisBackplane {
    publisher: RedisConnection,
    subscriber: Client,
    channel: Arc<str>,
    /// This process's id, in every message it sends, so that it skips its own.
    node: Arc<str>,
    /// Made by [`connect`](Self::connect): quit when the tiered store is gone.
    owned: bool,
}

impl RedisBackplane {
    /// A backplane for the stores under `prefix`, publishing through `publisher` (the
    /// store's own client will do) and subscribing through `subscriber`, a client used for
    /// nothing else (a subscribed connection can send no other command). Start the
    /// subscriber yourself (`subscriber.init()` or `connect()`); the subscription is made
    /// when a [`TieredStore`](echocache_core::TieredStore) starts listening, and made again
    /// after every reconnection.
    ///
    /// # Errors
    ///
    /// [`BuildError::InvalidSetting`] naming `prefix`, as [`RedisStore::new`] refuses it.
    ///
    /// [`RedisStore::new`]: crate::RedisStore::new
    pub fn new(
        publisher: impl Into<RedisConnection>,
        subscriber: Client,
        prefix: &str,
    ) -> Result<Self, BuildError> {
        let keys = KeySpace::new(prefix)?;
        Ok(Self {
            publisher: publisher.into(),
            subscriber,
            channel: format!("{}:i", keys.prefix()).into(),
            node: LockToken::generate().as_str().into(),
            owned: false,
        })
    }

    /// A backplane over two fred clients of its own (publisher and subscriber), built with
    /// [`RedisStore::connect`](crate::RedisStore::connect)'s safe defaults: like it, it
    /// waits up to 500 ms for both connections (a publish sent before the publisher is
    /// connected fails at once), starts while Redis is down and subscribes once Redis
    /// answers.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`](crate::RedisStore::connect).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ConnectError> {
        let publisher = client(url).map_err(ConnectError::InvalidUrl)?;
        let subscriber = client(url).map_err(ConnectError::InvalidUrl)?;
        let backplane = Self {
            owned: true,
            ..Self::new(&publisher, subscriber.clone(), prefix)?
        };
        start(&[&publisher, &subscriber]).await;
        Ok(backplane)
    }

    /// The pub/sub channel: `{prefix}:i`.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("channel", &self.channel)
            .field("publisher", &self.publisher)
            .finish_non_exhaustive()
    }
}

/// `{node}\n{key}`.
fn message(node: &str, key: &str) -> String {
    format!("{node}\n{key}")
}

/// The key of a message from another node; `None` for this node's own messages and for
/// messages that are not echocache's.
fn key_from<'a>(node: &str, payload: &'a str) -> Option<&'a str> {
    let (from, key) = payload.split_once('\n')?;
    (from != node).then_some(key)
}

impl Backplane for RedisBackplane {
    async fn publish(&self, key: &str) -> Result<(), StoreError> {
        self.publisher
            .commands()
            .publish::<Value, _, _>(&*self.channel, message(&self.node, key))
            .await
            .map(drop)
            .map_err(crate::connection::backend("PUBLISH"))
    }

    /// Spawns the subscriber task on the current tokio runtime. Without one, the L1 never
    /// serves (every read goes to L2).
    fn listen(&self, listener: Listener) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(subscribe_and_relay(
            self.subscriber.clone(),
            Arc::clone(&self.channel),
            Arc::clone(&self.node),
            listener,
            self.owned,
        ));
    }
}

/// A connection that can subscribe to the backplane's channel: fred's client, or a test's
/// stand-in.
trait Subscriber: Send + Sync {
    /// One attempt to subscribe to `channel`; whether it worked.
    fn try_subscribe(&self, channel: &str) -> impl Future<Output = bool> + Send;
}

impl Subscriber for Client {
    async fn try_subscribe(&self, channel: &str) -> bool {
        self.subscribe(channel).await.is_ok()
    }
}

/// What the subscriber task hears from its client.
struct Events {
    messages: Receiver<Message>,
    reconnects: Receiver<Server>,
    errors: Receiver<(FredError, Option<Server>)>,
}

impl Events {
    /// `client`'s events from now on (taken before subscribing: a message or reconnection
    /// from then on is seen).
    fn of(client: &Client) -> Self {
        Self {
            messages: client.message_rx(),
            reconnects: client.reconnect_rx(),
            errors: client.error_rx(),
        }
    }
}

/// Subscribes until it works; `false` when the tiered store went away meanwhile.
async fn subscribe(subscriber: &impl Subscriber, channel: &str, listener: &Listener) -> bool {
    while !subscriber.try_subscribe(channel).await {
        if listener.is_closed() {
            return false;
        }
        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
    }
    true
}

/// The subscriber task: subscribes, then relays other nodes' messages to `listener`, and
/// its connection changes. A client the backplane made itself is quit when it ends.
async fn subscribe_and_relay(
    subscriber: Client,
    channel: Arc<str>,
    node: Arc<str>,
    listener: Listener,
    owned: bool,
) {
    let events = Events::of(&subscriber);
    relay(&subscriber, events, &channel, &node, &listener).await;
    if owned {
        let _ = subscriber.quit().await;
    }
}

/// Relays `events` to `listener` until the tiered store is gone (looked at every
/// [`CLOSED_CHECK`]) or the client's event channels close.
///
/// Subscribed on entry, and again after every sign that messages may have been missed (an
/// error on the connection, a reconnection, an overflowed buffer): the L1 stops serving,
/// and serves again, emptied, once the subscription is confirmed. The error and the
/// reconnection are separate events, seen in either order, so each one subscribes again
/// (a no-op on a channel already subscribed): an error seen after the reconnection must
/// not leave the L1 off for good.
async fn relay(
    subscriber: &impl Subscriber,
    mut events: Events,
    channel: &str,
    node: &str,
    listener: &Listener,
) {
    let mut closed_check = tokio::time::interval(CLOSED_CHECK);
    let mut resync = true;
    loop {
        if resync {
            listener.disconnected();
            if !subscribe(subscriber, channel, listener).await {
                break;
            }
            listener.connected();
            resync = false;
        }
        tokio::select! {
            message = events.messages.recv() => match message {
                Ok(message) => {
                    if let Some(payload) = message.value.as_str()
                        && let Some(key) = key_from(node, &payload)
                    {
                        listener.changed(key);
                    }
                }
                Err(RecvError::Lagged(_)) => resync = true,
                Err(RecvError::Closed) => break,
            },
            reconnected = events.reconnects.recv() => match reconnected {
                Ok(_) | Err(RecvError::Lagged(_)) => resync = true,
                Err(RecvError::Closed) => break,
            },
            error = events.errors.recv() => match error {
                Ok(_) | Err(RecvError::Lagged(_)) => resync = true,
                Err(RecvError::Closed) => break,
            },
            _ = closed_check.tick() => {
                if listener.is_closed() {
                    break;
                }
            }
        }
    }
    listener.disconnected();
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::SeqCst;

    use echocache_core::test_util::TestStore;
    use echocache_core::{L1Entry, TieredStore};
    use fred::error::ErrorKind;
    use tokio::sync::broadcast;

    use super::*;

    #[test]
    fn messages_carry_the_node_and_skip_their_sender() {
        let m = message("n1", "user:42\nodd");
        assert_eq!(key_from("n2", &m), Some("user:42\nodd"), "the key as sent");
        assert_eq!(key_from("n1", &m), None, "a node's own message");
        assert_eq!(key_from("n2", "no separator"), None);
    }

    #[test]
    fn the_channel_is_under_the_prefix_and_bad_prefixes_are_refused() {
        let client = Client::new(fred::types::config::Config::default(), None, None, None);
        let b = RedisBackplane::new(&client, client.clone(), "app").unwrap();
        assert_eq!(b.channel(), "app:i");
        assert!(RedisBackplane::new(&client, client.clone(), "").is_err());
        assert!(RedisBackplane::new(&client, client.clone(), "a:l").is_err());
    }

    /// Subscribes at once, counting the attempts.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Subscriber for Counting {
        async fn try_subscribe(&self, _: &str) -> bool {
            self.0.fetch_add(1, SeqCst);
            true
        }
    }

    /// Keeps the listener a tiered store hands it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Option<Listener>>>);

    impl Backplane for Captured {
        async fn publish(&self, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        fn listen(&self, listener: Listener) {
            *self.0.lock().unwrap() = Some(listener);
        }
    }

    /// Waits until `done`, for at most 5 s of (paused) time: sleeping, not yielding, so
    /// that the paused clock moves once every task waits.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        assert!(waited.await.is_ok(), "never: {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_l1_serves_again_whatever_the_order_of_an_error_and_its_reconnection() {
        let captured = Captured::default();
        let store: TieredStore<String, _, _, _> = TieredStore::new(
            TestStore::<L1Entry<String>>::new(),
            TestStore::<String>::new(),
            captured.clone(),
        );
        let listener = captured.0.lock().unwrap().take().expect("listening");
        let (_messages, messages) = broadcast::channel::<Message>(8);
        let (reconnect, reconnects) = broadcast::channel(8);
        let (error, errors) = broadcast::channel(8);
        let events = Events {
            messages,
            reconnects,
            errors,
        };
        let subscriber = Arc::new(Counting::default());
        let relayed = Arc::clone(&subscriber);
        tokio::spawn(async move { relay(&*relayed, events, "c", "me", &listener).await });
        let attempts = || subscriber.0.load(SeqCst);
        until("subscribed", || attempts() == 1 && store.is_l1_serving()).await;

        // The reconnection is seen first, then the error of the connection it replaced.
        reconnect.send(Server::new("127.0.0.1", 6379)).unwrap();
        until("subscribed again", || {
            attempts() == 2 && store.is_l1_serving()
        })
        .await;
        error
            .send((FredError::new(ErrorKind::IO, "closed"), None))
            .unwrap();
        until("the error made it subscribe again", || attempts() == 3).await;
        until("the L1 serves after the error", || store.is_l1_serving()).await;
    }
}
