//! The webhook endpoint of the chaos stack: the harness's receiver
//! (`crate::webhook_receiver`), answering 200 to every delivery, and what
//! the checker reads off each one.

use crate::webhook_receiver::{self, Received};

pub use crate::webhook_receiver::Receiver;

/// One delivery as the checker sees it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    pub event_type: String,
    pub snapshot_id: String,
}

impl Delivery {
    fn of(request: &Received) -> Self {
        // A body that is not JSON still counts as a delivery (of no type).
        let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        Self {
            webhook_id: request.id(),
            event_type: json["type"].as_str().unwrap_or_default().to_string(),
            snapshot_id: json["data"]["snapshotId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }
}

/// Starts the endpoint; deliveries go to `receiver.url("/hook")`.
pub async fn start() -> Receiver {
    Receiver::start(webhook_receiver::ok()).await
}

/// Every delivery the endpoint got, in arrival order.
pub fn deliveries(receiver: &Receiver) -> Vec<Delivery> {
    receiver.requests().iter().map(Delivery::of).collect()
}
