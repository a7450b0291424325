//! The value stored under a hashed key (a key too long for NATS, see `key.rs`): the full
//! key in front of the envelope, so that a read tells a hash collision from its own entry.

use echocache_core::StoreError;

/// Length of the key-length field in front of a hashed key's value.
const KEY_LEN_BYTES: usize = 8;

/// A hashed key's stored value: its full key first, so that a read can tell a hash
/// collision from its own entry. Layout: key length (`u64` big-endian), key, envelope.
pub(crate) fn frame_hashed(key: &str, envelope: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_LEN_BYTES + key.len() + envelope.len());
    out.extend_from_slice(&(key.len() as u64).to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(envelope);
    out
}

/// The envelope inside a hashed key's value, or `None` when the value belongs to another
/// key with the same hash.
pub(crate) fn unframe_hashed<'a>(
    key: &str,
    bytes: &'a [u8],
) -> Result<Option<&'a [u8]>, StoreError> {
    let malformed = || StoreError::decode_msg("hashed-key entry has no valid key header");
    let (len, rest) = bytes
        .split_first_chunk::<KEY_LEN_BYTES>()
        .ok_or_else(malformed)?;
    let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| malformed())?;
    if len > rest.len() {
        return Err(malformed());
    }
    let (stored_key, envelope) = rest.split_at(len);
    Ok((stored_key == key.as_bytes()).then_some(envelope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_frames_carry_the_key() {
        let framed = frame_hashed("long-key", b"ENVELOPE");
        assert_eq!(
            unframe_hashed("long-key", &framed).unwrap(),
            Some(&b"ENVELOPE"[..])
        );
        assert_eq!(unframe_hashed("other-key", &framed).unwrap(), None);
        assert_eq!(unframe_hashed("long-ke", &framed).unwrap(), None);
        assert!(unframe_hashed("k", b"short").unwrap_err().is_decode());
        let mut lying = framed.clone();
        lying[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(unframe_hashed("long-key", &lying).unwrap_err().is_decode());
    }
}
