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

/// A container's mounts as the Diff service may be given them: an overlay
/// mount read-only (its upper directory becomes the top lower one, without
/// `upperdir` and `workdir`), as containerd mounts it for a diff itself.
/// containerd's overlay differ (2.x) lists only the upper directory of a
/// writable overlay and compares it with whatever lower it is given: for a
/// flatten, whose lower is several layers down, that would leave out every
/// layer in between. A read-only overlay goes to the walking differ, which
/// compares the two trees.
pub fn read_only_mounts(mounts: Vec<Mount>) -> Vec<Mount> {
    mounts
        .into_iter()
        .map(|mut mount| {
            if mount.r#type != "overlay" {
                return mount;
            }
            let upper = mount
                .options
                .iter()
                .find_map(|o| o.strip_prefix("upperdir=").map(String::from));
            let Some(upper) = upper else {
                return mount;
            };
            mount.options = mount
                .options
                .iter()
                .filter(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="))
                .map(|o| match o.strip_prefix("lowerdir=") {
                    Some(lower) => format!("lowerdir={upper}:{lower}"),
                    None => o.clone(),
                })
                .collect();
            mount
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writable_overlay_is_given_read_only() {
        let overlay = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                "index=off".into(),
                "workdir=/s/3/work".into(),
                "upperdir=/s/3/fs".into(),
                "lowerdir=/s/2/fs:/s/1/fs".into(),
                "userxattr".into(),
            ],
        };
        let [read_only] = read_only_mounts(vec![overlay]).try_into().unwrap();
        assert_eq!(
            read_only.options,
            ["index=off", "lowerdir=/s/3/fs:/s/2/fs:/s/1/fs", "userxattr"]
        );
        let bind = Mount {
            r#type: "bind".into(),
            source: "/s/9/fs".into(),
            target: String::new(),
            options: vec!["rbind".into(), "rw".into()],
        };
        assert_eq!(read_only_mounts(vec![bind.clone()]), vec![bind]);
    }
}
