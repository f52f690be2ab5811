//! containerd's Diff service: the fallback when the agent cannot read a
//! container's overlay upper directory itself.

use std::collections::HashMap;

use containerd_client::services::v1::DiffRequest;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::types::Mount;

use super::{Containerd, Error, Lease, from_proto_descriptor};
use crate::image::Descriptor;

impl Containerd {
    /// Asks containerd's Diff service for the changes between two sets of
    /// mounts; the result is written to the content store under the lease.
    pub async fn diff(
        &self,
        lower: Vec<Mount>,
        upper: Vec<Mount>,
        media_type: &str,
        lease: &Lease,
    ) -> Result<Descriptor, Error> {
        let response = DiffClient::new(self.channel.clone())
            .diff(self.leased(
                DiffRequest {
                    left: lower,
                    right: upper,
                    media_type: media_type.to_string(),
                    r#ref: format!("dcs-diff-{}", uuid::Uuid::new_v4()),
                    labels: HashMap::new(),
                    source_date_epoch: None,
                },
                lease,
            ))
            .await
            .map_err(|s| Error::rpc("diff", s))?;
        let descriptor = response
            .into_inner()
            .diff
            .ok_or_else(|| Error::Protocol("the Diff service returned no descriptor".into()))?;
        Ok(from_proto_descriptor(descriptor))
    }
}
