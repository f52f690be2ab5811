//! GraphQL over WebSocket (`graphql-transport-ws`) against an [`Api`]:
//! subscriptions, and the handshake itself for the tests that attack it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::Api;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server answered to a `connection_init`.
#[derive(Debug, Clone, PartialEq)]
pub enum WsOutcome {
    /// `connection_ack`.
    Ack,
    /// The server closed the socket (code, reason).
    Closed(u16, String),
    /// Another message.
    Message(Value),
    /// The stream ended without a close frame, or nothing came in time.
    Ended(String),
}

/// An open subscription, or a connection to send subscriptions on.
#[derive(Debug)]
pub struct Subscription {
    socket: Socket,
}

impl Api {
    /// A socket to `/graphql` speaking `graphql-transport-ws`, before any
    /// message.
    async fn connect_ws(&self) -> Socket {
        let mut request = format!("ws://127.0.0.1:{}/graphql", self.port)
            .into_client_request()
            .expect("ws request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket connect");
        socket
    }

    /// Opens a `graphql-transport-ws` subscription.
    pub async fn subscribe(&self, token: &str, query: &str, variables: Value) -> Subscription {
        let mut connection = self.ws_connection(token).await;
        let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
        connection.send(&subscribe).await;
        connection
    }

    /// A `graphql-transport-ws` connection, initialised with `token` and
    /// acknowledged, before any subscription (send them with
    /// [`Subscription::send`]).
    pub async fn ws_connection(&self, token: &str) -> Subscription {
        let mut socket = self.connect_ws().await;
        let init = json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}});
        send(&mut socket, &init, "send init").await;
        loop {
            let message = socket.next().await.expect("ack").expect("ws message");
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).expect("json");
                assert_eq!(value["type"], "connection_ack", "{value}");
                break;
            }
        }
        Subscription { socket }
    }

    /// Opens a `graphql-transport-ws` socket, sends `connection_init` with
    /// this payload (`None`: none at all) and reports the first answer.
    pub async fn ws_init(&self, payload: Option<Value>) -> WsOutcome {
        let mut socket = self.connect_ws().await;
        let init = match payload {
            Some(payload) => json!({"type": "connection_init", "payload": payload}),
            None => json!({"type": "connection_init"}),
        };
        send(&mut socket, &init, "send init").await;
        first_answer(&mut socket).await
    }

    /// Opens a socket and sends `subscribe` without any `connection_init`.
    pub async fn ws_subscribe_without_init(&self, query: &str) -> WsOutcome {
        let mut socket = self.connect_ws().await;
        let subscribe = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
        send(&mut socket, &subscribe, "send subscribe").await;
        first_answer(&mut socket).await
    }
}

async fn send(socket: &mut Socket, message: &Value, what: &str) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect(what);
}

async fn first_answer(socket: &mut Socket) -> WsOutcome {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return WsOutcome::Ended("no answer within 10 s".into()),
            Ok(None) => return WsOutcome::Ended("stream ended".into()),
            Ok(Some(Err(e))) => return WsOutcome::Ended(format!("error: {e}")),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).expect("json");
                if value["type"] == "connection_ack" {
                    return WsOutcome::Ack;
                }
                return WsOutcome::Message(value);
            }
            Message::Close(frame) => {
                return match frame {
                    Some(frame) => WsOutcome::Closed(frame.code.into(), frame.reason.to_string()),
                    None => WsOutcome::Closed(1005, String::new()),
                };
            }
            _ => continue,
        }
    }
}

impl Subscription {
    /// Sends a message as a text frame.
    pub async fn send(&mut self, message: &Value) {
        send(&mut self.socket, message, "send a message").await;
    }

    /// Sends a message as a binary frame (the protocol reads both).
    pub async fn send_binary(&mut self, message: &Value) {
        self.socket
            .send(Message::binary(message.to_string().into_bytes()))
            .await
            .expect("send a binary message");
    }

    /// The data of every `next` payload until nothing comes for `quiet`
    /// (or the subscription ends).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        let mut all = Vec::new();
        while let Some(data) = self.next(quiet).await {
            all.push(data);
        }
        all
    }

    /// The next `next` payload's data, or `None` at `complete`, an error,
    /// the end of the socket or the timeout.
    pub async fn next(&mut self, timeout: Duration) -> Option<Value> {
        let message = self.next_message(timeout).await?;
        (message["type"] == "next").then(|| message["payload"]["data"].clone())
    }

    /// The next server message as it is (`next`, `error`, `complete`, ...),
    /// answering pings; `None` when the socket ends or nothing comes in time.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??
                .ok()?;
            match message {
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).ok()?;
                    if value["type"] == "ping" {
                        let _ = self
                            .socket
                            .send(Message::text(json!({"type": "pong"}).to_string()))
                            .await;
                        continue;
                    }
                    return Some(value);
                }
                Message::Close(frame) => {
                    return Some(
                        json!({"type": "close", "frame": frame.map(|f| f.reason.to_string())}),
                    );
                }
                _ => continue,
            }
        }
    }
}
