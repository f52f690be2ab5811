// Placeholder until the parallel writer lands: single-threaded gzip.
use std::io::{self, Write};
pub struct ParallelGzipWriter<W: Write>(flate2::write::GzEncoder<W>);
impl<W: Write> ParallelGzipWriter<W> {
    pub fn new(inner: W, level: u32, _threads: usize) -> Self {
        Self(flate2::write::GzEncoder::new(
            inner,
            flate2::Compression::new(level),
        ))
    }
    pub fn finish(self) -> io::Result<W> {
        self.0.finish()
    }
}
impl<W: Write> Write for ParallelGzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
