//! Adapters between the blocking layer pipeline and async containerd I/O.

use std::io::{self, Read, Write};

use tokio::sync::mpsc;

use super::flush::IngestFlusher;
use crate::containerd::{BlobWriter, Error};
use crate::registry::upload::UploadTee;
use crate::spool::SpoolWriter;

/// Bytes per write to a spool file, and per write message to containerd,
/// which writes each message's data to its ingest file in one `write(2)`
/// (see `crate::spool`); the size of a write sets the
/// size of the page-cache folios the kernel allocates for it (ext4 has
/// large folios since Linux 6.16). Folios over 32 KiB (order 3) come from
/// the buddy allocator's large free blocks, which on a VM with free page
/// reporting are memory the host took back and must fault in again: perf
/// of a 1 GB commit showed containerd's copy into the page cache as 1.8 s
/// of CPU with 1 MiB messages, 0.4 s with 32 KiB ones (`dd` of 650 MB to a
/// new file, 4 s after freeing as much: 0.9-1.8 s of system time with
/// writes of 64 KiB or more, 0.2 s with 32 KiB). Folios of 32 KiB and less
/// come from the per-CPU free lists. The registry upload takes bigger
/// chunks (the tee gathers them).
const CHUNK: usize = 32 * 1024;

/// Where a layer's bytes are kept while it is built (see `spool`).
pub(super) enum Store {
    /// A blob in containerd's content store, written back as it grows.
    Containerd {
        writer: BlobWriter,
        flusher: IngestFlusher,
    },
    /// The agent's own file.
    Spool(SpoolWriter),
}

/// A `Write` that streams a layer into its store, for a blocking thread.
/// Each chunk also goes to the registry when a streaming upload is on.
pub(super) struct ContentSink {
    store: Store,
    tee: Option<UploadTee>,
    buffer: Vec<u8>,
    failed: bool,
    written: u64,
}

impl ContentSink {
    pub(super) fn new(store: Store, tee: Option<UploadTee>) -> Self {
        Self {
            store,
            tee,
            buffer: Vec::with_capacity(CHUNK),
            failed: false,
            written: 0,
        }
    }

    /// The store and the tee, after a successful build.
    pub(super) fn into_parts(self) -> (Store, Option<UploadTee>) {
        (self.store, self.tee)
    }

    /// Sends what is still buffered, to the store and to the registry.
    pub(super) fn flush_buffer(&mut self) -> io::Result<()> {
        self.send()?;
        if let Some(tee) = &mut self.tee {
            tee.flush();
        }
        Ok(())
    }

    /// The store: to finish after `flush_buffer`, or after a failure to
    /// read its real error.
    pub(super) fn into_store(self) -> Store {
        self.store
    }

    /// The store failed first (not the reading of the desktop).
    pub(super) fn failed(&self) -> bool {
        self.failed
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        if let Some(tee) = &mut self.tee {
            tee.offer(&chunk);
        }
        self.written += chunk.len() as u64;
        let sent = match &mut self.store {
            Store::Containerd { writer, flusher } => {
                let sent = writer
                    .blocking_write(chunk)
                    .map_err(|e| io::Error::other(e.to_string()));
                flusher.written(self.written);
                sent
            }
            Store::Spool(writer) => writer.write(chunk),
        };
        if sent.is_err() {
            self.failed = true;
        }
        sent
    }
}

impl Write for ContentSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let n = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blocking `Read` over chunks that an async task delivers.
pub(super) struct ChannelReader {
    receiver: mpsc::Receiver<Result<Vec<u8>, Error>>,
    current: Vec<u8>,
    position: usize,
}

impl ChannelReader {
    pub(super) fn new(receiver: mpsc::Receiver<Result<Vec<u8>, Error>>) -> Self {
        Self {
            receiver,
            current: Vec::new(),
            position: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.position == self.current.len() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.position = 0;
                }
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}
