//! Subscriptions: a cursor over the segment files of one topic for one group.
//!
//! A subscription reads straight from the files (page cache) and keeps nothing but one open
//! file handle, the position of its next record and a bounded read buffer, so a stalled
//! consumer costs no memory: its backlog stays on disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use switchyard_event::storage;
use switchyard_log::{LogError, LogEvent, Position, Subscription};
use tokio::sync::watch;
use tracing::warn;

use crate::groups::Groups;
use crate::record::{Header, HEADER_LEN};
use crate::{read_lock, Topic};

/// Bytes read from a segment file at a time.
const CHUNK: usize = 256 << 10;
/// A read buffer grown past this (for a huge record) is released after the batch.
const KEEP_BUF: usize = CHUNK;

/// The open segment file and where the cursor's record is in it.
struct OpenSegment {
    base: u64,
    file: File,
    /// A position at or before the record with offset `next_offset`.
    next_pos: u64,
    next_offset: u64,
}

/// What a read carries between calls; moved into the blocking pool and back.
#[derive(Default)]
struct ReadState {
    open: Option<OpenSegment>,
    buf: Vec<u8>,
}

/// A group's reader on an embedded topic.
pub(crate) struct EmbeddedSubscription {
    pub(crate) topic: Arc<Topic>,
    pub(crate) group: String,
    pub(crate) groups: Arc<Groups>,
    pub(crate) cursor: u64,
    pub(crate) durable: watch::Receiver<u64>,
    state: Option<ReadState>,
}

impl EmbeddedSubscription {
    pub(crate) fn new(topic: Arc<Topic>, group: String, groups: Arc<Groups>, cursor: u64) -> Self {
        let durable = topic.durable.clone();
        EmbeddedSubscription { topic, group, groups, cursor, durable, state: Some(ReadState::default()) }
    }

    fn gone(&self) -> LogError {
        if self.topic.deleted.load(Ordering::Acquire) {
            LogError::UnknownTopic(self.topic.name.clone())
        } else {
            LogError::Closed
        }
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        loop {
            if self.topic.deleted.load(Ordering::Acquire) {
                return Err(self.gone());
            }
            let end = *self.durable.borrow_and_update();
            if self.cursor < end {
                // File reads block; run them on the blocking pool. The state is moved there
                // and back; if this future is dropped meanwhile, only that cache is lost and
                // the cursor is unchanged, so `next_batch` stays cancel-safe.
                let mut state = self.state.take().unwrap_or_default();
                let topic = Arc::clone(&self.topic);
                let cursor = self.cursor;
                let (state, result) = tokio::task::spawn_blocking(move || {
                    let result = read_batch(&topic, &mut state, cursor, end, max);
                    (state, result)
                })
                .await
                .map_err(|e| LogError::Io(io::Error::other(format!("reader task failed: {e}"))))?;
                let (events, cursor) = result?;
                self.cursor = cursor;
                // A reader that has caught up may wait long for more (thousands of triggers
                // each hold one): it keeps neither a file handle nor a read buffer meanwhile.
                self.state = Some(if cursor >= end { ReadState::default() } else { state });
                if !events.is_empty() {
                    return Ok(events);
                }
            }
            if self.durable.changed().await.is_err() {
                // The writer is gone (log closed or topic deleted); return what is left first.
                if self.cursor < *self.durable.borrow() {
                    continue;
                }
                return Err(self.gone());
            }
        }
    }

    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        check_partition(partition)?;
        if self.group.is_empty() {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a reader of topic '{}' without a group cannot commit", self.topic.name),
            )));
        }
        self.groups.commit(&self.topic.name, &self.group, next_offset)
    }

    fn position(&self, partition: u32) -> Option<u64> {
        (partition == 0).then_some(self.cursor)
    }

    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        check_partition(partition)?;
        // The open file stays; `locate` repositions from the index when the cursor moved.
        self.cursor = offset;
        Ok(())
    }
}

fn check_partition(partition: u32) -> Result<(), LogError> {
    if partition != 0 {
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown partition {partition}: the embedded log has only partition 0"),
        )));
    }
    Ok(())
}

/// Where to read next, as found in the segment table.
struct Location {
    base: u64,
    path: std::path::PathBuf,
    size: u64,
    pos: u64,
    segment_end: u64,
}

/// Finds the segment holding `cursor` (moving it forward past retention or gaps). `None`:
/// nothing durable at or after it.
fn locate(topic: &Topic, state: &ReadState, cursor: &mut u64) -> Option<Location> {
    let segments = read_lock(&topic.segments);
    let (&first, _) = segments.first_key_value()?;
    if *cursor < first {
        warn!(
            topic = %topic.name,
            from = *cursor,
            to = first,
            "reader is behind the retained log; skipping to the first retained offset"
        );
        *cursor = first;
    }
    loop {
        let (&base, segment) = segments.range(..=*cursor).next_back()?;
        if *cursor >= segment.next_offset {
            // Past this segment's records: continue in the next segment, if any.
            let (&next, _) = segments.range(*cursor + 1..).next()?;
            *cursor = next;
            continue;
        }
        let pos = match &state.open {
            Some(open) if open.base == base && open.next_offset == *cursor => open.next_pos,
            _ => segment.position_for(*cursor),
        };
        return Some(Location {
            base,
            path: segment.log_path.clone(),
            size: segment.size,
            pos,
            segment_end: segment.next_offset,
        });
    }
}

/// Reads up to `max` records from `cursor`, stopping before `end`. Returns them and the new
/// cursor.
fn read_batch(
    topic: &Topic,
    state: &mut ReadState,
    mut cursor: u64,
    end: u64,
    max: usize,
) -> Result<(Vec<LogEvent>, u64), LogError> {
    let mut out = Vec::new();
    let mut missing_files = 0;
    while out.len() < max && cursor < end {
        let Some(location) = locate(topic, state, &mut cursor) else { break };
        if cursor >= end {
            break;
        }
        if state.open.as_ref().is_none_or(|open| open.base != location.base) {
            match File::open(&location.path) {
                Ok(file) => {
                    state.open =
                        Some(OpenSegment { base: location.base, file, next_pos: 0, next_offset: location.base })
                }
                // Retention removed it just now; the next `locate` skips forward.
                Err(e) if e.kind() == io::ErrorKind::NotFound && missing_files < 3 => {
                    missing_files += 1;
                    state.open = None;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let Some(open) = state.open.as_mut() else { break };
        let mut pos = location.pos;
        let mut stop = false;
        while !stop && out.len() < max && cursor < end && pos < location.size {
            // Roughly what `max` records need, so that small batches do not read a whole chunk.
            let budget = (max - out.len()).saturating_mul(2048).clamp(8192, CHUNK);
            let want = (location.size - pos).min(budget as u64) as usize;
            state.buf.resize(want, 0);
            open.file.read_exact_at(&mut state.buf, pos)?;
            let mut at = 0usize;
            while out.len() < max && cursor < end {
                let Some(header) = Header::parse(&state.buf[at..]) else { break };
                let total = header.total_len();
                if pos + total > location.size {
                    return Err(corrupt(cursor, format!("record length {} runs past the segment end", header.len)));
                }
                let total = total as usize;
                if at + total > state.buf.len() {
                    if at == 0 {
                        // A record larger than the chunk: read it whole.
                        state.buf.resize(total, 0);
                        open.file.read_exact_at(&mut state.buf, pos)?;
                    } else {
                        break;
                    }
                }
                let record = &state.buf[at..at + total];
                let payload = &record[HEADER_LEN..];
                if !header.checksum_ok(record, payload) {
                    return Err(corrupt(cursor, "checksum mismatch".to_owned()));
                }
                if header.offset >= end {
                    stop = true;
                    break;
                }
                if header.offset >= cursor {
                    if header.offset > cursor {
                        warn!(topic = %topic.name, expected = cursor, found = header.offset, "gap in offsets");
                    }
                    // Copied into its own buffer so that an event kept for long (a retry)
                    // pins only its own bytes, not the whole read chunk.
                    let record = Bytes::copy_from_slice(payload);
                    let position = Position { partition: 0, offset: header.offset };
                    // The checksum held, so the bytes are what was written: a record the codec
                    // cannot read is moved aside by the reader's owner, not read again forever.
                    out.push(match storage::decode(&record) {
                        Ok(event) => LogEvent::new(position, header.timestamp_ms, Arc::new(event)),
                        Err(e) => {
                            LogEvent::undecodable(&topic.name, position, header.timestamp_ms, record, e.to_string())
                        }
                    });
                    cursor = header.offset + 1;
                }
                at += total;
                pos += total as u64;
            }
            if at == 0 && !stop && out.len() < max && cursor < end {
                // No progress possible in this chunk (cannot happen with a valid header).
                stop = true;
            }
        }
        open.next_pos = pos;
        open.next_offset = cursor;
        if pos >= location.size && cursor < location.segment_end {
            warn!(topic = %topic.name, segment = location.base, from = cursor, to = location.segment_end,
                "segment ended before its last offset; skipping");
            cursor = location.segment_end;
        }
        if stop {
            break;
        }
    }
    if state.buf.capacity() > KEEP_BUF {
        state.buf = Vec::new();
    }
    Ok((out, cursor))
}

fn corrupt(offset: u64, reason: String) -> LogError {
    LogError::Corrupt { position: Position { partition: 0, offset }, reason }
}
