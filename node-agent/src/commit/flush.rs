//! Write-back of a layer's blob while it is being written.
//!
//! containerd syncs a blob to disk when it is committed (its local content
//! store calls `fsync`): for a large layer that is seconds of disk writing
//! after the last byte, with nothing else to do meanwhile (0.6 GB at the
//! ~300 MB/s this machine's disk writes). Asking the kernel to write the blob
//! back while it grows (`fdatasync` of containerd's ingest file, on a thread
//! of its own, every `EVERY` bytes) overlaps that with compression, and
//! containerd's own `fsync` finds little left.
//!
//! The ingest file is `<content root>/ingest/<sha256 of the ref>/data`, the
//! local store's layout since containerd 1.0. It is containerd's file on the
//! host, not the container's; it is opened read-only, without following a
//! link. When it cannot be opened, nothing happens: containerd syncs it all.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};

use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

/// Bytes between two write-back requests.
const EVERY: u64 = 32 << 20;

pub(super) struct IngestFlusher {
    sender: Option<SyncSender<()>>,
    next: u64,
}

impl IngestFlusher {
    /// A flusher for the blob being written under `reference`, in the
    /// content store at `content_root`; a no-op without one.
    pub(super) fn start(content_root: Option<&Path>, reference: &str) -> Self {
        let Some(root) = content_root else {
            return Self::none();
        };
        let path = ingest_data(root, reference);
        let (sender, receiver) = sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("dcs-ingest-flush".into())
            .spawn(move || {
                let mut file = None;
                while receiver.recv().is_ok() {
                    if file.is_none() {
                        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                        file = rustix::fs::open(&path, flags, Mode::empty()).ok();
                    }
                    if let Some(file) = &file {
                        let _ = rustix::fs::fdatasync(file);
                    }
                }
            });
        match spawned {
            Ok(_) => Self {
                sender: Some(sender),
                next: EVERY,
            },
            Err(_) => Self::none(),
        }
    }

    fn none() -> Self {
        Self {
            sender: None,
            next: u64::MAX,
        }
    }

    /// `total` bytes of the blob are written: asks for a write-back every
    /// `EVERY` bytes. Never waits (a request while one runs is dropped).
    pub(super) fn written(&mut self, total: u64) {
        if total < self.next {
            return;
        }
        self.next = total + EVERY;
        if let Some(sender) = &self.sender {
            let _ = sender.try_send(());
        }
    }
}

fn ingest_data(root: &Path, reference: &str) -> PathBuf {
    root.join("ingest")
        .join(hex::encode(Sha256::digest(reference.as_bytes())))
        .join("data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ingest_path_is_containerds() {
        // digest.FromString("ref").Encoded(), as containerd computes it.
        assert_eq!(
            ingest_data(Path::new("/c"), "ref"),
            Path::new(
                "/c/ingest/3ff6c05723bb069d19953340320fa9512f0be584742703e60226ded28bb43861/data"
            )
            .to_path_buf()
        );
    }
}
