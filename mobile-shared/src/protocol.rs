//! automerge-repo's wire protocol v1: CBOR messages over WebSocket.
//!
//! Field names and shapes follow the JavaScript `@automerge/automerge-repo-network-websocket`
//! adapter, which is what existing clients send (`peerMetadata`, `supportedProtocolVersions` as
//! a list), so that they work against Outpost unchanged.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The only protocol version there is.
pub const PROTOCOL_V1: &str = "1";

/// What a peer says about itself in `join` and `peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerMetadata {
    /// Names the peer's persistent storage; sync state is kept per storage id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_id: Option<String>,
    /// Whether the peer will come back with the same storage id.
    #[serde(default)]
    pub is_ephemeral: bool,
}

/// One protocol message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Message {
    /// Client to server: the handshake's first message.
    Join {
        /// The client's peer id.
        sender_id: String,
        /// Versions the client speaks; absent means "1".
        #[serde(default)]
        supported_protocol_versions: Option<Vec<String>>,
        /// The client's storage id and persistence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_metadata: Option<PeerMetadata>,
    },
    /// Server to client: the handshake's answer.
    Peer {
        /// The server's peer id.
        sender_id: String,
        /// The client's peer id.
        target_id: String,
        /// Always "1".
        selected_protocol_version: String,
        /// The server's storage id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_metadata: Option<PeerMetadata>,
    },
    /// Advisory: the sender is about to disconnect.
    Leave {
        /// Who leaves.
        sender_id: String,
    },
    /// Start syncing a document; answer `doc-unavailable` if you do not have it.
    Request {
        /// Which document.
        document_id: String,
        /// From.
        sender_id: String,
        /// To.
        target_id: String,
        /// An automerge sync message.
        data: ByteBuf,
    },
    /// An automerge sync message about a document.
    Sync {
        /// Which document.
        document_id: String,
        /// From.
        sender_id: String,
        /// To.
        target_id: String,
        /// An automerge sync message.
        data: ByteBuf,
    },
    /// The sender does not have the document (or, here, will not show it).
    DocUnavailable {
        /// Which document.
        document_id: String,
        /// From.
        sender_id: String,
        /// To.
        target_id: String,
    },
    /// A message for other peers of a document that is not stored (cursors, presence).
    Ephemeral {
        /// Which document.
        document_id: String,
        /// From.
        sender_id: String,
        /// To.
        target_id: String,
        /// Sequence number within the session.
        count: u64,
        /// The sender's ephemeral session.
        session_id: String,
        /// Arbitrary CBOR.
        data: ByteBuf,
    },
    /// A protocol error; the connection closes after it.
    Error {
        /// What went wrong.
        message: String,
        /// From.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sender_id: Option<String>,
        /// To.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target_id: Option<String>,
    },
    /// Remote-heads gossip subscription; accepted and ignored (Outpost does not gossip heads).
    RemoteSubscriptionChange {
        /// From.
        sender_id: String,
    },
    /// Remote-heads gossip; accepted and ignored.
    RemoteHeadsChanged {
        /// From.
        sender_id: String,
    },
}

impl Message {
    /// The sender's peer id, where the message has one.
    pub fn sender_id(&self) -> Option<&str> {
        match self {
            Message::Join { sender_id, .. }
            | Message::Peer { sender_id, .. }
            | Message::Leave { sender_id }
            | Message::Request { sender_id, .. }
            | Message::Sync { sender_id, .. }
            | Message::DocUnavailable { sender_id, .. }
            | Message::Ephemeral { sender_id, .. }
            | Message::RemoteSubscriptionChange { sender_id }
            | Message::RemoteHeadsChanged { sender_id } => Some(sender_id),
            Message::Error { sender_id, .. } => sender_id.as_deref(),
        }
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not CBOR, or not a message of this protocol.
    #[error("not a protocol message: {0}")]
    Malformed(String),
    /// Larger than the limit.
    #[error("the frame has {size} bytes; the limit is {limit}")]
    TooLarge {
        /// The frame's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Encodes a message as one CBOR frame.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing CBOR into a Vec cannot fail for these plain types.
    let _ = ciborium::ser::into_writer(message, &mut out);
    out
}

/// Decodes one CBOR frame, refusing frames over `limit` bytes before parsing them.
pub fn decode(frame: &[u8], limit: usize) -> Result<Message, DecodeError> {
    if frame.len() > limit {
        return Err(DecodeError::TooLarge {
            size: frame.len(),
            limit,
        });
    }
    ciborium::de::from_reader(frame).map_err(|e| DecodeError::Malformed(e.to_string()))
}
