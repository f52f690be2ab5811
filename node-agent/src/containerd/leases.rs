//! containerd's Leases service. Which leases are the agent's own, and what
//! a restarted agent does with them, is the commit's business
//! (`crate::commit::lease`), not this client's.

use std::collections::HashMap;

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    ListRequest as ListLeasesRequest, Resource,
};
use containerd_client::tonic::Code;

use super::{Containerd, Error};

/// A lease that keeps everything created under it alive until it is deleted
/// (or expires, if the agent dies before deleting it).
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
}

/// A lease found by `leases_labelled`, with its labels.
#[derive(Debug, Clone)]
pub struct LeaseInfo {
    pub lease: Lease,
    pub labels: HashMap<String, String>,
}

impl Containerd {
    /// Creates a lease that containerd drops by itself after `expire_after`,
    /// so a crashed agent cannot pin content forever; `labels` are set on
    /// it besides the expiry.
    pub async fn create_lease(
        &self,
        id: &str,
        expire_after: std::time::Duration,
        labels: Option<&[(&str, &str)]>,
    ) -> Result<Lease, Error> {
        let expire = chrono::Utc::now()
            + chrono::Duration::from_std(expire_after).unwrap_or(chrono::Duration::hours(1));
        let mut all_labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            expire.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )]);
        for (key, value) in labels.unwrap_or_default() {
            all_labels.insert(key.to_string(), value.to_string());
        }
        LeasesClient::new(self.channel.clone())
            .create(self.request(CreateLeaseRequest {
                id: id.to_string(),
                labels: all_labels,
            }))
            .await
            .map_err(|s| Error::rpc("create lease", s))?;
        Ok(Lease { id: id.to_string() })
    }

    /// Deletes a lease; one that is already gone is not an error.
    pub async fn delete_lease(&self, lease: &Lease) -> Result<(), Error> {
        let deleted = LeasesClient::new(self.channel.clone())
            .delete(self.request(DeleteLeaseRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::rpc("delete lease", s)),
        }
    }

    /// Puts a blob under the lease (it may be there already).
    pub async fn add_content_to_lease(&self, lease: &Lease, digest: &str) -> Result<(), Error> {
        LeasesClient::new(self.channel.clone())
            .add_resource(self.request(AddResourceRequest {
                id: lease.id.clone(),
                resource: Some(Resource {
                    id: digest.to_string(),
                    r#type: "content".to_string(),
                }),
            }))
            .await
            .map_err(|s| Error::rpc("add content to lease", s))?;
        Ok(())
    }

    /// The leases that carry the label `key` = `value`.
    pub async fn leases_labelled(&self, key: &str, value: &str) -> Result<Vec<LeaseInfo>, Error> {
        let filter = format!("labels.\"{key}\"=={value}");
        let leases = LeasesClient::new(self.channel.clone())
            .list(self.request(ListLeasesRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| Error::rpc("list leases", s))?
            .into_inner()
            .leases;
        Ok(leases
            .into_iter()
            .map(|l| LeaseInfo {
                lease: Lease { id: l.id },
                labels: l.labels,
            })
            .collect())
    }
}
