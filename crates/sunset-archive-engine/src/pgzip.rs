//! Parallel gzip, as pigz does it: the input is cut into blocks, each block is compressed on its
//! own thread as an independent gzip member, and the members are written out in order. The
//! concatenation is one valid gzip file (RFC 1952 allows several members; gunzip, tar and
//! `MultiGzDecoder` read it whole).
//!
//! The output is deterministic (member headers carry no time or name), which is what lets an
//! interrupted upload be resumed: the same input gives the same bytes, part for part.
//! Memory is bounded: at most `2 * threads` blocks are in flight.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compression, GzBuilder};

/// Input bytes per gzip member: large enough that the lost dictionary across members costs well
/// under 1 % of ratio, small enough that every core gets work on modest inputs.
pub(crate) const BLOCK_SIZE: usize = 1 << 20;

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

pub(crate) struct ParallelGzWriter<W: Write> {
    /// `None` only after `finish` took it.
    out: Option<W>,
    block: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzWriter<W> {
    pub(crate) fn new(out: W, level: u32, threads: usize) -> ParallelGzWriter<W> {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads);
        let queue = Arc::new(Mutex::new(queue));
        let workers = (0..threads)
            .map(|_| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    loop {
                        // The lock is held only to take a job, not while compressing.
                        let job = queue.lock().map(|q| q.recv());
                        let Ok(Ok((input, reply))) = job else { return };
                        let _ = reply.send(compress_member(&input, level));
                    }
                })
            })
            .collect();
        ParallelGzWriter {
            out: Some(out),
            block: Vec::with_capacity(BLOCK_SIZE),
            jobs: Some(jobs),
            in_flight: VecDeque::new(),
            max_in_flight: 2 * threads,
            workers,
        }
    }

    /// Compresses what is buffered, writes every member, and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.dispatch()?;
        while !self.in_flight.is_empty() {
            self.write_oldest()?;
        }
        self.stop_workers();
        let mut out = self
            .out
            .take()
            .ok_or_else(|| io::Error::other("the gzip writer is finished"))?;
        out.flush()?;
        Ok(out)
    }

    fn dispatch(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        if self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let input = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK_SIZE));
        let (reply, result) = sync_channel(1);
        self.jobs
            .as_ref()
            .ok_or_else(|| io::Error::other("the gzip writer is finished"))?
            .send((input, reply))
            .map_err(|_| io::Error::other("a gzip worker stopped"))?;
        self.in_flight.push_back(result);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let member = result
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))??;
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("the gzip writer is finished"))?
            .write_all(&member)
    }

    fn stop_workers(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl<W: Write> Write for ParallelGzWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK_SIZE - self.block.len();
        let taken = room.min(buf.len());
        self.block.extend_from_slice(&buf[..taken]);
        if self.block.len() == BLOCK_SIZE {
            self.dispatch()?;
        }
        Ok(taken)
    }

    /// Members are only written whole; flushing a partial block would change the output's
    /// member boundaries and so its bytes, which resume depends on.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGzWriter<W> {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn compress_member(input: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new().mtime(0).write(
        Vec::with_capacity(input.len() / 2 + 64),
        Compression::new(level),
    );
    encoder.write_all(input)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn compress(input: &[u8], threads: usize) -> Vec<u8> {
        let mut writer = ParallelGzWriter::new(Vec::new(), 6, threads);
        // Odd write sizes cross block boundaries.
        for chunk in input.chunks(77_777) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn members_decompress_to_the_input_and_the_output_is_deterministic() {
        let input: Vec<u8> = (0..5 * BLOCK_SIZE + 12_345)
            .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
            .collect();
        let one = compress(&input, 1);
        let four = compress(&input, 4);
        assert_eq!(one, four, "the thread count does not change the bytes");
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(&four[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, input);
    }

    #[test]
    fn empty_input_is_an_empty_stream() {
        assert!(compress(&[], 2).is_empty());
    }
}
