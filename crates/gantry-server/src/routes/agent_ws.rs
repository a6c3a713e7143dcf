//! `GET /api/v1/agents/connect`: the agent's one WebSocket (protocol in `gantry_api::agent`).

use crate::AppState;
use crate::auth::bearer;
use crate::error::{ApiResult, HttpError};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use gantry_api::agent::{AgentMsg, LogFrame, ServerMsg};
use gantry_store::db::AgentRow;
use std::time::Duration;

/// The agent behind the `Authorization` header.
#[derive(Debug)]
pub struct AgentAuth(AgentRow);

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, HttpError> {
        let token = bearer(parts).ok_or_else(HttpError::unauthorized)?;
        match s.engine.agent_by_token(&token).await? {
            Some(a) => Ok(AgentAuth(a)),
            None => Err(HttpError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown agent token: register the agent again (delete its state directory)",
            )),
        }
    }
}

pub async fn connect(
    AgentAuth(agent): AgentAuth,
    State(s): State<AppState>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    Ok(ws
        .max_message_size(64 << 20)
        .on_upgrade(move |socket| session(s, agent, socket)))
}

async fn session(s: AppState, agent: AgentRow, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    // The first message must be the hello.
    let hello = match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<AgentMsg>(&t).ok(),
        _ => None,
    };
    let Some(hello) = hello else {
        let _ = sink.close().await;
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ServerMsg>();
    let (conn, welcome) = match s.engine.agent_connected(&agent, hello, tx.clone()).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(agent = agent.id, "hello refused: {e}");
            let _ = sink.close().await;
            return;
        }
    };
    tracing::info!(agent = agent.id, name = %agent.name, "agent connected");
    if send(&mut sink, &welcome).await.is_err() {
        s.engine.agent_disconnected(agent.id, conn);
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if send(&mut sink, &msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    // No message for three heartbeats: the connection is dead (the lease decides the jobs).
    let silence = s.engine.config().heartbeat * 3 + Duration::from_secs(1);
    loop {
        let next = match tokio::time::timeout(silence, stream.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => break,
        };
        match next {
            Message::Text(t) => match serde_json::from_str::<AgentMsg>(&t) {
                Ok(msg) => match s.engine.agent_message(agent.id, msg).await {
                    Ok(()) => {}
                    // Its token was revoked: the connection ends.
                    Err(gantry_engine::EngineError::Unauthorized(e)) => {
                        tracing::warn!(agent = agent.id, "{e}");
                        break;
                    }
                    Err(e) => tracing::warn!(agent = agent.id, "message: {e}"),
                },
                Err(e) => tracing::warn!(agent = agent.id, "unreadable message: {e}"),
            },
            Message::Binary(b) => match LogFrame::decode(&b) {
                Some(frame) => {
                    let job_id = frame.job_id;
                    match s.engine.agent_log(agent.id, frame).await {
                        Ok(offset) => {
                            let _ = tx.send(ServerMsg::LogAck { job_id, offset });
                        }
                        Err(gantry_engine::EngineError::Unauthorized(e)) => {
                            tracing::warn!(agent = agent.id, "{e}");
                            break;
                        }
                        Err(e) => tracing::warn!(agent = agent.id, job = job_id, "log: {e}"),
                    }
                }
                None => tracing::warn!(agent = agent.id, "short log frame"),
            },
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
    s.engine.agent_disconnected(agent.id, conn);
    writer.abort();
    tracing::info!(agent = agent.id, "agent disconnected");
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msg: &ServerMsg,
) -> Result<(), axum::Error> {
    let text = serde_json::to_string(msg).expect("server messages serialize");
    sink.send(Message::Text(text.into())).await
}
