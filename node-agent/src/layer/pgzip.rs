//! Parallel gzip compression in the style of pigz.
//!
//! [`ParallelGzipWriter`] cuts its input into fixed-size blocks of
//! [`BLOCK_SIZE`] bytes and compresses each block as raw deflate on a pool of
//! worker threads. Every block but the last ends with a sync flush (an empty
//! stored block, so the block ends byte-aligned and without BFINAL), the last
//! one with a final block, so the blocks simply concatenate into one deflate
//! stream. Like pigz, each block is primed with the 32 KiB of input that
//! precede it as a preset dictionary, so matches can reach back across block
//! boundaries and the ratio stays close to single-threaded gzip.
//!
//! The result is ONE standard gzip member (RFC 1952): a fixed 10-byte header
//! (no name, mtime 0, OS 255 "unknown"), the deflate stream, CRC-32 and ISIZE.
//! Consumers that read only the first member of a gzip file see all the data.
//!
//! The output depends only on the input bytes and the level: not on the number
//! of threads, on the sizes of the `write` calls, on `flush` calls, or on
//! thread timing. That keeps layer digests reproducible.
//!
//! Memory is bounded: at most `2 * threads` blocks are in flight; `write`
//! blocks while that many are queued or being compressed. Finished blocks are
//! written to the inner writer in order as soon as they are ready.
#![deny(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crc32fast::Hasher;
use flate2::{Compress, Compression, FlushCompress, Status};

/// Size of the uncompressed blocks compressed independently (1 MiB).
pub const BLOCK_SIZE: usize = 1 << 20;

/// Most worker threads a writer starts, whatever it is asked for.
pub const MAX_THREADS: usize = 64;

/// Size of the deflate window, and so of the dictionary each block is primed with.
const DICT_SIZE: usize = 32 * 1024;

/// Most blocks whose buffers are kept for reuse beyond those in flight.
const SPARE_BLOCKS: usize = 2;

/// A block whose data starts with this makes its worker panic (tests only).
#[cfg(test)]
const PANIC_SENTINEL: &[u8] = b"\0pgzip: test-only worker panic\0";

/// The number of threads this process may use in parallel, at least 1.
pub fn available_threads() -> usize {
    thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// The buffers of one block; reused from block to block.
#[derive(Default)]
struct Block {
    /// Uncompressed input of the block.
    data: Vec<u8>,
    /// The (at most 32 KiB of) input that precedes `data`.
    dict: Vec<u8>,
    /// Raw deflate output of the block: its first `out_len` bytes.
    out: Vec<u8>,
    out_len: usize,
}

impl Block {
    fn with_capacity(block_size: usize) -> Self {
        Self {
            data: Vec::with_capacity(block_size),
            dict: Vec::with_capacity(DICT_SIZE),
            out: Vec::new(),
            out_len: 0,
        }
    }

    fn clear(&mut self) {
        self.data.clear();
        self.dict.clear();
        // `out` keeps its length: it is overwritten, never read past `out_len`.
        self.out_len = 0;
    }
}

/// A block handed to a worker.
struct Job {
    block: Block,
    last: bool,
    reply: SyncSender<io::Result<Compressed>>,
}

/// A block a worker has compressed.
struct Compressed {
    block: Block,
    crc: Hasher,
}

/// A gzip writer that compresses on several threads and produces one
/// standard, deterministic gzip member.
///
/// Call [`finish`](Self::finish) to write the end of the stream: dropping the
/// writer without it abandons the stream (the inner writer is left holding an
/// incomplete gzip file, so an aborted layer can never pass for a complete one).
///
/// [`flush`](Write::flush) waits until every full block given so far is
/// compressed and written, then flushes the inner writer; it does not cut the
/// block being filled, so flushing never changes the output bytes.
pub struct ParallelGzipWriter<W: Write> {
    inner: Option<W>,
    level: u32,
    block_size: usize,
    max_in_flight: usize,
    /// The block being filled; its `dict` is already set.
    current: Block,
    /// Blocks in flight, oldest first: each yields its compressed block.
    pending: VecDeque<Receiver<io::Result<Compressed>>>,
    /// Cleared blocks for reuse.
    spare: Vec<Block>,
    jobs: Option<SyncSender<Job>>,
    cancel: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    crc: Hasher,
    total_in: u64,
    header_written: bool,
    finished: bool,
    /// The first error met; the writer refuses all work after it.
    failed: Option<(io::ErrorKind, String)>,
}

impl<W: Write> fmt::Debug for ParallelGzipWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelGzipWriter")
            .field("level", &self.level)
            .field("block_size", &self.block_size)
            .field("workers", &self.workers.len())
            .field("blocks_in_flight", &self.pending.len())
            .field("total_in", &self.total_in)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ParallelGzipWriter<W> {
    /// Starts `threads` worker threads (at least 1, at most [`MAX_THREADS`])
    /// compressing at `level` (0 to 9; larger values mean 9) into `inner`.
    ///
    /// If no worker thread can be started, every later call returns the error.
    pub fn new(inner: W, level: u32, threads: usize) -> Self {
        Self::with_block_size(inner, level, threads, BLOCK_SIZE)
    }

    /// Like [`new`](Self::new) with another block size (tests use small ones).
    pub(crate) fn with_block_size(inner: W, level: u32, threads: usize, block_size: usize) -> Self {
        let level = level.min(9);
        let threads = threads.clamp(1, MAX_THREADS);
        let block_size = block_size.max(1);
        let max_in_flight = 2 * threads;
        let (jobs, queue) = mpsc::sync_channel::<Job>(max_in_flight);
        let queue = Arc::new(Mutex::new(queue));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::with_capacity(threads);
        let mut spawn_error = None;
        for index in 0..threads {
            let queue = Arc::clone(&queue);
            let cancel = Arc::clone(&cancel);
            let spawned = thread::Builder::new()
                .name(format!("pgzip-{index}"))
                .spawn(move || work(&queue, &cancel, level));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(error) => {
                    spawn_error = Some(error);
                    break;
                }
            }
        }
        let failed = match spawn_error {
            Some(error) if workers.is_empty() => Some((
                error.kind(),
                format!("could not start a gzip compression thread: {error}"),
            )),
            _ => None,
        };
        Self {
            inner: Some(inner),
            level,
            block_size,
            max_in_flight,
            current: Block::with_capacity(block_size),
            pending: VecDeque::with_capacity(max_in_flight),
            spare: Vec::new(),
            jobs: Some(jobs),
            cancel,
            workers,
            crc: Hasher::new(),
            total_in: 0,
            header_written: false,
            finished: false,
            failed,
        }
    }

    /// Compresses what is left, writes the gzip trailer, flushes the inner
    /// writer, stops the worker threads and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.check()?;
        let result = self.finish_stream();
        self.record(result)?;
        self.finished = true;
        if !self.stop_workers() {
            return Err(io::Error::other("a gzip compression thread panicked"));
        }
        self.inner.take().ok_or_else(inner_lost)
    }

    fn finish_stream(&mut self) -> io::Result<()> {
        self.dispatch(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        let isize = (self.total_in & u64::from(u32::MAX)) as u32;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.clone().finalize().to_le_bytes());
        trailer[4..].copy_from_slice(&isize.to_le_bytes());
        let inner = self.inner_mut()?;
        inner.write_all(&trailer)?;
        inner.flush()
    }

    /// Returns the error recorded earlier, if any.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(
                *kind,
                format!("parallel gzip writer failed earlier: {message}"),
            )),
        }
    }

    /// Records the first error, so that all later calls fail too.
    fn record<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if let Err(error) = &result {
            if self.failed.is_none() {
                self.failed = Some((error.kind(), error.to_string()));
            }
            self.cancel.store(true, Ordering::Relaxed);
        }
        result
    }

    fn inner_mut(&mut self) -> io::Result<&mut W> {
        self.inner.as_mut().ok_or_else(inner_lost)
    }

    /// Hands the current block to the workers, first waiting for room.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        while self.pending.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let next = if last {
            Block::default()
        } else {
            let mut next = self
                .spare
                .pop()
                .unwrap_or_else(|| Block::with_capacity(self.block_size));
            following_dict(&mut next.dict, &self.current.dict, &self.current.data);
            next
        };
        let block = std::mem::replace(&mut self.current, next);
        let (reply, result) = mpsc::sync_channel(1);
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("gzip compression threads already stopped"))?;
        jobs.send(Job { block, last, reply })
            .map_err(|_| io::Error::other("all gzip compression threads exited"))?;
        self.pending.push_back(result);
        self.write_ready()
    }

    /// Waits for the oldest block in flight and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let compressed = result.recv().map_err(|_| worker_lost())??;
            self.write_block(compressed)?;
        }
        Ok(())
    }

    /// Writes out the oldest blocks in flight as long as they are done.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(result) = self.pending.front() {
            let compressed = match result.try_recv() {
                Ok(compressed) => compressed,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(worker_lost()),
            };
            self.pending.pop_front();
            self.write_block(compressed?)?;
        }
        Ok(())
    }

    fn write_block(&mut self, compressed: Compressed) -> io::Result<()> {
        let Compressed { mut block, crc } = compressed;
        let inner = self.inner.as_mut().ok_or_else(inner_lost)?;
        if !self.header_written {
            inner.write_all(&gzip_header(self.level))?;
            self.header_written = true;
        }
        inner.write_all(&block.out[..block.out_len])?;
        self.crc.combine(&crc);
        self.total_in += block.data.len() as u64;
        if self.spare.len() < SPARE_BLOCKS && block.data.capacity() >= self.block_size {
            block.clear();
            self.spare.push(block);
        }
        Ok(())
    }

    /// Stops and joins the workers; false if one of them panicked.
    fn stop_workers(&mut self) -> bool {
        if !self.finished {
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
        self.pending.clear();
        let mut all_fine = true;
        for worker in self.workers.drain(..) {
            all_fine &= worker.join().is_ok();
        }
        all_fine
    }
}

impl<W: Write> Write for ParallelGzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check()?;
        if buf.is_empty() {
            return Ok(0);
        }
        // A full block is sent only once more input comes, so that the last
        // block of the stream is always the one `finish` marks as final.
        if self.current.data.len() >= self.block_size {
            let result = self.dispatch(false);
            self.record(result)?;
        }
        let room = self.block_size - self.current.data.len();
        let taken = room.min(buf.len());
        self.current.data.extend_from_slice(&buf[..taken]);
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check()?;
        let mut result = Ok(());
        while result.is_ok() && !self.pending.is_empty() {
            result = self.write_oldest();
        }
        if result.is_ok() {
            result = self.inner_mut().and_then(Write::flush);
        }
        self.record(result)
    }
}

impl<W: Write> Drop for ParallelGzipWriter<W> {
    fn drop(&mut self) {
        // Joining cannot hang: without the job sender the workers leave once
        // the (cancelled) queue is empty. A worker panic is ignored here.
        let _all_fine = self.stop_workers();
    }
}

/// The error for an inner writer that is gone (cannot happen).
fn inner_lost() -> io::Error {
    io::Error::other("parallel gzip writer lost its inner writer")
}

/// The error for a block whose worker vanished without an answer.
fn worker_lost() -> io::Error {
    io::Error::other("a gzip compression thread exited unexpectedly")
}

/// The 10-byte gzip header: deflate, no flags, mtime 0, OS "unknown".
fn gzip_header(level: u32) -> [u8; 10] {
    let extra_flags = match level {
        9 => 2, // maximum compression
        1 => 4, // fastest compression
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, extra_flags, 255]
}

/// Sets `dict` to the last 32 KiB of `previous_dict` followed by `data`.
fn following_dict(dict: &mut Vec<u8>, previous_dict: &[u8], data: &[u8]) {
    dict.clear();
    if let Some(start) = data.len().checked_sub(DICT_SIZE) {
        dict.extend_from_slice(&data[start..]);
    } else {
        let keep = DICT_SIZE - data.len();
        dict.extend_from_slice(&previous_dict[previous_dict.len().saturating_sub(keep)..]);
        dict.extend_from_slice(data);
    }
}

/// A worker thread: compresses jobs until the job sender is dropped.
fn work(queue: &Mutex<Receiver<Job>>, cancel: &AtomicBool, level: u32) {
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job {
            mut block,
            last,
            reply,
        }) = job
        else {
            return;
        };
        if cancel.load(Ordering::Relaxed) {
            continue;
        }
        let outcome =
            panic::catch_unwind(AssertUnwindSafe(|| compress_block(level, &mut block, last)));
        let answer = match outcome {
            Ok(Ok(crc)) => Ok(Compressed { block, crc }),
            Ok(Err(error)) => Err(error),
            Err(payload) => Err(io::Error::other(format!(
                "a gzip compression thread panicked: {}",
                panic_message(payload.as_ref())
            ))),
        };
        // The writer may be gone (dropped); then nobody needs the answer.
        let _sent = reply.send(answer);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "unknown panic"
    }
}

/// Compresses `block.data` into `block.out` as raw deflate: primed with
/// `block.dict`, ended by a sync flush, or by the final block if `last`.
/// Returns the CRC-32 of the data.
///
/// Each block gets a fresh compressor: `Compress::reset` with the zlib-rs
/// backend keeps stale hash chains (only the hash heads are cleared), so a
/// reused compressor's output would depend on which blocks the same thread
/// compressed before, and so on thread timing. A new one costs a few hundred
/// KiB of zeroing per 1 MiB block, which is noise next to deflate itself.
fn compress_block(level: u32, block: &mut Block, last: bool) -> io::Result<Hasher> {
    #[cfg(test)]
    if block.data.starts_with(PANIC_SENTINEL) {
        panic!("test-only worker panic");
    }
    let mut crc = Hasher::new();
    crc.update(&block.data);

    let mut compress = Compress::new(Compression::new(level), false);
    // Stored blocks (level 0) never refer back, so they need no dictionary.
    if level > 0 && !block.dict.is_empty() {
        compress
            .set_dictionary(&block.dict)
            .map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let data = &block.data;
    let out = &mut block.out;
    // The output space offered to deflate must depend on the data alone: a
    // sync flush that exactly fills the space offered is repeated by the next
    // call (5 more bytes), so the output would depend on buffer history. So
    // `out` is used up to `room`, not its capacity. `room` starts at the
    // worst case (zlib-rs's deflateBound: fixed-Huffman literals take up to
    // 9 bits; plus the flush marker), so one call almost always suffices.
    let mut room = data.len() + data.len() / 8 + data.len() / 64 + 64;
    if out.len() < room {
        out.resize(room, 0);
    }
    let (mut consumed, mut produced) = (0, 0);
    loop {
        let (in_before, out_before) = (compress.total_in(), compress.total_out());
        let status = compress
            .compress(&data[consumed..], &mut out[produced..room], flush)
            .map_err(io::Error::other)?;
        let read = usize::try_from(compress.total_in() - in_before).map_err(io::Error::other)?;
        let written =
            usize::try_from(compress.total_out() - out_before).map_err(io::Error::other)?;
        consumed += read;
        produced += written;
        let output_full = produced == room;
        match status {
            Status::StreamEnd => break,
            // With room left in the output, the sync flush is complete.
            Status::Ok | Status::BufError if !last && consumed == data.len() && !output_full => {
                break;
            }
            Status::Ok | Status::BufError => {}
        }
        if output_full {
            room += room / 4;
            if out.len() < room {
                out.resize(room, 0);
            }
        } else if read == 0 && written == 0 {
            return Err(io::Error::other("deflate made no progress"));
        }
    }
    block.out_len = produced;
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::process::{Command, Stdio};

    use flate2::read::{GzDecoder, MultiGzDecoder};

    use super::*;

    /// A small deterministic pseudo-random generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        let mut data = Vec::with_capacity(len + 8);
        while data.len() < len {
            data.extend_from_slice(&rng.next().to_le_bytes());
        }
        data.truncate(len);
        data
    }

    fn text(len: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(len + 100);
        let mut line = 0u64;
        while data.len() < len {
            let entry = format!(
                "{line:08} usr/share/doc/package-{}/changelog.gz mode=0644 uid={} size={}\n",
                line % 37,
                line % 3,
                (line * 7919) % 100_003
            );
            data.extend_from_slice(entry.as_bytes());
            line += 1;
        }
        data.truncate(len);
        data
    }

    /// Random bytes and text, alternating in stretches of a few KiB.
    fn mixed(len: usize, seed: u64) -> Vec<u8> {
        let random = random_bytes(len, seed);
        let text = text(len);
        let mut rng = Rng(seed.wrapping_add(99) | 1);
        let mut data = Vec::with_capacity(len);
        let mut use_text = false;
        while data.len() < len {
            let end = (data.len() + 1 + rng.below(20_000)).min(len);
            let source = if use_text { &text } else { &random };
            data.extend_from_slice(&source[data.len()..end]);
            use_text = !use_text;
        }
        data
    }

    /// Compresses `data`, writing it in pieces of the given sizes (cycled).
    fn compress(
        data: &[u8],
        level: u32,
        threads: usize,
        block_size: usize,
        pieces: &[usize],
    ) -> Vec<u8> {
        let mut writer =
            ParallelGzipWriter::with_block_size(Vec::new(), level, threads, block_size);
        let mut rest = data;
        let mut sizes = pieces.iter().cycle();
        while !rest.is_empty() {
            let size = sizes
                .next()
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            writer.write_all(&rest[..size]).unwrap();
            rest = &rest[size..];
        }
        writer.finish().unwrap()
    }

    fn gunzip_system(gz: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the system `gzip` must be installed for this test");
        let mut stdin = child.stdin.take().unwrap();
        let input = gz.to_vec();
        let feeder = thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        feeder.join().unwrap().unwrap();
        assert!(output.status.success(), "gzip -dc failed: {output:?}");
        output.stdout
    }

    /// Checks that `gz` is exactly one gzip member holding `data`, for
    /// flate2's single- and multi-member decoders and for `gzip -dc`.
    fn assert_gzip_of(gz: &[u8], data: &[u8]) {
        assert_eq!(gz[..4], [0x1f, 0x8b, 8, 0]);
        assert_eq!(gz[4..8], [0; 4], "mtime must be 0");
        assert_eq!(gz[9], 255, "OS must be 'unknown'");
        let trailer = &gz[gz.len() - 8..];
        assert_eq!(trailer[..4], crc32fast::hash(data).to_le_bytes());
        assert_eq!(trailer[4..], (data.len() as u32).to_le_bytes());

        let mut single = GzDecoder::new(gz);
        let mut decoded = Vec::new();
        single.read_to_end(&mut decoded).unwrap();
        assert!(decoded == data, "GzDecoder output differs");
        assert!(
            single.into_inner().is_empty(),
            "bytes after the first member"
        );

        let mut decoded = Vec::new();
        MultiGzDecoder::new(gz).read_to_end(&mut decoded).unwrap();
        assert!(decoded == data, "MultiGzDecoder output differs");

        assert!(gunzip_system(gz) == data, "gzip -dc output differs");
    }

    #[test]
    fn empty_input_is_a_valid_empty_gzip() {
        for threads in [1, 3] {
            let gz = ParallelGzipWriter::new(Vec::new(), 6, threads)
                .finish()
                .unwrap();
            assert_gzip_of(&gz, b"");
            // Header, an empty final fixed-Huffman block, CRC and ISIZE.
            assert_eq!(gz.len(), 10 + 2 + 8);
        }
    }

    #[test]
    fn round_trips_around_block_boundaries() {
        // Blocks larger and smaller than the 32 KiB dictionary.
        for block_size in [40_000, 5_000] {
            let sizes = [
                1,
                block_size - 1,
                block_size,
                block_size + 1,
                2 * block_size,
                3 * block_size + 17,
            ];
            for (index, len) in sizes.into_iter().enumerate() {
                let seed = index as u64;
                for (data, level, threads) in [
                    (random_bytes(len, seed), 6, 2),
                    (text(len), 1, 3),
                    (mixed(len, seed), 9, 1),
                    (mixed(len, seed), 0, 2),
                ] {
                    let gz = compress(&data, level, threads, block_size, &[len]);
                    assert_gzip_of(&gz, &data);
                }
            }
        }
    }

    #[test]
    fn round_trips_with_the_default_block_size() {
        let data = mixed(2 * BLOCK_SIZE + 12_345, 7);
        let mut writer = ParallelGzipWriter::new(Vec::new(), 1, 2);
        writer.write_all(&data).unwrap();
        let gz = writer.finish().unwrap();
        assert_gzip_of(&gz, &data);
        assert!(gz.len() < data.len() * 3 / 4, "mixed data should shrink");

        let data = text(BLOCK_SIZE);
        let mut writer = ParallelGzipWriter::new(Vec::new(), 6, 2);
        writer.write_all(&data).unwrap();
        assert_gzip_of(&writer.finish().unwrap(), &data);
    }

    #[test]
    fn output_is_the_same_for_any_threads_and_write_sizes() {
        let block_size = 16 * 1024;
        let data = mixed(10 * block_size + 999, 3);
        for level in [1, 6] {
            let reference = compress(&data, level, 1, block_size, &[data.len()]);
            assert_gzip_of(&reference, &data);
            let mut rng = Rng(level.into());
            for threads in 1..=4 {
                let random_pieces: Vec<usize> =
                    (0..64).map(|_| 1 + rng.below(3 * block_size)).collect();
                for pieces in [
                    &[data.len()][..],
                    &[1, 2, 3, 5, 8, 13, 21, 4096][..],
                    &[block_size][..],
                    &[block_size - 1, block_size + 1][..],
                    &random_pieces[..],
                ] {
                    let gz = compress(&data, level, threads, block_size, pieces);
                    assert!(gz == reference, "level {level}, {threads} threads differ");
                }
            }
        }
    }

    #[test]
    fn random_data_in_small_blocks_is_deterministic_too() {
        // Level 1 expands random data by about 5%: the output fills its
        // buffer near the end, where a sloppy flush loop emits extra bytes.
        let data = random_bytes(40_000, 17);
        let reference = compress(&data, 1, 1, 1078, &[data.len()]);
        assert_gzip_of(&reference, &data);
        for threads in 2..=4 {
            for pieces in [&[data.len()][..], &[18_072, 13_637, 25_551, 17_540][..]] {
                let gz = compress(&data, 1, threads, 1078, pieces);
                assert!(gz == reference, "{threads} threads differ");
            }
        }
    }

    #[test]
    fn block_output_does_not_depend_on_the_buffer_it_reuses() {
        let data = random_bytes(1078, 23);
        let dict = text(DICT_SIZE);
        for (level, last) in [(1, false), (1, true), (6, false), (0, false)] {
            let mut outputs = Vec::new();
            for old_len in [0, 64, 1143, 1144, 1149, 1300, 100_000] {
                let mut block = Block {
                    data: data.clone(),
                    dict: dict.clone(),
                    out: vec![0xa5; old_len],
                    out_len: 0,
                };
                compress_block(level, &mut block, last).unwrap();
                outputs.push(block.out[..block.out_len].to_vec());
            }
            assert!(
                outputs.windows(2).all(|pair| pair[0] == pair[1]),
                "level {level}, last {last}: output depends on the old buffer"
            );
        }
    }

    #[test]
    fn flush_does_not_change_the_output() {
        let block_size = 8 * 1024;
        let data = text(5 * block_size + 10);
        let reference = compress(&data, 6, 2, block_size, &[data.len()]);
        let mut writer = ParallelGzipWriter::with_block_size(Vec::new(), 6, 2, block_size);
        writer.flush().unwrap();
        for piece in data.chunks(3000) {
            writer.write_all(piece).unwrap();
            writer.flush().unwrap();
        }
        assert!(writer.finish().unwrap() == reference);
    }

    #[test]
    fn dictionary_carries_matches_across_blocks() {
        // A random 8 KiB pattern repeated: each 16 KiB block only compresses
        // well if it can refer back into the block before it.
        // Without the dictionary the output would be more than half the input.
        let pattern = random_bytes(8 * 1024, 11);
        let data = pattern.repeat(64);
        let gz = compress(&data, 6, 2, 16 * 1024, &[data.len()]);
        assert_gzip_of(&gz, &data);
        assert!(
            gz.len() < data.len() / 20,
            "{} compressed bytes: the dictionary is not used",
            gz.len()
        );
    }

    #[test]
    fn levels_above_nine_mean_nine_and_zero_threads_mean_one() {
        let data = text(50_000);
        let nine = compress(&data, 9, 1, 10_000, &[data.len()]);
        assert_eq!(compress(&data, 12, 0, 10_000, &[data.len()]), nine);
        assert_eq!(nine[8], 2, "XFL for level 9");
        assert_gzip_of(&nine, &data);
    }

    #[test]
    fn the_writer_can_move_to_another_thread() {
        fn assert_send<T: Send>(_: &T) {}
        let writer = ParallelGzipWriter::new(Vec::new(), 6, 2);
        assert_send(&writer);
        let gz = thread::spawn(move || writer.finish().unwrap())
            .join()
            .unwrap();
        assert_gzip_of(&gz, b"");
    }

    #[test]
    fn available_threads_is_at_least_one() {
        assert!(available_threads() >= 1);
    }

    /// Accepts `budget` bytes, then fails every write.
    #[derive(Debug)]
    struct FailingWriter {
        budget: usize,
    }

    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let taken = buf.len().min(self.budget);
            self.budget -= taken;
            Ok(taken)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn inner_write_errors_surface() {
        let data = random_bytes(400_000, 5);
        for budget in [0, 5, 20_000] {
            let mut writer =
                ParallelGzipWriter::with_block_size(FailingWriter { budget }, 1, 2, 8 * 1024);
            let written = data
                .chunks(10_000)
                .try_for_each(|piece| writer.write_all(piece));
            let error = match written {
                Err(error) => error,
                Ok(()) => writer.finish().expect_err("finish must fail"),
            };
            assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        }

        // Once failed, the writer keeps failing, also in `finish`.
        let mut writer =
            ParallelGzipWriter::with_block_size(FailingWriter { budget: 0 }, 1, 2, 1024);
        assert!(writer.write_all(&data).is_err());
        assert!(writer.write(b"more").is_err());
        assert!(writer.flush().is_err());
        let error = writer.finish().expect_err("finish must fail");
        assert_eq!(error.kind(), io::ErrorKind::StorageFull);
    }

    #[test]
    fn an_error_in_the_trailer_surfaces() {
        let data = text(1000);
        let full = compress(&data, 6, 1, BLOCK_SIZE, &[data.len()]);
        let budget = full.len() - 3;
        let mut writer = ParallelGzipWriter::new(FailingWriter { budget }, 6, 1);
        writer.write_all(&data).unwrap();
        assert!(writer.finish().is_err());
    }

    #[test]
    fn a_worker_panic_surfaces_as_an_error() {
        let block_size = 4096;
        let mut data = text(20 * block_size);
        data[6 * block_size..6 * block_size + PANIC_SENTINEL.len()].copy_from_slice(PANIC_SENTINEL);
        let mut writer = ParallelGzipWriter::with_block_size(Vec::new(), 6, 2, block_size);
        let result = writer.write_all(&data).and_then(|()| writer.flush());
        let error = match result {
            Err(error) => error,
            Ok(()) => writer.finish().expect_err("finish must fail"),
        };
        assert!(error.to_string().contains("panicked"), "{error}");
    }

    #[test]
    fn dropping_an_unfinished_writer_neither_panics_nor_hangs() {
        let data = random_bytes(300_000, 9);
        let mut writer = ParallelGzipWriter::with_block_size(Vec::new(), 9, 3, 4096);
        writer.write_all(&data).unwrap();
        drop(writer);

        let writer = ParallelGzipWriter::new(FailingWriter { budget: 0 }, 6, 2);
        drop(writer);
    }
}
