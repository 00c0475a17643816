//! The stored form of an instance: one record per instance, written whole at every checkpoint.
//!
//! Bytes on disk: the magic `DR`, the format version (u16, little endian), then the bincode body.
//! A record with another magic or version is refused with an error naming what was found.

use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::op::Command;

/// The version of the record layout written by this build.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: [u8; 2] = *b"DR";

/// A saved frame: where an instance is parked and the live locals it holds there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The suspension point's stable identity within its orchestration.
    pub point: String,
    /// The source line of the point's `.await` when the frame was written (for messages).
    pub line: u32,
    /// Hash of the identity and the layout: the frame is decoded only when it matches.
    pub fingerprint: u64,
    /// Names and type names of the stored locals, in order.
    pub layout: Vec<(String, String)>,
    /// The encoded locals.
    pub locals: Vec<u8>,
}

/// Where an instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum State {
    Running,
    Completed {
        output: Vec<u8>,
    },
    Failed {
        message: String,
        payload: Option<Vec<u8>>,
    },
    /// Refused to resume by this build; kept as it is and retried on the next open.
    Incompatible {
        message: String,
    },
}

/// The command an instance's current suspension point issued, with its dispatch state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    pub command: Command,
    /// Idempotency key handed to the activity: instance id and step number.
    pub key: String,
    /// Attempts that have failed and been recorded.
    pub failed_attempts: u32,
    /// Wall-clock milliseconds before which the next attempt must not start.
    pub not_before_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceRecord {
    pub orchestration: String,
    pub state: State,
    pub input: Vec<u8>,
    pub frame: Option<Frame>,
    pub pending: Option<Pending>,
    /// Number of checkpoints written after the start record.
    pub steps: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A stored record could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("not a durable record (bad magic {0:02x?})")]
    BadMagic([u8; 2]),
    #[error(
        "record format version {found} is not supported by this build (expects {FORMAT_VERSION})"
    )]
    UnknownVersion { found: u16 },
    #[error("record is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("record body does not decode: {0}")]
    Body(CodecError),
}

impl InstanceRecord {
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>, CodecError> {
        let body = codec::encode(self)?;
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        Ok(out)
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        let [m0, m1, v0, v1, body @ ..] = bytes else {
            return Err(RecordError::Truncated(bytes.len()));
        };
        if [*m0, *m1] != MAGIC {
            return Err(RecordError::BadMagic([*m0, *m1]));
        }
        let found = u16::from_le_bytes([*v0, *v1]);
        if found != FORMAT_VERSION {
            return Err(RecordError::UnknownVersion { found });
        }
        codec::decode(body).map_err(RecordError::Body)
    }

    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.state, State::Completed { .. } | State::Failed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InstanceRecord {
        InstanceRecord {
            orchestration: "o".into(),
            state: State::Running,
            input: vec![1, 2],
            frame: None,
            pending: None,
            steps: 0,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    #[test]
    fn round_trips() {
        let r = sample();
        assert_eq!(
            InstanceRecord::from_bytes(&r.to_bytes().unwrap()).unwrap(),
            r
        );
    }

    #[test]
    fn refuses_unknown_version_and_garbage() {
        let mut b = sample().to_bytes().unwrap();
        b[2] = 9;
        assert!(matches!(
            InstanceRecord::from_bytes(&b),
            Err(RecordError::UnknownVersion { found: 9 })
        ));
        assert!(matches!(
            InstanceRecord::from_bytes(b"D"),
            Err(RecordError::Truncated(1))
        ));
        assert!(matches!(
            InstanceRecord::from_bytes(b"XXXX"),
            Err(RecordError::BadMagic(_))
        ));
        let mut b = sample().to_bytes().unwrap();
        b.truncate(6);
        assert!(matches!(
            InstanceRecord::from_bytes(&b),
            Err(RecordError::Body(_))
        ));
    }
}
