//! GraphQL subscriptions over WebSocket, with the limits async-graphql's
//! own `GraphQLWebSocket` lacks: a client must send `connection_init`
//! within a deadline, may hold only so many subscriptions at once, and is
//! disconnected when its token expires. (The largest message is set on the
//! upgrade; a larger one closes the socket with 1009.)
//!
//! The protocol itself (`graphql-transport-ws`, `graphql-ws`) is still
//! async-graphql's `http::WebSocket`; this loop sits between it and the
//! socket and reads the type and id of each message going either way.
//! Every `subscribe` (and the older `start`) passes the persisted query
//! gate here, text and binary frames alike, before the protocol parses
//! its query: registered-only mode holds on WebSockets too.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{WebSocket as ProtocolSocket, WebSocketProtocols, WsMessage};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::scope::TaskScope;
use crate::graphql::ApiSchema;
use crate::graphql::context::Caller;
use crate::persisted::{Admitted, PersistedQueries, Refusal, Requester};
use crate::state::AppState;

/// Limits of one WebSocket connection.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    pub max_message_bytes: usize,
    pub init_timeout: Duration,
    pub max_subscriptions: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            init_timeout: Duration::from_secs(10),
            max_subscriptions: 20,
        }
    }
}

/// Close codes: the WebSocket standard's, and graphql-transport-ws's.
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_UNAUTHORIZED: u16 = 4401;
const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// Messages from the client waiting for the protocol; a client that sends
/// more than this without waiting for answers is closed.
const INPUT_QUEUE: usize = 64;

/// Serves one upgraded connection until either side ends it.
pub(super) async fn serve(
    socket: WebSocket,
    schema: ApiSchema,
    protocol: WebSocketProtocols,
    app: AppState,
    limits: WsLimits,
) {
    let (mut sink, mut source) = socket.split();
    // Loads of this connection's subscriptions end with it.
    let scope = TaskScope::default();
    let _guard = scope.guard();
    // The token's `exp`, set by `connection_init`.
    let expires: Arc<Mutex<Option<i64>>> = Arc::default();

    let (input, queue) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
    let on_init = {
        let expires = expires.clone();
        let app = app.clone();
        move |payload: Value| async move { connection_init(&app, &scope, &expires, payload) }
    };
    let mut protocol_stream = Box::pin(
        ProtocolSocket::new(
            schema,
            tokio_stream::wrappers::ReceiverStream::new(queue),
            protocol,
        )
        .on_connection_init(on_init),
    );

    let mut active: HashSet<String> = HashSet::new();
    // Who the gate sees: set from the first `connection_init`, which the
    // protocol receives before any later message (one queue, in order).
    let mut requester: Option<Requester> = None;
    let mut acknowledged = false;
    let init_deadline = tokio::time::sleep(limits.init_timeout);
    tokio::pin!(init_deadline);
    let never = Duration::from_secs(100 * 365 * 24 * 3600);
    let expiry = tokio::time::sleep(never);
    tokio::pin!(expiry);

    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            incoming = source.next() => match incoming {
                None | Some(Ok(Message::Close(_))) => break None,
                Some(Err(e)) => {
                    // Over `max_message_size` is the one error worth an
                    // answer; anything else is a broken connection.
                    let text = e.to_string();
                    tracing::debug!(error = %text, "WebSocket read failed");
                    if text.contains("too long") || text.contains("too big") {
                        break Some((CLOSE_TOO_BIG, "message too big"));
                    }
                    break None;
                }
                // The protocol reads binary frames as it reads text ones, so
                // both pass the same checks.
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    let bytes = match message {
                        Message::Text(text) => text.as_bytes().to_vec(),
                        other => other.into_data().to_vec(),
                    };
                    let session = Session {
                        app: &app,
                        requester: &mut requester,
                        active: &mut active,
                        max_subscriptions: limits.max_subscriptions,
                    };
                    let bytes = match inspect(bytes, session).await {
                        Inbound::Forward(bytes) => bytes,
                        Inbound::Answer(answer) => {
                            if sink.send(Message::text(answer.to_string())).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                    };
                    if input.try_send(bytes).is_err() {
                        break Some((CLOSE_POLICY, "too many messages waiting"));
                    }
                }
                Some(Ok(_)) => {}
            },
            outgoing = protocol_stream.next() => match outgoing {
                None => break None,
                Some(WsMessage::Text(text)) => {
                    if let Some(value) = control_message(&text) {
                        match value["type"].as_str() {
                            Some("connection_ack") if !acknowledged => {
                                acknowledged = true;
                                let exp = *expires.lock().unwrap_or_else(|e| e.into_inner());
                                if let Some(exp) = exp {
                                    let left = exp - chrono::Utc::now().timestamp();
                                    let left = Duration::from_secs(left.max(0) as u64);
                                    expiry.as_mut().reset(tokio::time::Instant::now() + left);
                                }
                            }
                            Some("complete" | "error") => {
                                if let Some(id) = value["id"].as_str() {
                                    active.remove(id);
                                }
                            }
                            _ => {}
                        }
                    }
                    if sink.send(Message::text(text)).await.is_err() {
                        break None;
                    }
                }
                Some(WsMessage::Close(code, reason)) => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        })))
                        .await;
                    return;
                }
            },
            _ = &mut init_deadline, if !acknowledged => {
                break Some((CLOSE_INIT_TIMEOUT, "Connection initialisation timeout"));
            }
            _ = &mut expiry => {
                break Some((CLOSE_UNAUTHORIZED, "the token has expired"));
            }
        }
    };
    if let Some((code, reason)) = close {
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
}

/// The message parsed, unless it is a subscription's event (`next`, or
/// `data` in the older protocol): those are nearly every message and carry
/// nothing the connection acts on, so they are not parsed again on their
/// way out (500 subscribers make one event 500 messages). The protocol
/// writes the `type` field first.
fn control_message(text: &str) -> Option<Value> {
    if text.starts_with(r#"{"type":"next""#) || text.starts_with(r#"{"type":"data""#) {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// The token of a `connection_init` payload: `{"Authorization": "Bearer ..."}`
/// or `{"token": "..."}`.
fn init_token(payload: &Value) -> Option<&str> {
    payload
        .get("Authorization")
        .or_else(|| payload.get("authorization"))
        .and_then(|v| v.as_str())
        .and_then(crate::auth::bearer)
        .or_else(|| payload.get("token").and_then(|v| v.as_str()))
}

/// Authenticates `connection_init`.
fn connection_init(
    app: &AppState,
    scope: &TaskScope,
    expires: &Mutex<Option<i64>>,
    payload: Value,
) -> async_graphql::Result<async_graphql::Data> {
    let Some(token) = init_token(&payload) else {
        return Err(async_graphql::Error::new(
            "a bearer token is required in the connection_init payload",
        ));
    };
    match app.verifier.verify_with_expiry(token) {
        Ok((principal, exp)) => {
            *expires.lock().unwrap_or_else(|e| e.into_inner()) = Some(exp);
            Ok(super::data::request_data(
                app,
                Caller::Authenticated(principal),
                scope,
            ))
        }
        Err(e) => Err(async_graphql::Error::new(e.message)),
    }
}

/// What the loop knows of the connection, for `inspect`.
struct Session<'a> {
    app: &'a AppState,
    requester: &'a mut Option<Requester>,
    active: &'a mut HashSet<String>,
    max_subscriptions: usize,
}

enum Inbound {
    /// Hand these bytes to the protocol.
    Forward(Vec<u8>),
    /// Answer the client with this instead of forwarding.
    Answer(Value),
}

/// Reads one message from the client before the protocol does: notes who
/// `connection_init` names, passes `subscribe` through the persisted query
/// gate (a hash becomes its stored text) and the subscription cap.
async fn inspect(bytes: Vec<u8>, session: Session<'_>) -> Inbound {
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Inbound::Forward(bytes);
    };
    let kind = value["type"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "connection_init" if session.requester.is_none() => {
            *session.requester = Some(init_requester(session.app, &value["payload"]));
            Inbound::Forward(bytes)
        }
        // graphql-transport-ws and the older graphql-ws.
        "subscribe" | "start" => {
            let Some(id) = value["id"].as_str().map(str::to_string) else {
                return Inbound::Forward(bytes);
            };
            let requester = session.requester.unwrap_or(Requester::Anonymous);
            let replaced =
                match gate(&session.app.persisted, &mut value["payload"], requester).await {
                    Ok(replaced) => replaced,
                    Err(refusal) => {
                        return Inbound::Answer(error(
                            &kind,
                            &id,
                            &refusal.message,
                            refusal.code.as_str(),
                        ));
                    }
                };
            if let Some(answer) = count(&kind, id, session.active, session.max_subscriptions) {
                return Inbound::Answer(answer);
            }
            if replaced {
                Inbound::Forward(value.to_string().into_bytes())
            } else {
                Inbound::Forward(bytes)
            }
        }
        "complete" | "stop" => {
            if let Some(id) = value["id"].as_str() {
                session.active.remove(id);
            }
            Inbound::Forward(bytes)
        }
        _ => Inbound::Forward(bytes),
    }
}

/// Who the gate sees in a `connection_init` payload. The protocol checks
/// the token again (`connection_init`) and closes the socket if it is bad.
fn init_requester(app: &AppState, payload: &Value) -> Requester {
    match init_token(payload).map(|token| app.verifier.verify(token)) {
        Some(Ok(principal)) if principal.is_admin() => Requester::Admin,
        Some(Ok(_)) => Requester::User,
        _ => Requester::Anonymous,
    }
}

/// The persisted query gate on a `subscribe` payload; `true` when the
/// payload's query was replaced by the stored text its hash names.
async fn gate(
    persisted: &PersistedQueries,
    payload: &mut Value,
    requester: Requester,
) -> Result<bool, Refusal> {
    // Anything but a string is no query: the protocol refuses it later.
    let query = payload["query"].as_str().unwrap_or_default();
    let extension = payload
        .get("extensions")
        .and_then(|extensions| extensions.get("persistedQuery"));
    match persisted.admit(query, extension, requester).await? {
        Admitted::AsSent => Ok(false),
        Admitted::Stored(text) => {
            // An extension was read, so the payload is an object.
            if let Some(fields) = payload.as_object_mut() {
                fields.insert("query".into(), Value::String(text.to_string()));
            }
            Ok(true)
        }
    }
}

/// Counts subscriptions as the client starts them; one over the cap is
/// answered with an error for its id and never reaches the schema.
fn count(kind: &str, id: String, active: &mut HashSet<String>, max: usize) -> Option<Value> {
    if active.contains(&id) || active.len() < max {
        active.insert(id);
        return None;
    }
    let message = format!("at most {max} subscriptions per connection");
    Some(error(kind, &id, &message, "BAD_USER_INPUT"))
}

/// An `error` message for subscription `id`: a list of GraphQL errors in
/// graphql-transport-ws (`subscribe`), one error in graphql-ws (`start`).
fn error(kind: &str, id: &str, message: &str, code: &str) -> Value {
    let error = json!({"message": message, "extensions": {"code": code}});
    let payload = if kind == "subscribe" {
        json!([error])
    } else {
        error
    };
    json!({"id": id, "type": "error", "payload": payload})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast path of `control_message` rests on how the protocol writes
    /// an event: checked on a real subscription's messages, so a change of
    /// that format shows here instead of as a slower server.
    #[tokio::test]
    async fn events_skip_the_parse_and_control_messages_do_not() {
        use async_graphql::{EmptyMutation, Object, Schema, Subscription};
        use futures::stream::Stream;

        struct Query;
        #[Object]
        impl Query {
            async fn ping(&self) -> bool {
                true
            }
        }
        struct Ticks;
        #[Subscription]
        impl Ticks {
            async fn tick(&self) -> impl Stream<Item = i32> {
                futures::stream::iter([1, 2])
            }
        }
        let schema = Schema::new(Query, EmptyMutation, Ticks);
        let input = futures::stream::iter(
            [
                json!({"type": "connection_init"}),
                json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription { tick }"}}),
            ]
            .map(|m| m.to_string().into_bytes()),
        )
        .chain(futures::stream::pending());
        let socket = ProtocolSocket::new(schema, input, WebSocketProtocols::GraphQLWS);
        let texts: Vec<String> = socket
            .filter_map(|m| async move {
                match m {
                    WsMessage::Text(text) => Some(text),
                    WsMessage::Close(..) => None,
                }
            })
            .take(4)
            .collect()
            .await;
        let kinds: Vec<Option<String>> = texts
            .iter()
            .map(|t| control_message(t).map(|v| v["type"].as_str().unwrap_or("").to_string()))
            .collect();
        assert_eq!(
            kinds,
            [
                Some("connection_ack".to_string()),
                None,
                None,
                Some("complete".to_string())
            ],
            "{texts:?}"
        );
    }

    #[test]
    fn subscriptions_over_the_cap_are_refused_with_a_code() {
        let mut active = HashSet::new();
        for id in ["1", "2"] {
            assert_eq!(count("subscribe", id.into(), &mut active, 2), None);
        }
        let answer = count("subscribe", "3".into(), &mut active, 2)
            .expect("the third subscription must be refused");
        assert_eq!(answer["id"], "3");
        assert_eq!(answer["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
        // The older protocol answers one error, not a list.
        let answer = count("start", "4".into(), &mut active, 2).expect("refused");
        assert_eq!(answer["payload"]["extensions"]["code"], "BAD_USER_INPUT");
        // Completing one makes room; the same id again is no new one.
        active.remove("1");
        assert_eq!(count("subscribe", "3".into(), &mut active, 2), None);
        assert_eq!(count("subscribe", "3".into(), &mut active, 2), None);
    }
}
