//! One WebSocket connection to `GET /sync`, speaking automerge-repo's protocol v1.

use std::time::Duration;

use automerge::sync;
use futures_util::{SinkExt, StreamExt};
use serde_bytes::ByteBuf;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{DeviceError, Session};
use crate::DocumentId;
use crate::protocol::{self, Message, PROTOCOL_V1, PeerMetadata};

/// The largest frame the device accepts from the server.
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// What the server said about one document.
pub(crate) enum Incoming {
    Sync { id: DocumentId, data: Vec<u8> },
    Unavailable { id: DocumentId },
    Error(String),
}

pub(crate) struct Link {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    peer_id: String,
    server_id: String,
}

impl Link {
    /// Opens the socket with the access token in the `Authorization` header and completes the
    /// `join` / `peer` handshake. A refused token is [`DeviceError::SessionEnded`].
    pub(crate) async fn connect(
        base: &str,
        token: &str,
        session: &Session,
    ) -> Result<Self, DeviceError> {
        let url = match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}/sync"),
            None => format!("ws://{}/sync", base.trim_start_matches("http://")),
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| DeviceError::Network(e.to_string()))?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| DeviceError::Protocol(e.to_string()))?,
        );
        let (socket, _) = match tokio_tungstenite::connect_async(request).await {
            Ok(connected) => connected,
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status().as_u16() == 401 =>
            {
                return Err(DeviceError::SessionEnded("sync refused the token".into()));
            }
            Err(e) => return Err(DeviceError::Network(e.to_string())),
        };
        let mut link = Self {
            socket,
            peer_id: session.peer_id.clone(),
            server_id: String::new(),
        };
        link.send(&Message::Join {
            sender_id: session.peer_id.clone(),
            supported_protocol_versions: Some(vec![PROTOCOL_V1.into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(session.storage_id.clone()),
                is_ephemeral: false,
            }),
        })
        .await?;
        match link.receive(Duration::from_secs(30)).await? {
            Message::Peer { sender_id, .. } => link.server_id = sender_id,
            Message::Error { message, .. } => return Err(DeviceError::Protocol(message)),
            other => {
                return Err(DeviceError::Protocol(format!(
                    "expected peer, got {other:?}"
                )));
            }
        }
        Ok(link)
    }

    async fn send(&mut self, message: &Message) -> Result<(), DeviceError> {
        self.socket
            .send(Frame::Binary(protocol::encode(message).into()))
            .await
            .map_err(|e| DeviceError::Network(e.to_string()))
    }

    /// Sends a sync message for a document (`request` when the device does not have it yet).
    /// Nothing to say is not sent, except a request, which must reach the server.
    pub(crate) async fn sync(
        &mut self,
        id: &DocumentId,
        message: Option<sync::Message>,
        request: bool,
    ) -> Result<(), DeviceError> {
        let data = match (message, request) {
            (Some(message), _) => message.encode(),
            (None, true) => Vec::new(),
            (None, false) => return Ok(()),
        };
        let document_id = id.to_string();
        let sender_id = self.peer_id.clone();
        let target_id = self.server_id.clone();
        let data = ByteBuf::from(data);
        let message = if request {
            Message::Request {
                document_id,
                sender_id,
                target_id,
                data,
            }
        } else {
            Message::Sync {
                document_id,
                sender_id,
                target_id,
                data,
            }
        };
        self.send(&message).await
    }

    async fn receive(&mut self, wait: Duration) -> Result<Message, DeviceError> {
        loop {
            let frame = tokio::time::timeout(wait, self.socket.next())
                .await
                .map_err(|_| DeviceError::Timeout)?;
            match frame {
                Some(Ok(Frame::Binary(bytes))) => {
                    return protocol::decode(&bytes, MAX_FRAME)
                        .map_err(|e| DeviceError::Protocol(e.to_string()));
                }
                Some(Ok(Frame::Close(_))) | None => {
                    return Err(DeviceError::Network(
                        "the server closed the connection".into(),
                    ));
                }
                Some(Err(e)) => return Err(DeviceError::Network(e.to_string())),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next thing the server says about a document (other messages are skipped).
    pub(crate) async fn next(&mut self, wait: Duration) -> Result<Incoming, DeviceError> {
        loop {
            match self.receive(wait).await? {
                Message::Sync {
                    document_id, data, ..
                }
                | Message::Request {
                    document_id, data, ..
                } => {
                    if let Some(id) = DocumentId::parse(&document_id) {
                        return Ok(Incoming::Sync {
                            id,
                            data: data.into_vec(),
                        });
                    }
                }
                Message::DocUnavailable { document_id, .. } => {
                    if let Some(id) = DocumentId::parse(&document_id) {
                        return Ok(Incoming::Unavailable { id });
                    }
                }
                Message::Error { message, .. } => return Ok(Incoming::Error(message)),
                _ => {}
            }
        }
    }

    /// Says goodbye (so the server saves its sync state with this device) and closes.
    pub(crate) async fn leave(mut self) {
        let leave = Message::Leave {
            sender_id: self.peer_id.clone(),
        };
        let _ = self.send(&leave).await;
        let _ = self.socket.close(None).await;
    }
}
