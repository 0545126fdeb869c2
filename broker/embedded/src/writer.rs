//! The per-topic writer: group commit on a dedicated OS thread.
//!
//! Appends arrive on a channel. The writer takes one request, drains whatever else is queued
//! (up to [`MAX_BATCH_BYTES`]), writes the whole batch with one `pwrite`, fsyncs once, then
//! publishes the new durable end and answers every request. Under load, requests queue up
//! during an fsync, so the batch grows by itself; when idle, an append costs one fsync.
//!
//! A thread rather than a tokio task: the writer spends its life in blocking `write` and
//! `fdatasync` calls, which must not run on the async worker threads, and one thread that
//! owns the file avoids a `spawn_blocking` hop (and a file handle shared across hops) per
//! batch.

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use switchyard_log::LogError;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use crate::segment::{self, Active, IndexEntry, INDEX_ENTRY_LEN};
use crate::{now_ms, write_lock, Counters, Topic};

/// Stop draining the queue once a batch holds this many bytes.
pub(crate) const MAX_BATCH_BYTES: usize = 4 << 20;

/// One `append` call: its records, framed, and where to send the outcome.
#[derive(Debug)]
pub(crate) struct AppendRequest {
    /// Frames built by [`crate::record::push_frame`], offsets not yet filled in.
    pub(crate) frames: Vec<u8>,
    /// Completed once the records are durable, or failed.
    pub(crate) reply: oneshot::Sender<Result<(), LogError>>,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) topic: Arc<Topic>,
    pub(crate) rx: mpsc::Receiver<AppendRequest>,
    pub(crate) durable: watch::Sender<u64>,
    pub(crate) active: Active,
    pub(crate) segment_bytes: u64,
    pub(crate) counters: Arc<Counters>,
    /// The file may hold bytes past `active.size` from a failed write.
    pub(crate) needs_truncate: bool,
    /// Reused batch buffer.
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    /// Runs until every sender is gone, then returns (answering all queued requests first).
    pub(crate) fn run(mut self) {
        while let Some(first) = self.rx.blocking_recv() {
            let mut bytes = first.frames.len();
            let mut batch = vec![first];
            // Drain what is queued; while requests keep arriving (appenders whose previous
            // append just completed are resubmitting), yield once and drain again. Without
            // this, a burst splits into a batch of one and a batch of the rest, halving the
            // average batch; an idle append pays one `yield_now`, a microsecond.
            loop {
                let before = batch.len();
                while bytes < MAX_BATCH_BYTES {
                    match self.rx.try_recv() {
                        Ok(request) => {
                            bytes += request.frames.len();
                            batch.push(request);
                        }
                        Err(_) => break,
                    }
                }
                if batch.len() == before || bytes >= MAX_BATCH_BYTES {
                    break;
                }
                std::thread::yield_now();
            }
            self.write_batch(batch);
            if self.buf.capacity() > 2 * MAX_BATCH_BYTES {
                // One huge request should not pin its buffer for the life of the topic.
                self.buf = Vec::new();
            }
        }
    }

    fn write_batch(&mut self, mut batch: Vec<AppendRequest>) {
        match self.try_write(&mut batch) {
            Ok(events) => {
                self.counters.record_batch(batch.len() as u64, events);
                for request in batch {
                    // The caller may have given up (its future dropped); the records are
                    // durable either way.
                    let _ = request.reply.send(Ok(()));
                }
            }
            Err(e) => {
                error!(topic = %self.topic.name, error = %e, "append failed");
                let message = format!("cannot write to topic '{}': {e}", self.topic.name);
                for request in batch {
                    let _ = request.reply.send(Err(LogError::Unavailable(message.clone())));
                }
            }
        }
    }

    /// Writes and fsyncs the batch; returns how many records it held. On error nothing of the
    /// batch is visible and the file is cut back to its durable length (now or, if that fails
    /// too, before the next write).
    fn try_write(&mut self, batch: &mut [AppendRequest]) -> io::Result<u64> {
        if self.needs_truncate {
            self.active.log.set_len(self.active.size)?;
            self.needs_truncate = false;
        }
        let total: u64 = batch.iter().map(|r| r.frames.len() as u64).sum();
        if self.active.size > 0 && self.active.size + total > self.segment_bytes {
            self.roll()?;
        }

        let timestamp = now_ms();
        let base = self.active.base;
        let start = self.active.size;
        let mut offset = self.active.next_offset;
        let mut policy = self.active.policy;
        let mut entries: Vec<IndexEntry> = Vec::new();
        let mut at = start;
        self.buf.clear();
        for request in batch.iter_mut() {
            let n = crate::record::seal_frames(&mut request.frames, offset, timestamp, |o, pos| {
                entries.extend(policy.observe(base, o, at + pos as u64));
            });
            offset += n;
            at += request.frames.len() as u64;
        }
        let events = offset - self.active.next_offset;

        let written = if let [only] = &*batch {
            self.write_and_sync(&only.frames, start)
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            for request in batch.iter() {
                buf.extend_from_slice(&request.frames);
            }
            let written = self.write_and_sync(&buf, start);
            self.buf = buf;
            written
        };
        if let Err(e) = written {
            // Cut off whatever part of the batch reached the file, so that the next batch
            // starts at the durable end. If even that fails, retry before the next write.
            self.needs_truncate = self.active.log.set_len(start).is_err();
            return Err(e);
        }
        self.counters.add_bytes(total);

        self.active.size = at;
        self.active.next_offset = offset;
        self.active.policy = policy;
        self.write_index(&entries);
        {
            let mut segments = write_lock(&self.topic.segments);
            if let Some(segment) = segments.get_mut(&base) {
                segment.size = at;
                segment.next_offset = offset;
                segment.last_ts = Some(timestamp);
                segment.index.extend_from_slice(&entries);
            }
        }
        // Published only now: readers never see records that are not durable.
        self.durable.send_replace(offset);
        Ok(events)
    }

    fn write_and_sync(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        self.active.log.write_all_at(bytes, at)?;
        #[cfg(test)]
        if self.topic.inject_sync_failures.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            self.topic.inject_sync_failures.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(io::Error::other("injected fsync failure"));
        }
        self.active.log.sync_data()?;
        self.counters.add_fsync();
        Ok(())
    }

    /// Appends index entries; on failure drops the index file, which recovery rebuilds.
    fn write_index(&mut self, entries: &[IndexEntry]) {
        if entries.is_empty() {
            return;
        }
        let Some(idx) = &self.active.idx else { return };
        let mut bytes = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
        segment::encode_index(entries, &mut bytes);
        match idx.write_all_at(&bytes, self.active.idx_len) {
            Ok(()) => self.active.idx_len += bytes.len() as u64,
            Err(e) => {
                warn!(topic = %self.topic.name, segment = self.active.base, error = %e,
                    "cannot write the segment index; it will be rebuilt on the next open");
                self.active.idx = None;
                let path = segment::idx_path(&self.topic.dir, self.active.base);
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Starts a new segment at the next offset.
    fn roll(&mut self) -> io::Result<()> {
        let base = self.active.next_offset;
        let (segment, active) = segment::create_segment(&self.topic.dir, base)?;
        write_lock(&self.topic.segments).insert(base, segment);
        self.active = active;
        Ok(())
    }
}
