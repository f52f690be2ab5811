//! Uploading the new layer while it is being built.
//!
//! The registry's streamed upload (`POST` a session, `PATCH` the bytes as
//! they come, `PUT ?digest=` once the digest is known) lets the push of the
//! layer run alongside reading and compressing it (when that does not
//! lengthen a pause; see `commit`). It never makes the reading wait: chunks are offered without
//! waiting, and if the registry falls behind the upload is abandoned and
//! the layer is pushed the ordinary way afterwards.

use std::time::Duration;

use bytes::Bytes;
use oci_client::Reference;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use super::RegistryError;

/// Chunks (of about 1 MiB) waiting for the registry before the upload is
/// given up: bounds memory when the registry is slower than compression.
const QUEUE: usize = 16;

/// How long a cancel waits for the registry to take the end of the body
/// (it then names where the session is) and to answer the DELETE.
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Where and how to reach the blob upload endpoint.
#[derive(Clone)]
pub struct UploadTarget {
    pub client: reqwest::Client,
    /// `http(s)://registry/v2/<repository>/blobs/uploads/`
    pub uploads_url: String,
    /// `Basic ...` or `Bearer ...`, when the registry wants one.
    pub authorization: Option<String>,
}

impl std::fmt::Debug for UploadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the `Authorization` value.
        f.debug_struct("UploadTarget")
            .field("uploads_url", &self.uploads_url)
            .finish_non_exhaustive()
    }
}

impl UploadTarget {
    pub fn new(
        client: reqwest::Client,
        target: &Reference,
        insecure: &[String],
        authorization: Option<String>,
    ) -> Self {
        let registry = target.resolve_registry();
        let scheme = if insecure
            .iter()
            .any(|r| r == registry || r == target.registry())
        {
            "http"
        } else {
            "https"
        };
        Self {
            client,
            uploads_url: format!(
                "{scheme}://{registry}/v2/{}/blobs/uploads/",
                target.repository()
            ),
            authorization,
        }
    }

    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.authorization {
            Some(value) => request.header(AUTHORIZATION, value),
            None => request,
        }
    }
}

/// An upload in progress.
#[derive(Debug)]
pub struct StreamingUpload {
    target: UploadTarget,
    sender: Option<mpsc::Sender<Bytes>>,
    patch: JoinHandle<Result<String, String>>,
    session: String,
    bytes: u64,
}

impl StreamingUpload {
    /// Opens an upload session and starts streaming into it.
    pub async fn start(target: UploadTarget) -> Result<Self, RegistryError> {
        let rejected = |reason: String| RegistryError::Rejected {
            registry: target.uploads_url.clone(),
            reason,
        };
        let response = target
            .request(reqwest::Method::POST, &target.uploads_url)
            .send()
            .await
            .map_err(|e| rejected(dcs_support::describe_chain(&e)))?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            return Err(rejected(format!(
                "HTTP {} opening an upload",
                response.status()
            )));
        }
        let session = location(&target.uploads_url, &response)
            .ok_or_else(|| rejected("no upload location".into()))?;
        let (sender, receiver) = mpsc::channel::<Bytes>(QUEUE);
        let body = reqwest::Body::wrap_stream(futures::StreamExt::map(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
            Ok::<_, std::io::Error>,
        ));
        let patch_target = target.clone();
        let patch_url = session.clone();
        let patch = tokio::spawn(async move {
            let response = patch_target
                .request(reqwest::Method::PATCH, &patch_url)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .send()
                .await
                .map_err(|e| dcs_support::describe_chain(&e))?;
            if response.status() != reqwest::StatusCode::ACCEPTED {
                return Err(format!("HTTP {} streaming the layer", response.status()));
            }
            location(&patch_url, &response).ok_or_else(|| "no upload location".to_string())
        });
        Ok(Self {
            target,
            sender: Some(sender),
            patch,
            session,
            bytes: 0,
        })
    }

    /// A handle for the blocking pipeline to offer chunks through.
    pub fn tee(&self) -> Option<UploadTee> {
        self.sender.clone().map(|sender| UploadTee {
            sender: Some(sender),
        })
    }

    /// Completes the upload under `digest`; `Ok(false)` when it was given up
    /// (the caller then pushes the layer the ordinary way).
    pub async fn finish(
        mut self,
        digest: &str,
        tee: Option<UploadTee>,
    ) -> Result<bool, RegistryError> {
        let abandoned = tee.as_ref().is_none_or(|t| t.sender.is_none());
        drop(tee);
        drop(self.sender.take());
        let patched = (&mut self.patch).await;
        let next = match (abandoned, patched) {
            (false, Ok(Ok(next))) => next,
            (true, Ok(Ok(next))) => {
                self.delete(&next).await;
                return Ok(false);
            }
            _ => {
                self.delete(&self.session).await;
                return Ok(false);
            }
        };
        let separator = if next.contains('?') { '&' } else { '?' };
        let url = format!("{next}{separator}digest={digest}");
        let response = self
            .target
            .request(reqwest::Method::PUT, &url)
            .header(reqwest::header::CONTENT_LENGTH, 0)
            .send()
            .await;
        match response {
            Ok(r) if r.status() == reqwest::StatusCode::CREATED => {
                self.bytes = 0;
                Ok(true)
            }
            Ok(r) => {
                tracing::info!(status = %r.status(), "streamed layer upload refused; pushing again");
                self.delete(&next).await;
                Ok(false)
            }
            Err(e) => {
                tracing::info!(error = %e, "streamed layer upload failed; pushing again");
                Ok(false)
            }
        }
    }

    /// Cancels the upload: nothing of it stays in the registry. The tee
    /// goes first (its end is what ends the body, so the PATCH finishes);
    /// the registry then answers with where the session is now, and that
    /// URL is deleted: the registry keeps what it received at the moved
    /// session. Every wait has a deadline: a registry that does not answer
    /// keeps the data until it expires the session.
    pub async fn cancel(mut self, tee: Option<UploadTee>) {
        drop(tee);
        drop(self.sender.take());
        let last = match tokio::time::timeout(CANCEL_WAIT, &mut self.patch).await {
            Ok(Ok(Ok(moved))) => moved,
            Ok(_) => self.session.clone(),
            Err(_) => {
                tracing::warn!("the registry did not finish the cancelled upload in time");
                self.patch.abort();
                self.session.clone()
            }
        };
        self.delete(&last).await;
    }

    /// Deletes an upload session (best effort, bounded).
    async fn delete(&self, url: &str) {
        let request = self.target.request(reqwest::Method::DELETE, url).send();
        match tokio::time::timeout(CANCEL_WAIT, request).await {
            Ok(Ok(response)) if response.status().is_success() => {}
            Ok(Ok(response)) => {
                tracing::info!(status = %response.status(), "the registry refused to delete an upload session");
            }
            Ok(Err(e)) => tracing::info!(error = %e, "cannot delete an upload session"),
            Err(_) => {
                tracing::info!("the registry did not answer the upload session's DELETE in time")
            }
        }
    }
}

/// The pipeline's side of a streaming upload.
#[derive(Debug)]
pub struct UploadTee {
    sender: Option<mpsc::Sender<Bytes>>,
}

impl UploadTee {
    /// Offers a chunk; never waits. A full queue (the registry is behind)
    /// or a closed one (the upload failed) ends the streaming upload.
    pub fn offer(&mut self, chunk: &[u8]) {
        let Some(sender) = &self.sender else {
            return;
        };
        match sender.try_send(Bytes::copy_from_slice(chunk)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                tracing::debug!("the registry fell behind; the layer will be pushed afterwards");
                self.sender = None;
            }
        }
    }

    pub fn is_alive(&self) -> bool {
        self.sender.is_some()
    }
}

fn location(base: &str, response: &reqwest::Response) -> Option<String> {
    let value = response.headers().get(LOCATION)?.to_str().ok()?;
    let base = reqwest::Url::parse(base).ok()?;
    base.join(value).ok().map(|u| u.to_string())
}
