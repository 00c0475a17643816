//! How event payloads are stored: with the identity of the type they were raised with, so that a
//! waiter of another type gets a clear `EventError` instead of bytes that happen to decode (a
//! `1u8` read as `true`), or as JSON (raised by the admin API or the CLI), decoded by the
//! waiter's own type when it is delivered.
//!
//! Bytes: a 4-byte tag, then for a typed payload the type's name (`std::any::type_name`, as a
//! codec string) followed by the codec bytes of the value, and for a JSON payload the JSON text.
//! Payloads without a tag (buffered by builds before the tag existed) are decoded as they were.
//! Type names are compared as the compiler spells them: the sender and the waiter must name the
//! same type from the same crate path (a type moved to another module between a raise and its
//! delivery is refused, and can be raised again).

use crate::Persistable;
use crate::codec::{self, CodecError};
use serde::{Deserialize, Serialize};

const TYPED: [u8; 4] = [0xDE, 0x7E, 0x01, 0x54];
const JSON: [u8; 4] = [0xDE, 0x7E, 0x01, 0x4A];

/// The stored form of `value`, raised as a `T`.
pub(crate) fn encode_typed<T: Persistable>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(value)?;
    codec::check_readable::<T>(&body)?;
    let mut out = TYPED.to_vec();
    out.extend(codec::encode(std::any::type_name::<T>())?);
    out.extend(body);
    Ok(out)
}

/// The stored form of a JSON payload.
pub(crate) fn encode_json(value: &serde_json::Value) -> Vec<u8> {
    let mut out = JSON.to_vec();
    out.extend(value.to_string().into_bytes());
    out
}

/// The payload of event `name` as the waiter's type `T`.
pub(crate) fn decode<T: Persistable>(name: &str, bytes: &[u8]) -> Result<T, EventError> {
    let bad = |reason: String| EventError::BadPayload { name: name.to_owned(), reason };
    if let Some(rest) = bytes.strip_prefix(&TYPED) {
        let (sent, used) = codec::decode_prefix::<String>(rest).map_err(|e| bad(e.to_string()))?;
        let expected = std::any::type_name::<T>();
        if sent != expected {
            return Err(EventError::WrongType {
                name: name.to_owned(),
                sent,
                expected: expected.to_owned(),
            });
        }
        codec::decode(&rest[used..]).map_err(|e| bad(e.to_string()))
    } else if let Some(rest) = bytes.strip_prefix(&JSON) {
        serde_json::from_slice(rest).map_err(|e| {
            bad(format!("the JSON does not fit `{}`: {e}", std::any::type_name::<T>()))
        })
    } else {
        codec::decode(bytes).map_err(|e| bad(e.to_string()))
    }
}

/// Waiting for an external event did not give a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The wait's timeout passed first.
    #[error("timed out waiting for event `{0}`")]
    TimedOut(String),
    /// The payload raised does not decode as the awaited type.
    #[error("payload of event `{name}` does not decode: {reason}")]
    BadPayload {
        /// The event name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The payload was raised as another type than the one awaited.
    #[error("event `{name}` was raised as a `{sent}`, but this wait takes a `{expected}`")]
    WrongType {
        /// The event name.
        name: String,
        /// The type the payload was raised with.
        sent: String,
        /// The type the wait takes.
        expected: String,
    },
}

/// Why [`Ctx::send_event`](crate::Ctx::send_event) delivered nothing. Stored as the operation's
/// result: an orchestration resumed after a restart sees the same error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// No instance has this id.
    #[error("no instance `{0}` to send an event to")]
    NotFound(String),
    /// The instance has ended: it takes no more events.
    #[error("instance `{id}` has ended ({state}); the event was not delivered")]
    Finished {
        /// The instance id.
        id: String,
        /// How it ended.
        state: String,
    },
    /// The event was refused, and not delivered: the payload is over the limit, the receiver's
    /// inbox would outgrow its record limit, the receiver's record cannot be read.
    #[error("event for instance `{id}` refused: {reason}")]
    Refused {
        /// The instance id.
        id: String,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_arrives_as_the_type_it_was_raised_with() {
        let b = encode_typed(&"hello".to_owned()).unwrap();
        assert_eq!(decode::<String>("e", &b).unwrap(), "hello");
        let b = encode_typed(&7u64).unwrap();
        assert_eq!(decode::<u64>("e", &b).unwrap(), 7);
    }

    #[test]
    fn another_type_is_refused_by_name() {
        let b = encode_typed(&1u8).unwrap();
        match decode::<bool>("go", &b) {
            Err(EventError::WrongType { name, sent, expected }) => {
                assert_eq!((name.as_str(), sent.as_str(), expected.as_str()), ("go", "u8", "bool"));
            }
            other => panic!("{other:?}"),
        }
        let b = encode_typed(&"ab".to_owned()).unwrap();
        assert!(matches!(decode::<Vec<u8>>("e", &b), Err(EventError::WrongType { .. })));
    }

    #[test]
    fn json_is_decoded_by_the_waiters_type() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct Approval {
            by: String,
            ok: bool,
        }
        let b = encode_json(&serde_json::json!({ "by": "lead", "ok": true }));
        assert_eq!(decode::<Approval>("e", &b).unwrap(), Approval { by: "lead".into(), ok: true });
        assert_eq!(decode::<u64>("e", &encode_json(&serde_json::json!(5))).unwrap(), 5);
        let e = decode::<bool>("e", &encode_json(&serde_json::json!("yes"))).unwrap_err();
        assert!(e.to_string().contains("does not fit `bool`"), "{e}");
    }

    #[test]
    fn untagged_payloads_of_older_builds_still_decode() {
        let b = codec::encode(&42u32).unwrap();
        assert_eq!(decode::<u32>("e", &b).unwrap(), 42);
    }
}
