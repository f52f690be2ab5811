//! Uploading the new layer while it is being built.
//!
//! The registry's streamed upload (`POST` a session, `PATCH` the bytes as
//! they come, `PUT ?digest=` once the digest is known) lets the push of the
//! layer run alongside reading and compressing it (when that does not
//! lengthen a pause; see `commit`).
//!
//! While the desktop is paused the reading never waits for the registry:
//! chunks are offered without waiting, and if the registry falls behind the
//! upload is abandoned and the layer is pushed the ordinary way afterwards.
//! While nothing is paused the reading waits for the registry instead (up to
//! `STALL` per chunk): giving up there meant pushing the whole layer again
//! after the build, serially, and on two cores shared by the compressor,
//! containerd and the registry, the registry does lag behind now and then.

use std::time::Duration;

use bytes::Bytes;
use oci_client::Reference;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

use super::RegistryError;

/// Chunks waiting for the registry before the upload is given up (or, for
/// a tee that waits, before it waits): bounds memory when the registry is
/// slower than compression.
const QUEUE: usize = 16;
/// The tee gathers what it is offered (32 KiB pieces, the content store's
/// write size) into chunks of this size for the registry.
const CHUNK: usize = 1024 * 1024;

/// How long a waiting tee waits for the registry to take one chunk before
/// it gives the streamed upload up (a registry that stopped reading must not
/// hang the commit; the layer is then pushed afterwards).
const STALL: Duration = Duration::from_secs(30);

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

    /// A handle for the blocking pipeline to offer chunks through. With
    /// `wait`, a chunk the registry cannot take yet waits for it (up to
    /// `STALL`); without, it ends the streamed upload (while paused: the
    /// pause must not wait for the network). Called on the runtime.
    pub fn tee(&self, wait: bool) -> Option<UploadTee> {
        self.sender.clone().map(|sender| UploadTee {
            sender: Some(sender),
            runtime: wait.then(tokio::runtime::Handle::current),
            pending: Vec::with_capacity(CHUNK),
        })
    }

    /// Completes the upload under `digest`; `Ok(false)` when it was given up
    /// (the caller then pushes the layer the ordinary way).
    pub async fn finish(
        mut self,
        digest: &str,
        tee: Option<UploadTee>,
    ) -> Result<bool, RegistryError> {
        // Bytes the tee still holds were never flushed: the body is short.
        let abandoned = tee
            .as_ref()
            .is_none_or(|t| t.sender.is_none() || !t.pending.is_empty());
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
    /// Set when the tee waits for a registry that is behind: the runtime
    /// that drives the upload (and the `STALL` timer).
    runtime: Option<tokio::runtime::Handle>,
    /// Offered bytes not sent yet (less than `CHUNK`); `flush` sends them.
    pending: Vec<u8>,
}

impl UploadTee {
    /// Offers bytes, from the pipeline's blocking thread; they go to the
    /// registry in chunks of `CHUNK`.
    pub fn offer(&mut self, data: &[u8]) {
        if self.sender.is_none() {
            return;
        }
        self.pending.extend_from_slice(data);
        if self.pending.len() >= CHUNK {
            self.send_pending();
        }
    }

    /// Sends what was offered and not sent yet: the end of the layer.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.send_pending();
        }
    }

    /// A closed queue (the upload failed) ends the streaming upload, and so
    /// does a full one (the registry is behind) unless this tee waits, for
    /// `STALL` at most.
    fn send_pending(&mut self) {
        let chunk = Bytes::from(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(CHUNK),
        ));
        let Some(sender) = &self.sender else {
            return;
        };
        let taken = match sender.try_send(chunk) {
            Ok(()) => true,
            Err(TrySendError::Full(chunk)) => match &self.runtime {
                Some(runtime) => {
                    // The timer is made inside `block_on`, in the runtime's
                    // context (this thread need not be one of its own).
                    let send = async { tokio::time::timeout(STALL, sender.send(chunk)).await };
                    matches!(runtime.block_on(send), Ok(Ok(())))
                }
                None => false,
            },
            Err(TrySendError::Closed(_)) => false,
        };
        if !taken {
            tracing::debug!("the registry fell behind; the layer will be pushed afterwards");
            self.sender = None;
            self.pending = Vec::new();
        }
    }

    /// From now on a full queue ends the upload instead of waiting: the
    /// desktop was paused (the pause must not wait for the network).
    pub fn never_wait(&mut self) {
        self.runtime = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tee(
        queue: usize,
        runtime: Option<tokio::runtime::Handle>,
    ) -> (UploadTee, mpsc::Receiver<Bytes>) {
        let (sender, receiver) = mpsc::channel(queue);
        let tee = UploadTee {
            sender: Some(sender),
            runtime,
            pending: Vec::new(),
        };
        (tee, receiver)
    }

    #[test]
    fn pieces_go_out_whole_in_chunks_and_the_rest_on_flush() {
        let data: Vec<u8> = (0..(CHUNK * 2 + 12_345) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut tee, mut receiver) = tee(QUEUE, None);
        for piece in data.chunks(32 * 1024) {
            tee.offer(piece);
        }
        tee.flush();
        assert!(tee.is_alive());
        drop(tee);
        let mut chunks = Vec::new();
        while let Some(chunk) = receiver.blocking_recv() {
            chunks.push(chunk);
        }
        assert_eq!(chunks.len(), 3);
        assert!(chunks[..2].iter().all(|c| c.len() == CHUNK));
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn a_tee_that_does_not_wait_gives_up_when_the_registry_is_behind() {
        let (mut tee, _receiver) = tee(1, None);
        tee.offer(&vec![1; CHUNK]);
        assert!(tee.is_alive());
        tee.offer(&vec![2; CHUNK]);
        assert!(!tee.is_alive());
    }

    #[test]
    fn a_tee_that_waits_keeps_up_with_a_slow_registry() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (mut tee, mut receiver) = tee(1, Some(runtime.handle().clone()));
        let registry = runtime.spawn(async move {
            let mut total = 0;
            while let Some(chunk) = receiver.recv().await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                total += chunk.len();
            }
            total
        });
        for _ in 0..5 {
            tee.offer(&vec![7; CHUNK]);
        }
        tee.flush();
        assert!(tee.is_alive());
        drop(tee);
        assert_eq!(runtime.block_on(registry).unwrap(), 5 * CHUNK);
    }
}
