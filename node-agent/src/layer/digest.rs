//! A writer that hashes and counts what passes through it.
//!
//! The hashing runs on a thread of its own: SHA-256 of the uncompressed tar
//! and of the compressed blob was a fifth of the commit's CPU (perf, 1 GB
//! change), all of it on the thread that also reads the files and feeds
//! the compressor, which set the pace of the whole pipeline. Each write is
//! copied once into a buffer the hashing thread takes; at most `QUEUE`
//! buffers wait, so memory stays bounded and a slow hash slows the writer.

use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

/// Buffers waiting for the hashing thread.
const QUEUE: usize = 8;
/// Writes are gathered into buffers of this size before they are handed over.
const CHUNK: usize = 256 * 1024;

pub struct DigestWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
    sender: Option<SyncSender<Vec<u8>>>,
    /// Buffers the hashing thread is done with, for reuse.
    spare: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<Sha256>>,
    bytes: u64,
}

impl<W: Write> fmt::Debug for DigestWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestWriter")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        let (sender, receiver) = sync_channel::<Vec<u8>>(QUEUE);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUE + 2);
        let hasher = std::thread::Builder::new()
            .name("dcs-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for mut buffer in receiver {
                    hasher.update(&buffer);
                    buffer.clear();
                    let _ = give_back.try_send(buffer);
                }
                hasher
            })
            .ok();
        Self {
            inner,
            buffer: Vec::with_capacity(CHUNK),
            sender: Some(sender),
            spare,
            hasher,
            bytes: 0,
        }
    }

    /// Hands the gathered bytes to the hashing thread (hashes them here if
    /// it could not be started).
    fn hand_over(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let fresh = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buffer, fresh);
        match &self.sender {
            Some(sender) => sender
                .send(full)
                .map_err(|_| io::Error::other("the hashing thread stopped")),
            None => Err(io::Error::other("no hashing thread")),
        }
    }

    /// The inner writer, the `sha256:` digest and the byte count.
    pub fn finish(mut self) -> io::Result<(W, String, u64)> {
        self.hand_over()?;
        drop(self.sender.take());
        let hasher = self
            .hasher
            .take()
            .ok_or_else(|| io::Error::other("no hashing thread"))?
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"))?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        Ok((self.inner, digest, self.bytes))
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut taken = &buf[..n];
        while !taken.is_empty() {
            let room = CHUNK - self.buffer.len();
            let part = room.min(taken.len());
            self.buffer.extend_from_slice(&taken[..part]);
            taken = &taken[part..];
            if self.buffer.len() == CHUNK {
                self.hand_over()?;
            }
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_and_count_match_a_direct_hash() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut writer = DigestWriter::new(Vec::new());
        for piece in data.chunks(77_777) {
            writer.write_all(piece).unwrap();
        }
        let (out, digest, bytes) = writer.finish().unwrap();
        assert_eq!(out, data);
        assert_eq!(bytes, data.len() as u64);
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&data)))
        );
    }
}
