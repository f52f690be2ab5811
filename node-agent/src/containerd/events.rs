//! containerd's Events service: the agent's inventory follows it.

use containerd_client::services::v1::SubscribeRequest;
use containerd_client::services::v1::events_client::EventsClient;
use futures::StreamExt;

use super::{Containerd, Error};

impl Containerd {
    /// A stream that yields whenever a container or task of this namespace
    /// changes (created, started, exited, deleted, ...).
    pub async fn subscribe_changes(
        &self,
    ) -> Result<impl futures::Stream<Item = ()> + Send + 'static, Error> {
        let namespace = &self.namespace;
        let filters = vec![
            format!("namespace=={namespace},topic~=\"^/containers/\""),
            format!("namespace=={namespace},topic~=\"^/tasks/\""),
        ];
        let stream = EventsClient::new(self.channel.clone())
            .subscribe(SubscribeRequest { filters })
            .await
            .map_err(|s| Error::rpc("subscribe to events", s))?
            .into_inner();
        Ok(stream
            .take_while(|item| futures::future::ready(item.is_ok()))
            .map(|_| ()))
    }
}
