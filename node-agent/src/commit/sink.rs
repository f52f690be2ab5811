//! Adapters between the blocking layer pipeline and async containerd I/O.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// Set when the commit is gone (cancelled): every chunk is refused
    /// from then on, which fails the build at its next output and so ends
    /// the reading of the desktop.
    stop: Arc<AtomicBool>,
}

impl ContentSink {
    pub(super) fn new(store: Store, tee: Option<UploadTee>, stop: Arc<AtomicBool>) -> Self {
        Self {
            store,
            tee,
            buffer: Vec::with_capacity(CHUNK),
            failed: false,
            written: 0,
            stop,
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
        if self.stop.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
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

/// Why the build's I/O fails once its commit is gone. Not `Interrupted`,
/// which `write_all` and `read_exact` would retry.
fn cancelled() -> io::Error {
    io::Error::other("the commit was cancelled")
}

/// A blocking `Read` over chunks that an async task delivers.
pub(super) struct ChannelReader {
    receiver: mpsc::Receiver<Result<Vec<u8>, Error>>,
    current: Vec<u8>,
    position: usize,
    /// Set when the commit is gone: reading fails from then on.
    stop: Arc<AtomicBool>,
}

impl ChannelReader {
    pub(super) fn new(
        receiver: mpsc::Receiver<Result<Vec<u8>, Error>>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            receiver,
            current: Vec::new(),
            position: 0,
            stop,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(cancelled());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    #[test]
    fn a_stopped_sink_refuses_every_chunk_and_is_not_a_store_failure() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = ContentSink::new(Store::Spool(spool.writer().unwrap()), None, stop.clone());
        sink.write_all(&[1u8; 3 * CHUNK]).unwrap();
        stop.store(true, Ordering::Relaxed);
        let error = sink.write_all(&[2u8; CHUNK]).unwrap_err();
        assert!(error.to_string().contains("cancelled"), "{error}");
        assert!(sink.write_all(&[3u8; CHUNK]).is_err(), "refused again");
        assert!(
            sink.flush_buffer().is_err(),
            "nothing more reaches the store"
        );
        assert!(!sink.failed(), "the store itself did not fail");
        assert_eq!(sink.written, 3 * CHUNK as u64);
    }

    #[test]
    fn a_stopped_channel_reader_fails_instead_of_reading_on() {
        let (sender, receiver) = mpsc::channel(4);
        let stop = Arc::new(AtomicBool::new(false));
        let mut reader = ChannelReader::new(receiver, stop.clone());
        sender.try_send(Ok(vec![5u8; 100])).unwrap();
        sender.try_send(Ok(vec![6u8; 100])).unwrap();
        let mut buffer = [0u8; 100];
        reader.read_exact(&mut buffer).unwrap();
        stop.store(true, Ordering::Relaxed);
        let error = reader.read(&mut buffer).unwrap_err();
        assert!(error.to_string().contains("cancelled"), "{error}");
    }
}
