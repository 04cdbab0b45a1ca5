//! The storage record decoders (`storage::record`), on arbitrary bytes:
//! - a corrupt record or key is `Corrupt` or `UnknownFormat`, never a panic;
//! - whatever decodes re-encodes to bytes that decode to the same value, and
//!   encoding that value again gives the same bytes.
//!
//! Input: one byte picks the record kind, the rest is the stored value (or key).

use bytes::Bytes;
use rookery::fuzzing::record::{self, Clock};
use rookery::storage::Error;

/// Runs every property on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let Some((&kind, value)) = data.split_first() else {
        return;
    };
    let clock = Clock::now();
    let bytes = Bytes::copy_from_slice(value);
    match kind % 7 {
        0 => {
            if let Some(message) = ok(record::decode_retained(bytes, clock)) {
                let encoded = record::encode_retained(&message, clock);
                let again = record::decode_retained(encoded.clone(), clock).expect("re-decodes");
                assert_eq!(again, message);
                assert_eq!(record::encode_retained(&again, clock), encoded);
            }
        }
        1 => {
            let seq = 7;
            if let Some(delivery) = ok(record::decode_delivery(bytes, seq, clock)) {
                let encoded = record::encode_delivery(&delivery, clock);
                let again =
                    record::decode_delivery(encoded.clone(), seq, clock).expect("re-decodes");
                assert_eq!(again, delivery);
                assert_eq!(record::encode_delivery(&again, clock), encoded);
            }
        }
        2 => {
            if let Some(state) = ok(record::decode_state(bytes)) {
                let encoded = record::encode_state(state);
                let again = record::decode_state(Bytes::copy_from_slice(&encoded));
                assert_eq!(again.expect("re-decodes"), state);
            }
        }
        3 => {
            if let Some((options, identifier)) = ok(record::decode_subscription(bytes)) {
                let encoded = record::encode_subscription(options, identifier);
                let again = record::decode_subscription(Bytes::copy_from_slice(&encoded));
                assert_eq!(again.expect("re-decodes"), (options, identifier));
            }
        }
        4 => {
            if let Some(session) = ok(record::decode_session(bytes, clock)) {
                let encoded = record::encode_session(&session, clock);
                let again = record::decode_session(encoded.clone(), clock).expect("re-decodes");
                assert_eq!(again, session);
                assert_eq!(record::encode_session(&again, clock), encoded);
            }
        }
        5 => {
            if let Some((client_id, rest)) = ok(record::split_key(value)) {
                let mut key = record::client_prefix(&client_id);
                key.extend_from_slice(rest);
                assert_eq!(key, value, "split_key then client_prefix");
            }
        }
        _ => {
            if let Some(seq) = ok(record::key_seq(value)) {
                assert_eq!(seq.to_be_bytes(), value);
            }
        }
    }
}

/// The decoded value, or `None` after checking that the error is one a corrupt
/// record may give.
fn ok<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(Error::Corrupt(_) | Error::UnknownFormat { .. }) => None,
        Err(error) => panic!("a record that does not decode failed with {error}"),
    }
}
