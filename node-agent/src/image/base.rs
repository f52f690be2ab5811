//! Finding the image a container runs: its record, the manifest for this
//! platform and the config.

use crate::containerd::{self, Containerd};

use super::{Descriptor, Index, Manifest, host_platform, media_type};

/// The image a container was created from, resolved to one platform.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The name of the image record, e.g. `docker.io/library/ubuntu:24.04`.
    pub name: String,
    /// The platform manifest's descriptor.
    pub manifest_descriptor: Descriptor,
    pub manifest: Manifest,
    /// The config as JSON, kept whole so that fields this agent does not know
    /// survive into the new image.
    pub config: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum BaseImageError {
    #[error("container \"{0}\" has no image, so there is nothing to build on")]
    NoImage(String),
    #[error("the image \"{0}\" of the container is no longer in containerd")]
    ImageGone(String),
    #[error("the image \"{name}\" has no manifest for {platform}")]
    NoPlatform { name: String, platform: String },
    #[error("the image \"{name}\" has an unsupported {what}: {detail}")]
    Unsupported {
        name: String,
        what: &'static str,
        detail: String,
    },
    #[error(transparent)]
    Containerd(#[from] containerd::Error),
}

impl BaseImage {
    /// Resolves the image named `name` (from a container's record).
    pub async fn resolve(
        client: &Containerd,
        container_id: &str,
        name: &str,
    ) -> Result<Self, BaseImageError> {
        if name.is_empty() {
            return Err(BaseImageError::NoImage(container_id.to_string()));
        }
        let record = client
            .image(name)
            .await?
            .ok_or_else(|| BaseImageError::ImageGone(name.to_string()))?;
        let target = record
            .target
            .map(containerd::from_proto_descriptor)
            .ok_or_else(|| BaseImageError::ImageGone(name.to_string()))?;
        let unsupported = |what, detail: String| BaseImageError::Unsupported {
            name: name.to_string(),
            what,
            detail,
        };

        let manifest_descriptor = match target.media_type.as_str() {
            media_type::OCI_INDEX | media_type::DOCKER_LIST => {
                let bytes = client.read_blob("image index", &target.digest).await?;
                let index: Index = serde_json::from_slice(&bytes)
                    .map_err(|e| unsupported("index", e.to_string()))?;
                pick_platform(&index).ok_or_else(|| BaseImageError::NoPlatform {
                    name: name.to_string(),
                    platform: platform_text(),
                })?
            }
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST => target,
            other => return Err(unsupported("media type", other.to_string())),
        };
        let bytes = client
            .read_blob("image manifest", &manifest_descriptor.digest)
            .await?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| unsupported("manifest", e.to_string()))?;
        let bytes = client
            .read_blob("image config", &manifest.config.digest)
            .await?;
        let config: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| unsupported("config", e.to_string()))?;
        if !config.is_object() {
            return Err(unsupported("config", "not a JSON object".into()));
        }
        Ok(Self {
            name: name.to_string(),
            manifest_descriptor,
            manifest,
            config,
        })
    }
}

/// The manifest for this host's platform. An entry without a platform is
/// taken only when it is the only one (single-platform indexes often omit it).
pub(crate) fn pick_platform(index: &Index) -> Option<Descriptor> {
    let host = host_platform();
    let is_manifest = |d: &&Descriptor| {
        matches!(
            d.media_type.as_str(),
            media_type::OCI_MANIFEST | media_type::DOCKER_MANIFEST
        )
    };
    let matching = index.manifests.iter().filter(is_manifest).find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == host.os && p.architecture == host.architecture)
    });
    if let Some(found) = matching {
        return Some(found.clone());
    }
    let manifests: Vec<&Descriptor> = index.manifests.iter().filter(is_manifest).collect();
    match manifests.as_slice() {
        [only] if only.platform.is_none() => Some((*only).clone()),
        _ => None,
    }
}

fn platform_text() -> String {
    let p = host_platform();
    format!("{}/{}", p.os, p.architecture)
}
