//! `GET /sync`: automerge-repo's WebSocket protocol, authenticated before the upgrade.

use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use outpost_mobile::api::Problem;
use outpost_sync::{Outgoing, PeerIdentity};
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::crm::identity::access::{Actor, bearer_token};
use crate::error::ApiError;
use crate::platform::http::{ApiQuery, ClientAddress, RequestId};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sync_socket))
}

/// The token in the query string, for clients that cannot set headers on a WebSocket.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncParams {
    /// An access token, when the `Authorization` header cannot be set.
    pub token: Option<String>,
}

/// The authenticated caller of a sync upgrade: the header token, else `?token=`.
struct SyncCaller(Actor);

impl FromRequestParts<AppState> for SyncCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let ApiQuery(params) = ApiQuery::<SyncParams>::from_request_parts(parts, state).await?;
        let token = bearer_token(parts)
            .map(str::to_string)
            .or(params.token)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "sync needs an access token (Authorization header or ?token=)".into(),
                )
            })?;
        let RequestId(request_id) = RequestId::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        let ClientAddress(address) = ClientAddress::from_request_parts(parts, state)
            .await
            .unwrap_or_default();
        Actor::authenticate(state, &token, request_id, address)
            .await
            .map(SyncCaller)
    }
}

/// Sync documents with automerge-repo's WebSocket protocol v1 (CBOR frames). The peer id a
/// client joins with is bound to its user and device.
#[utoipa::path(get, path = "/sync", tag = "sync", params(SyncParams),
    responses(
        (status = 101, description = "Switching to the automerge-repo WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = Problem),
        (status = 401, description = "No valid access token", body = Problem),
    ))]
async fn sync_socket(
    State(state): State<AppState>,
    SyncCaller(actor): SyncCaller,
    upgrade: WebSocketUpgrade,
) -> Response {
    let identity = PeerIdentity {
        user_id: actor.user_id.clone(),
        device_id: actor.device_id.clone(),
    };
    let max = state.sync.max_frame_bytes();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve(state, identity, socket))
}

async fn serve(state: AppState, identity: PeerIdentity, socket: WebSocket) {
    use futures_util::{SinkExt, StreamExt};
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Outgoing::Frame(bytes) => {
                    if sink.send(WsMessage::Binary(bytes.into())).await.is_err() {
                        break;
                    }
                }
                Outgoing::Close => {
                    let _ = sink.send(WsMessage::Close(None)).await;
                    break;
                }
            }
        }
    });
    let mut connection = state.sync.open(identity, tx.clone());
    let mut closing = state.sync.closing();
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = closing.wait_for(|closing| *closing) => None,
        };
        let Some(Ok(message)) = message else { break };
        if writer.is_finished() {
            break;
        }
        match message {
            WsMessage::Binary(bytes) => {
                if state.sync.receive(&mut connection, &bytes).await.is_err() {
                    break;
                }
            }
            WsMessage::Text(_) => {
                let _ = state.sync.reject(&connection, "frames must be binary CBOR");
                break;
            }
            WsMessage::Close(_) => break,
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
        }
    }
    state.sync.close(&connection).await;
    drop(tx);
    drop(connection);
    let _ = writer.await;
}
