//! Record framing: `len:u32 | crc32c:u32 | offset:u64 | timestamp_ms:i64 | payload`, all
//! little-endian. `len` is the payload length; the checksum covers offset, timestamp and
//! payload, so a record copied to the wrong place or a torn write is caught, not just bit rot.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};

use switchyard_event::{storage, Event};
use switchyard_log::LogError;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 24;

/// The largest payload a record may carry (the length field is a `u32`).
const MAX_PAYLOAD: usize = u32::MAX as usize;

/// A parsed record header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) crc: u32,
    pub(crate) offset: u64,
    pub(crate) timestamp_ms: i64,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `bytes`; `None` when there are fewer.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Header> {
        let h = bytes.get(..HEADER_LEN)?;
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let mut u64_bytes = [0u8; 8];
        u64_bytes.copy_from_slice(&h[8..16]);
        let offset = u64::from_le_bytes(u64_bytes);
        u64_bytes.copy_from_slice(&h[16..24]);
        let timestamp_ms = i64::from_le_bytes(u64_bytes);
        Some(Header { len: u32_at(0), crc: u32_at(4), offset, timestamp_ms })
    }

    /// Whole record length, header included.
    pub(crate) fn total_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.len)
    }

    /// Whether `header_bytes` (this record's header) and `payload` match the checksum.
    pub(crate) fn checksum_ok(&self, header_bytes: &[u8], payload: &[u8]) -> bool {
        match header_bytes.get(8..HEADER_LEN) {
            Some(covered) => crc32c::crc32c_append(crc32c::crc32c(covered), payload) == self.crc,
            None => false,
        }
    }
}

/// Appends a frame for `event` to `out`, with offset, timestamp and checksum left blank for
/// the writer to fill in ([`seal_frames`]): encoding happens on the caller's task, so that
/// many ingest handlers encode in parallel and the single writer only copies and checksums.
pub(crate) fn push_frame(out: &mut Vec<u8>, event: &Event) -> Result<(), LogError> {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    if let Err(error) = storage::encode_into(event, out) {
        out.truncate(start);
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("event '{}' cannot be stored: {error}", event.id()),
        )));
    }
    let len = out.len() - start - HEADER_LEN;
    if len > MAX_PAYLOAD {
        out.truncate(start);
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("event '{}' is too large to store ({len} bytes)", event.id()),
        )));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Fills offsets (from `first_offset` on), the timestamp and checksums into the frames built
/// by [`push_frame`]. Calls `on_record(offset, position_in_frames)` for each. Returns the
/// number of frames.
pub(crate) fn seal_frames(
    frames: &mut [u8],
    first_offset: u64,
    timestamp_ms: i64,
    mut on_record: impl FnMut(u64, usize),
) -> u64 {
    let mut at = 0;
    let mut offset = first_offset;
    while let Some(header) = Header::parse(&frames[at..]) {
        let end = at + HEADER_LEN + header.len as usize;
        let Some(frame) = frames.get_mut(at..end) else { break };
        frame[8..16].copy_from_slice(&offset.to_le_bytes());
        frame[16..24].copy_from_slice(&timestamp_ms.to_le_bytes());
        let crc = crc32c::crc32c(&frame[8..]);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        on_record(offset, at);
        offset += 1;
        at = end;
    }
    offset - first_offset
}

/// How a scan of a segment file ended.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// Position after the last valid record.
    pub(crate) end_pos: u64,
    /// Offset the next record would have.
    pub(crate) next_offset: u64,
    /// Timestamp of the last valid record scanned, if any.
    pub(crate) last_ts: Option<i64>,
    /// Why the scan stopped before the end of the file, if it did.
    pub(crate) invalid: Option<String>,
}

/// Validates records from `start_pos` (which must hold offset `start_offset`) to `file_len`:
/// length in bounds, checksum, offsets consecutive. Stops at the first bad record. Calls
/// `on_record(offset, position)` for every good one.
pub(crate) fn scan(
    file: &File,
    file_len: u64,
    start_pos: u64,
    start_offset: u64,
    mut on_record: impl FnMut(u64, u64),
) -> io::Result<ScanEnd> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(start_pos))?;
    let mut pos = start_pos;
    let mut expected = start_offset;
    let mut last_ts = None;
    let mut header_bytes = [0u8; HEADER_LEN];
    let mut payload = Vec::new();
    let invalid = loop {
        let remaining = file_len.saturating_sub(pos);
        if remaining == 0 {
            break None;
        }
        if remaining < HEADER_LEN as u64 {
            break Some(format!("partial header of {remaining} bytes"));
        }
        reader.read_exact(&mut header_bytes)?;
        let Some(header) = Header::parse(&header_bytes) else { break Some("unreadable header".to_owned()) };
        if header.total_len() > remaining {
            break Some(format!("record length {} runs past the end of the file", header.len));
        }
        // Bounded by the file's real size (checked above), so garbage cannot make us allocate
        // more than the file holds.
        payload.resize(header.len as usize, 0);
        reader.read_exact(&mut payload)?;
        if !header.checksum_ok(&header_bytes, &payload) {
            break Some(format!("checksum mismatch in record at position {pos}"));
        }
        if header.offset != expected {
            break Some(format!("offset {} where {expected} was expected", header.offset));
        }
        on_record(header.offset, pos);
        last_ts = Some(header.timestamp_ms);
        pos += header.total_len();
        expected += 1;
    };
    Ok(ScanEnd { end_pos: pos, next_offset: expected, last_ts, invalid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        switchyard_log::testkit::sample_event(id, 16)
    }

    #[test]
    fn sealed_frames_parse_and_verify() {
        let mut frames = Vec::new();
        push_frame(&mut frames, &event("a")).unwrap();
        push_frame(&mut frames, &event("b")).unwrap();
        let mut seen = Vec::new();
        let n = seal_frames(&mut frames, 7, 1234, |o, at| seen.push((o, at)));
        assert_eq!(n, 2);
        assert_eq!(seen[0], (7, 0));
        let h = Header::parse(&frames).unwrap();
        assert_eq!((h.offset, h.timestamp_ms), (7, 1234));
        let payload = &frames[HEADER_LEN..HEADER_LEN + h.len as usize];
        assert!(h.checksum_ok(&frames[..HEADER_LEN], payload));
        let mut bad = payload.to_vec();
        bad[0] ^= 1;
        assert!(!h.checksum_ok(&frames[..HEADER_LEN], &bad));
    }
}
