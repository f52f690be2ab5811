//! Random bytes from the kernel, for secrets.

use std::io::Read;

/// Fills `buffer` from `/dev/urandom`; a kernel without it cannot run the
/// service safely, so failing to read it stops the process.
pub fn fill(buffer: &mut [u8]) {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buffer))
        .expect("reading /dev/urandom");
}
