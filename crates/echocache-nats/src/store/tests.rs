//! Unit tests of the store's pieces that need no server.

use super::*;

#[test]
fn server_ttls_round_up_to_whole_seconds() {
    assert_eq!(server_ttl_secs(Duration::ZERO), Duration::from_secs(1));
    assert_eq!(
        server_ttl_secs(Duration::from_millis(1)),
        Duration::from_secs(1)
    );
    assert_eq!(
        server_ttl_secs(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    assert_eq!(
        server_ttl_secs(Duration::from_millis(1_001)),
        Duration::from_secs(2)
    );
    assert_eq!(
        server_ttl_secs(Duration::from_secs(60)),
        Duration::from_secs(60)
    );
    assert_eq!(
        server_ttl_secs(Duration::MAX),
        Duration::from_secs(u64::MAX)
    );
}
