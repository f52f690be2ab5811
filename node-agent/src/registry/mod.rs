//! Pushing a committed image to a registry with `oci-client`.
//!
//! Only blobs the registry lacks are sent (HEAD first, then a
//! cross-repository mount when the base image lives in the same registry),
//! blobs stream out of containerd's content store, and the manifest goes
//! last: a push that fails half-way leaves no tag pointing at a partial image.

pub mod auth;
pub mod upload;

/// The one reference parser, shared with the API.
pub use dcs_protocol::reference;
use dcs_protocol::reference::{Parsed, Target};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::containerd::{self, Containerd};
use crate::image::Descriptor;
use crate::image::build::BuiltImage;
use crate::spool::SpooledBlob;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference \"{reference}\": {reason}")]
    BadReference { reference: String, reason: String },

    #[error("cannot read registry credentials from {path}: {reason}")]
    Credentials { path: String, reason: String },

    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },

    #[error("registry {registry} refused the credentials (401 Unauthorized){hint}")]
    Unauthorized {
        registry: String,
        hint: &'static str,
    },

    #[error("registry {registry} denied pushing to {repository} (403 Forbidden)")]
    Forbidden {
        registry: String,
        repository: String,
    },

    #[error(
        "layer {digest} of the base image is neither in registry {registry} nor in containerd's content store, so it cannot be pushed"
    )]
    MissingBlob { registry: String, digest: String },

    #[error("registry {registry} rejected the push: {reason}")]
    Rejected { registry: String, reason: String },

    #[error(transparent)]
    Containerd(#[from] containerd::Error),
}

/// How long reading one manifest may take.
const MANIFEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Where and how to push.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// A `dockerconfigjson` file with credentials.
    pub config_file: Option<PathBuf>,
    /// `host:port` of registries reached over plain HTTP.
    pub insecure: Vec<String>,
}

/// Bytes sent so far and bytes to send in all, for progress reports.
pub type ProgressFn = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What a push did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// Blobs uploaded, and their bytes.
    pub blobs_uploaded: u32,
    pub bytes_uploaded: u64,
    /// Blobs the registry already had.
    pub blobs_present: u32,
    /// Blobs mounted from the base image's repository.
    pub blobs_mounted: u32,
    /// The new layer went up while it was being built.
    pub layer_streamed: bool,
}

/// Parses a target reference; a tag is required (digests name content, they
/// cannot be pushed to).
pub fn parse_target(reference: &str) -> Result<Target, RegistryError> {
    reference::parse_target(reference).map_err(|reason| RegistryError::BadReference {
        reference: reference.to_string(),
        reason,
    })
}

/// The oci-client form of a target the API already parsed.
pub fn target_reference(target: &Target) -> Reference {
    Reference::with_tag(
        target.registry.clone(),
        target.repository.clone(),
        target.tag.clone(),
    )
}

/// The oci-client form of any parsed reference (`latest` when it has
/// neither tag nor digest).
pub fn to_reference(parsed: &Parsed) -> Reference {
    match (&parsed.tag, &parsed.digest) {
        (Some(tag), Some(digest)) => Reference::with_tag_and_digest(
            parsed.registry.clone(),
            parsed.repository.clone(),
            tag.clone(),
            digest.clone(),
        ),
        (None, Some(digest)) => Reference::with_digest(
            parsed.registry.clone(),
            parsed.repository.clone(),
            digest.clone(),
        ),
        (tag, None) => Reference::with_tag(
            parsed.registry.clone(),
            parsed.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".to_string()),
        ),
    }
}

/// The full name of a reference as containerd names images.
pub fn image_name(reference: &Reference) -> String {
    format!(
        "{}/{}:{}",
        reference.registry(),
        reference.repository(),
        reference.tag().unwrap_or("latest")
    )
}

pub struct Pusher {
    client: Client,
    auth: RegistryAuth,
    target: Reference,
    registry: String,
    insecure: Vec<String>,
    /// The `Authorization` value the registry accepted (for the streamed
    /// upload, which `oci-client` cannot do).
    authorization: std::sync::Mutex<Option<String>>,
    http: reqwest::Client,
    /// containerd's `blobs` directory, when readable from here.
    content_dir: std::sync::Mutex<Option<PathBuf>>,
    /// New layers of this commit in the agent's spool, by digest.
    spooled: std::sync::Mutex<HashMap<String, SpooledBlob>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials (`auth`, `authorization`).
        f.debug_struct("Pusher")
            .field("target", &self.target)
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    pub fn new(target: Reference, options: &RegistryOptions) -> Result<Self, RegistryError> {
        let registry = target.resolve_registry().to_string();
        let auth = match &options.config_file {
            Some(file) => match auth::load_credentials(file, target.registry())? {
                Some(c) => RegistryAuth::Basic(c.username.clone(), c.password().to_string()),
                None => RegistryAuth::Anonymous,
            },
            None => RegistryAuth::Anonymous,
        };
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure.clone()),
            // One PUT per blob, streamed: no chunk round trips.
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(300)),
            ..Default::default()
        };
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| RegistryError::Rejected {
                registry: registry.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client: Client::new(config),
            auth,
            target,
            registry,
            insecure: options.insecure.clone(),
            authorization: std::sync::Mutex::new(None),
            http,
            content_dir: std::sync::Mutex::new(None),
            spooled: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Where containerd keeps blobs on this node, when the agent can read it.
    pub fn set_content_dir(&self, dir: Option<PathBuf>) {
        if let Ok(mut slot) = self.content_dir.lock() {
            *slot = dir;
        }
    }

    /// A new layer this commit keeps in its spool, to push from there.
    pub fn keep_spooled(&self, digest: &str, blob: SpooledBlob) {
        self.spooled().insert(digest.to_string(), blob);
    }

    /// Lets a spooled layer go that the image will not have.
    pub fn forget_spooled(&self, digest: &str) {
        self.spooled().remove(digest);
    }

    /// The spooled layers. A thread that panicked holding the lock leaves
    /// the map as it was (each change is one insert or remove), and the
    /// layers in it are the only copy the push has: the lock is taken all
    /// the same.
    fn spooled(&self) -> std::sync::MutexGuard<'_, HashMap<String, SpooledBlob>> {
        self.spooled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The blob's spool file, from its start, if this commit spooled it.
    async fn spooled_blob(&self, layer: &Descriptor) -> Option<tokio::fs::File> {
        let file = {
            let spooled = self.spooled();
            let blob = spooled.get(&layer.digest)?;
            if blob.size() != layer.size as u64 {
                return None;
            }
            blob.reader().ok()?
        };
        Some(tokio::fs::File::from_std(file))
    }

    /// The blob's file in containerd's content store, if readable and of the
    /// expected size.
    async fn local_blob(&self, layer: &Descriptor) -> Option<tokio::fs::File> {
        if let Some(file) = self.spooled_blob(layer).await {
            return Some(file);
        }
        let dir = self.content_dir.lock().ok()?.clone()?;
        let (algorithm, hex) = layer.digest.split_once(':')?;
        let path = dir.join(algorithm).join(hex);
        let file = tokio::fs::File::open(&path).await.ok()?;
        let size = file.metadata().await.ok()?.len();
        (size == layer.size as u64).then_some(file)
    }

    /// Checks that the registry answers and accepts the credentials for a
    /// push, with the cheapest requests (a token, one HEAD).
    pub async fn check_access(&self, some_digest: &str) -> Result<(), RegistryError> {
        let token = self
            .client
            .auth(&self.target, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.classify(e))?;
        self.exists(some_digest).await?;
        let authorization = match (token, &self.auth) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, RegistryAuth::Basic(user, password)) => Some(format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{user}:{password}")
                )
            )),
            _ => None,
        };
        if let Ok(mut slot) = self.authorization.lock() {
            *slot = authorization;
        }
        Ok(())
    }

    /// Opens a streamed upload for the new layer; `None` when the registry
    /// will not (the layer is then pushed after it is built).
    pub async fn start_streaming_upload(&self) -> Option<upload::StreamingUpload> {
        let authorization = self.authorization.lock().ok()?.clone();
        let target = upload::UploadTarget::new(
            self.http.clone(),
            &self.target,
            &self.insecure,
            authorization,
        );
        match upload::StreamingUpload::start(target).await {
            Ok(upload) => Some(upload),
            Err(e) => {
                tracing::debug!(error = %e, "no streamed upload; pushing after the build");
                None
            }
        }
    }

    /// Pushes the blobs of `image` that the registry lacks; the manifest
    /// (which writes the tag) follows with [`Pusher::put_manifest`].
    pub async fn push_blobs(
        &self,
        containerd: &Containerd,
        image: &BuiltImage,
        base_name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<PushReport, RegistryError> {
        self.client
            .auth(&self.target, &self.auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.classify(e))?;

        let base = reference::parse(base_name)
            .ok()
            .map(|p| to_reference(&p))
            .filter(|b| {
                b.resolve_registry() == self.target.resolve_registry()
                    && b.repository() != self.target.repository()
            });

        let mut report = PushReport::default();
        let mut missing: Vec<&Descriptor> = Vec::new();
        for layer in &image.layers {
            if self.exists(&layer.digest).await? {
                report.blobs_present += 1;
            } else if let Some(base) = &base
                && self.mount(base, &layer.digest).await
            {
                report.blobs_mounted += 1;
            } else {
                missing.push(layer);
            }
        }
        let config_missing = !self.exists(&image.config_descriptor.digest).await?;

        let total: u64 = missing.iter().map(|d| d.size as u64).sum::<u64>()
            + if config_missing {
                image.config.len() as u64
            } else {
                0
            };
        let sent = Arc::new(AtomicU64::new(0));
        for layer in missing {
            self.upload_from_containerd(containerd, layer, total, &sent, progress.clone())
                .await?;
            report.blobs_uploaded += 1;
        }
        if config_missing {
            self.client
                .push_blob(
                    &self.target,
                    image.config.clone(),
                    &image.config_descriptor.digest,
                )
                .await
                .map_err(|e| self.classify(e))?;
            let done = sent.fetch_add(image.config.len() as u64, Ordering::Relaxed)
                + image.config.len() as u64;
            if let Some(progress) = &progress {
                progress(done, total);
            }
            report.blobs_uploaded += 1;
        } else {
            report.blobs_present += 1;
        }
        report.bytes_uploaded = sent.load(Ordering::Relaxed);
        Ok(report)
    }

    /// Writes the manifest, with the exact bytes whose digest we computed,
    /// and so the tag: last, once every blob it names is in the registry.
    pub async fn put_manifest(&self, image: &BuiltImage) -> Result<(), RegistryError> {
        let content_type =
            image
                .manifest_descriptor
                .media_type
                .parse()
                .map_err(|_| RegistryError::Rejected {
                    registry: self.registry.clone(),
                    reason: "invalid manifest media type".into(),
                })?;
        self.client
            .push_manifest_raw(&self.target, image.manifest.clone(), content_type)
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    /// The manifest or index `digest` of this client's repository, as the
    /// registry stores it, checked against the digest and refused past
    /// `max` bytes. oci-client reads the whole answer before we see its
    /// size, so the whole call has a deadline: a registry that drips bytes
    /// does not hold a job (its memory is still the answer's size).
    pub async fn fetch_manifest(&self, digest: &str, max: usize) -> Result<Vec<u8>, RegistryError> {
        let reference = Reference::with_digest(
            self.target.registry().to_string(),
            self.target.repository().to_string(),
            digest.to_string(),
        );
        let accepted = [
            crate::image::media_type::OCI_MANIFEST,
            crate::image::media_type::DOCKER_MANIFEST,
            crate::image::media_type::OCI_INDEX,
            crate::image::media_type::DOCKER_LIST,
        ];
        let pulled = tokio::time::timeout(
            MANIFEST_DEADLINE,
            self.client
                .pull_manifest_raw(&reference, &self.auth, &accepted),
        )
        .await
        .map_err(|_| RegistryError::Unreachable {
            registry: self.registry.clone(),
            reason: format!("no manifest within {} s", MANIFEST_DEADLINE.as_secs()),
        })?;
        let (bytes, _) = pulled.map_err(|e| self.classify(e))?;
        let rejected = |reason: String| RegistryError::Rejected {
            registry: self.registry.clone(),
            reason,
        };
        if bytes.len() > max {
            return Err(rejected(format!(
                "manifest {digest} is {} bytes, more than the {max} a manifest may have",
                bytes.len()
            )));
        }
        if crate::image::sha256_digest(&bytes) != digest {
            return Err(rejected(format!(
                "the manifest it sent for {digest} has another digest"
            )));
        }
        Ok(bytes.to_vec())
    }

    async fn exists(&self, digest: &str) -> Result<bool, RegistryError> {
        self.client
            .blob_exists(&self.target, digest)
            .await
            .map_err(|e| self.classify(e))
    }

    /// Asks the registry to link a blob from the base image's repository;
    /// `false` when it cannot (then the blob is uploaded).
    async fn mount(&self, base: &Reference, digest: &str) -> bool {
        match self.client.mount_blob(&self.target, base, digest).await {
            Ok(()) => self.exists(digest).await.unwrap_or(false),
            Err(e) => {
                tracing::debug!(digest, error = %e, "cross-repository mount refused");
                false
            }
        }
    }

    async fn upload_from_containerd(
        &self,
        containerd: &Containerd,
        layer: &Descriptor,
        total: u64,
        sent: &Arc<AtomicU64>,
        progress: Option<ProgressFn>,
    ) -> Result<(), RegistryError> {
        let local = self.local_blob(layer).await;
        if local.is_none() && containerd.content_size(&layer.digest).await?.is_none() {
            return Err(RegistryError::MissingBlob {
                registry: self.registry.clone(),
                digest: layer.digest.clone(),
            });
        }
        let sent = sent.clone();
        let count = move |len: usize| {
            let done = sent.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
            if let Some(progress) = &progress {
                progress(done, total);
            }
        };
        // From the spool, or straight from containerd's blob file when this
        // node's content store is readable (it is, where the overlay fast
        // path works): one copy less than through containerd's Read stream.
        if let Some(file) = local {
            let body =
                tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).map(move |chunk| {
                    chunk
                        .inspect(|data| count(data.len()))
                        .map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))
                });
            self.client
                .push_blob_stream(&self.target, body, &layer.digest, Some(layer.size as u64))
                .await
                .map_err(|e| self.classify(e))?;
            return Ok(());
        }
        let stream = containerd.read_stream("layer", &layer.digest).await?;
        let body = stream.map(move |chunk| match chunk {
            Ok(data) => {
                count(data.len());
                Ok(bytes::Bytes::from(data))
            }
            Err(e) => Err(OciDistributionError::GenericError(Some(e.to_string()))),
        });
        self.client
            .push_blob_stream(&self.target, body, &layer.digest, Some(layer.size as u64))
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }

    /// Turns a client error into one sentence a user can act on.
    fn classify(&self, error: OciDistributionError) -> RegistryError {
        let registry = self.registry.clone();
        let unauthorized = || RegistryError::Unauthorized {
            registry: registry.clone(),
            hint: if matches!(self.auth, RegistryAuth::Anonymous) {
                ": no credentials for it were given (--registry-config)"
            } else {
                ""
            },
        };
        let forbidden = || RegistryError::Forbidden {
            registry: registry.clone(),
            repository: self.target.repository().to_string(),
        };
        match error {
            // oci-client reports some refusals (a HEAD answered 401/403)
            // as transport errors carrying the status.
            OciDistributionError::RequestError(e) => match e.status().map(|s| s.as_u16()) {
                Some(401) => unauthorized(),
                Some(403) => forbidden(),
                Some(code) => RegistryError::Rejected {
                    registry: registry.clone(),
                    reason: format!("HTTP {code}"),
                },
                None if e.is_connect() || e.is_timeout() => RegistryError::Unreachable {
                    registry: registry.clone(),
                    reason: connection_reason(&e),
                },
                None => RegistryError::Rejected {
                    registry: registry.clone(),
                    reason: connection_reason(&e),
                },
            },
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
            OciDistributionError::ServerError { code: 401, .. } => unauthorized(),
            OciDistributionError::ServerError { code: 403, .. } => forbidden(),
            OciDistributionError::ServerError { code, message, .. } => RegistryError::Rejected {
                registry: registry.clone(),
                reason: format!("HTTP {code}: {}", message.trim()),
            },
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized))
                {
                    unauthorized()
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    forbidden()
                } else {
                    let reason = envelope
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ");
                    RegistryError::Rejected {
                        registry: registry.clone(),
                        reason,
                    }
                }
            }
            other => RegistryError::Rejected {
                registry: registry.clone(),
                reason: other.to_string(),
            },
        }
    }
}

/// The innermost useful words of a transport error ("Connection refused"),
/// without the URL, which adds nothing the registry name does not say.
fn connection_reason(error: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut reason = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;
    use tokio::io::AsyncReadExt;

    fn pusher() -> Pusher {
        crate::cli::install_crypto_provider();
        let target: Reference = "registry.test/workshops/desk:v1".parse().unwrap();
        Pusher::new(target, &RegistryOptions::default()).unwrap()
    }

    fn layer(digest: &str, size: usize) -> Descriptor {
        Descriptor {
            media_type: crate::image::media_type::OCI_LAYER_GZIP.to_string(),
            digest: digest.to_string(),
            size: size as i64,
            annotations: Default::default(),
            platform: None,
        }
    }

    #[tokio::test]
    async fn a_poisoned_lock_keeps_and_serves_spooled_layers() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let pusher = pusher();
        // A thread that panics while holding the lock poisons it.
        std::thread::scope(|scope| {
            let holder = scope.spawn(|| {
                let _held = pusher.spooled.lock().unwrap();
                panic!("poisons the lock on purpose");
            });
            assert!(holder.join().is_err());
        });
        assert!(pusher.spooled.is_poisoned());

        let mut writer = spool.writer().unwrap();
        writer.write(b"layer bytes".to_vec()).unwrap();
        pusher.keep_spooled("sha256:kept", writer.finish().unwrap());
        let mut file = pusher
            .spooled_blob(&layer("sha256:kept", 11))
            .await
            .expect("the spooled layer is kept and served");
        let mut read = Vec::new();
        file.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"layer bytes");

        pusher.forget_spooled("sha256:kept");
        assert!(
            pusher
                .spooled_blob(&layer("sha256:kept", 11))
                .await
                .is_none()
        );
    }
}
