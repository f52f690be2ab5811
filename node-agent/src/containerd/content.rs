//! Reading and writing blobs in containerd's content store.

use std::collections::HashMap;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{
    Info, InfoRequest, ReadContentRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use containerd_client::tonic::Code;
use futures::{Stream, StreamExt};
use prost_types::FieldMask;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::{Containerd, Error, Lease};

/// How many write messages may wait in the channel: bounds memory while the
/// producer (the layer pipeline) runs ahead of containerd. The pipeline
/// sends 32 KiB messages (see `commit::sink`): 1 MiB may wait.
const WRITE_QUEUE: usize = 32;

/// A blob being streamed into the content store. Data goes in order; the
/// digest is given at the end, when the producer knows it.
#[derive(Debug)]
pub struct BlobWriter {
    reference: String,
    offset: i64,
    sender: mpsc::Sender<WriteContentRequest>,
    task: Option<JoinHandle<Result<Written, Error>>>,
    client: Containerd,
    lease: Lease,
}

/// How a write stream ended well.
#[derive(Debug)]
enum Written {
    New,
    /// containerd had the blob already (same digest, same bytes).
    AlreadyThere,
}

impl Containerd {
    /// Opens a write stream for one new blob, under the lease.
    pub fn blob_writer(&self, lease: &Lease) -> BlobWriter {
        let reference = format!("dcs-{}", uuid::Uuid::new_v4());
        let (sender, receiver) = mpsc::channel(WRITE_QUEUE);
        let request = self.leased(ReceiverStream::new(receiver), lease);
        let mut client = ContentClient::new(self.channel.clone());
        let task = tokio::spawn(async move {
            let mut responses = match client.write(request).await {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(Written::AlreadyThere),
                Err(s) => return Err(Error::rpc("write content", s)),
            };
            loop {
                match responses.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Ok(Written::New),
                    // The blob is already there: same digest, same bytes.
                    Err(s) if s.code() == Code::AlreadyExists => return Ok(Written::AlreadyThere),
                    Err(s) => return Err(Error::rpc("write content", s)),
                }
            }
        });
        BlobWriter {
            reference,
            offset: 0,
            sender,
            task: Some(task),
            client: self.clone(),
            lease: lease.clone(),
        }
    }

    /// Writes a small blob in one go (configs, manifests).
    pub async fn write_blob(
        &self,
        lease: &Lease,
        data: &[u8],
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let mut writer = self.blob_writer(lease);
        writer.write(data.to_vec()).await?;
        writer.commit(digest, labels.clone()).await?;
        // The blob may have existed before with other labels; make sure the
        // garbage-collection references are on it.
        if !labels.is_empty() {
            self.set_content_labels(digest, labels).await?;
        }
        Ok(())
    }

    /// Sets labels on existing content (leaves other labels alone).
    pub async fn set_content_labels(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.request(UpdateRequest {
                info: Some(Info {
                    digest: digest.to_string(),
                    size: 0,
                    created_at: None,
                    updated_at: None,
                    labels,
                }),
                update_mask: Some(FieldMask { paths }),
            }))
            .await
            .map_err(|s| Error::rpc("label content", s))?;
        Ok(())
    }

    /// The size of a blob, or `None` when the store does not hold it.
    pub async fn content_size(&self, digest: &str) -> Result<Option<i64>, Error> {
        let response = ContentClient::new(self.channel.clone())
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        match response {
            Ok(r) => Ok(r.into_inner().info.map(|i| i.size)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::rpc("get content info", s)),
        }
    }

    /// Reads a whole blob into memory; only for small blobs (manifests,
    /// configs, indexes).
    pub async fn read_blob(&self, what: &'static str, digest: &str) -> Result<Vec<u8>, Error> {
        let mut stream = self.read_stream(what, digest).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data)
    }

    /// Streams a blob out of the content store.
    pub async fn read_stream(
        &self,
        what: &'static str,
        digest: &str,
    ) -> Result<impl Stream<Item = Result<Vec<u8>, Error>> + Send + 'static, Error> {
        let response = ContentClient::new(self.channel.clone())
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| match s.code() {
                Code::NotFound => Error::ContentNotFound {
                    what,
                    digest: digest.to_string(),
                },
                _ => Error::rpc("read content", s),
            })?;
        let digest = digest.to_string();
        Ok(response.into_inner().map(move |item| match item {
            Ok(r) => Ok(r.data),
            Err(s) if s.code() == Code::NotFound => Err(Error::ContentNotFound {
                what,
                digest: digest.clone(),
            }),
            Err(s) => Err(Error::rpc("read content", s)),
        }))
    }
}

impl BlobWriter {
    /// The name containerd knows this write by (its ingest).
    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), Error> {
        let message = self.message(WriteAction::Write, data);
        if self.sender.send(message).await.is_err() {
            return Err(self.failure().await);
        }
        Ok(())
    }

    /// The same as `write`, for the pipeline's blocking threads.
    pub fn blocking_write(&mut self, data: Vec<u8>) -> Result<(), Error> {
        let message = self.message(WriteAction::Write, data);
        if self.sender.blocking_send(message).is_err() {
            // The stream ended early; the real error comes out of `commit`.
            return Err(Error::Protocol(
                "containerd closed the content write stream".into(),
            ));
        }
        Ok(())
    }

    /// Finishes the blob: containerd checks the digest and size, then moves
    /// it from the ingest area into the store.
    pub async fn commit(
        mut self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        let mut message = self.message(WriteAction::Commit, Vec::new());
        message.total = self.offset;
        message.expected = digest.to_string();
        message.labels = labels;
        if self.sender.send(message).await.is_err() {
            return Err(self.failure().await);
        }
        let BlobWriter {
            sender,
            task,
            client,
            lease,
            ..
        } = self;
        drop(sender);
        let written = match task {
            Some(task) => match task.await {
                Ok(result) => result?,
                Err(e) => return Err(Error::Protocol(format!("content writer task failed: {e}"))),
            },
            None => {
                return Err(Error::Protocol(
                    "containerd closed the content write stream".into(),
                ));
            }
        };
        if let Written::AlreadyThere = written {
            // containerd refuses the commit of a blob it has without adding
            // it to our lease (its metadata store returns before that), so
            // a blob left unreferenced by an earlier commit (a refused one,
            // say) would be collected under us before the push: seen in the
            // end-to-end tests. The lease takes it now, and it must still
            // be there.
            client.add_content_to_lease(&lease, digest).await?;
            if client.content_size(digest).await?.is_none() {
                return Err(Error::ContentNotFound {
                    what: "the blob just written",
                    digest: digest.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Gives up on the blob; containerd drops the partial ingest with the lease.
    pub async fn abort(self) {
        let BlobWriter { sender, task, .. } = self;
        drop(sender);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn message(&mut self, action: WriteAction, data: Vec<u8>) -> WriteContentRequest {
        let offset = self.offset;
        self.offset += data.len() as i64;
        WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: 0,
            expected: String::new(),
            offset,
            data,
            labels: HashMap::new(),
        }
    }

    /// Why the stream ended early (after `blocking_write` failed).
    pub async fn into_error(mut self) -> Error {
        self.failure().await
    }

    /// The error that ended the stream early.
    async fn failure(&mut self) -> Error {
        let closed = || Error::Protocol("containerd closed the content write stream".into());
        match self.task.take() {
            Some(task) => match task.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => closed(),
                Err(e) => Error::Protocol(format!("content writer task failed: {e}")),
            },
            None => closed(),
        }
    }
}
