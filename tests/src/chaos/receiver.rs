//! The webhook endpoint of the chaos stack: records every delivery
//! (`webhook-id`, event type, snapshot id) and answers 200.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_type: String,
    pub snapshot_id: String,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Vec<Delivery>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

async fn hook(
    State(seen): State<Arc<Mutex<Vec<Delivery>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let delivery = Delivery {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        event_type: json["type"].as_str().unwrap_or_default().to_string(),
        snapshot_id: json["data"]["snapshotId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    seen.lock().expect("receiver lock").push(delivery);
    "ok"
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/hook", post(hook))
            .with_state(seen.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            seen,
            task: Arc::new(task),
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.seen.lock().expect("receiver lock").clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}
