//! Segment files and their sparse indexes, and recovery of a topic directory on open.
//!
//! A topic directory holds `<base>.log` segment files, `<base>` being the offset of the first
//! record as 20 zero-padded digits so that names sort in offset order, each with a sparse index
//! `<base>.idx`: 8-byte entries `relative_offset:u32 | position:u32` (little-endian), one about
//! every [`INDEX_INTERVAL`] bytes of records. The index is written after the records it points
//! at are fsynced and is never fsynced itself: recovery validates it and rebuilds what is
//! missing by scanning, so it costs no extra fsync on the append path.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::record;

/// Bytes of records between two index entries.
pub(crate) const INDEX_INTERVAL: u64 = 4096;
/// Size of one index entry on disk.
pub(crate) const INDEX_ENTRY_LEN: usize = 8;

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Offset minus the segment's base.
    pub(crate) relative_offset: u32,
    /// Byte position of that record in the segment file.
    pub(crate) position: u32,
}

/// What readers and retention know about a segment. Covers durable records only: the writer
/// updates it after fsync and before it publishes the new end.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// Offset of the first record.
    pub(crate) base: u64,
    /// Offset after the last durable record.
    pub(crate) next_offset: u64,
    /// Durable bytes in the file.
    pub(crate) size: u64,
    /// Timestamp of the last record, if any (retention by age).
    pub(crate) last_ts: Option<i64>,
    /// The sparse index, in offset order.
    pub(crate) index: Vec<IndexEntry>,
    /// The segment file.
    pub(crate) log_path: PathBuf,
    /// The index file.
    pub(crate) idx_path: PathBuf,
}

impl Segment {
    /// A file position at or before the record holding `offset`, from the sparse index.
    pub(crate) fn position_for(&self, offset: u64) -> u64 {
        let Some(relative) = offset.checked_sub(self.base) else { return 0 };
        let at = self.index.partition_point(|e| u64::from(e.relative_offset) <= relative);
        at.checked_sub(1).map_or(0, |i| u64::from(self.index[i].position))
    }
}

/// The segment file name for `base`.
pub(crate) fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The index file name for `base`.
pub(crate) fn idx_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base offset in a segment file name, if it is one.
fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Fsyncs a directory, so that files created or removed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Encodes index entries for the index file.
pub(crate) fn encode_index(entries: &[IndexEntry], out: &mut Vec<u8>) {
    for e in entries {
        out.extend_from_slice(&e.relative_offset.to_le_bytes());
        out.extend_from_slice(&e.position.to_le_bytes());
    }
}

/// Decodes an index file, keeping the valid prefix: entries must increase strictly in both
/// offset and position and point inside the segment file. A torn last entry is dropped.
fn decode_index(bytes: &[u8], file_len: u64) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::with_capacity(bytes.len() / INDEX_ENTRY_LEN);
    for chunk in bytes.chunks_exact(INDEX_ENTRY_LEN) {
        let relative_offset = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let position = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let increasing =
            entries.last().is_none_or(|last| relative_offset > last.relative_offset && position > last.position);
        if !increasing || u64::from(position) >= file_len {
            break;
        }
        entries.push(IndexEntry { relative_offset, position });
    }
    entries
}

/// Decides where index entries go as records are appended or scanned: the first record at
/// least [`INDEX_INTERVAL`] bytes past the previous entry (or the segment start) gets one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexPolicy {
    last_position: u64,
}

impl IndexPolicy {
    /// Starts after an entry (or the start of the segment) at `last_position`.
    pub(crate) fn after(last_position: u64) -> IndexPolicy {
        IndexPolicy { last_position }
    }

    /// The entry for a record at `position` with `offset`, if it gets one.
    pub(crate) fn observe(&mut self, base: u64, offset: u64, position: u64) -> Option<IndexEntry> {
        if position < self.last_position + INDEX_INTERVAL {
            return None;
        }
        // Entries that do not fit the on-disk format are skipped: lookups then scan a little
        // further, which is correct, only slower.
        let relative_offset = u32::try_from(offset.checked_sub(base)?).ok()?;
        let position32 = u32::try_from(position).ok()?;
        self.last_position = position;
        Some(IndexEntry { relative_offset, position: position32 })
    }
}

/// The writer's handle on the last segment of a topic.
#[derive(Debug)]
pub(crate) struct Active {
    /// Offset of its first record.
    pub(crate) base: u64,
    /// The segment file, opened for writing.
    pub(crate) log: File,
    /// The index file, or `None` after an index write failed (recovery rebuilds it).
    pub(crate) idx: Option<File>,
    /// Bytes in the index file.
    pub(crate) idx_len: u64,
    /// Durable bytes in the segment file.
    pub(crate) size: u64,
    /// Offset the next record gets.
    pub(crate) next_offset: u64,
    /// Where index entries go next.
    pub(crate) policy: IndexPolicy,
}

/// Creates empty segment and index files for `base` (replacing leftovers of a failed roll) and
/// fsyncs the directory.
pub(crate) fn create_segment(dir: &Path, base: u64) -> io::Result<(Segment, Active)> {
    let log_path = log_path(dir, base);
    let idx_path = idx_path(dir, base);
    let log = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&log_path)?;
    let idx = OpenOptions::new().write(true).create(true).truncate(true).open(&idx_path)?;
    log.sync_all()?;
    sync_dir(dir)?;
    let segment = Segment { base, next_offset: base, size: 0, last_ts: None, index: Vec::new(), log_path, idx_path };
    let active =
        Active { base, log, idx: Some(idx), idx_len: 0, size: 0, next_offset: base, policy: IndexPolicy::after(0) };
    Ok((segment, active))
}

/// A recovered topic directory.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Every segment, by base offset; the last one is active.
    pub(crate) segments: BTreeMap<u64, Segment>,
    /// The writer's handle on the last segment.
    pub(crate) active: Active,
}

/// Opens a topic directory: loads the sealed segments (trusted; their index rebuilt if
/// missing), and validates the tail of the last one, truncating at the first torn or corrupt
/// record.
pub(crate) fn recover(dir: &Path, topic: &str) -> io::Result<Recovered> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(base) = name.to_str().and_then(parse_log_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    let Some((&last, sealed)) = bases.split_last() else {
        let (segment, active) = create_segment(dir, 0)?;
        return Ok(Recovered { segments: BTreeMap::from([(0, segment)]), active });
    };
    let mut segments = BTreeMap::new();
    for &base in sealed {
        let (segment, _) = load(dir, topic, base, false)?;
        segments.insert(base, segment);
    }
    let (segment, active) = load(dir, topic, last, true)?;
    segments.insert(last, segment);
    let active = active.ok_or_else(|| io::Error::other("active segment was not opened"))?;

    let mut previous_end: Option<u64> = None;
    for segment in segments.values() {
        if let Some(end) = previous_end.filter(|&end| end != segment.base) {
            warn!(topic, segment = segment.base, previous_end = end, "segment offsets are not contiguous");
        }
        previous_end = Some(segment.next_offset);
    }
    Ok(Recovered { segments, active })
}

/// Loads one segment. For the last one (`is_last`), truncates a torn or corrupt tail and
/// returns the writer's handle.
fn load(dir: &Path, topic: &str, base: u64, is_last: bool) -> io::Result<(Segment, Option<Active>)> {
    let log_path = log_path(dir, base);
    let idx_path = idx_path(dir, base);
    let log = OpenOptions::new().read(true).write(true).open(&log_path)?;
    let file_len = log.metadata()?.len();
    let idx_bytes = match fs::read(&idx_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut index = idx_bytes.as_deref().map(|b| decode_index(b, file_len)).unwrap_or_default();

    // Scan from the last index entry: everything before it was fsynced before the entry was
    // written, so only the tail after it can be torn.
    let scan_tail = |index: &mut Vec<IndexEntry>| -> io::Result<(record::ScanEnd, u64)> {
        let (start_pos, start_offset) =
            index.last().map_or((0, base), |e| (u64::from(e.position), base + u64::from(e.relative_offset)));
        let mut policy = IndexPolicy::after(start_pos);
        let mut added = Vec::new();
        let end = record::scan(&log, file_len, start_pos, start_offset, |offset, position| {
            added.extend(policy.observe(base, offset, position));
        })?;
        index.extend(added);
        Ok((end, start_pos))
    };
    let (mut end, start_pos) = scan_tail(&mut index)?;
    if !index.is_empty() && end.invalid.is_some() && end.end_pos == start_pos {
        // The last index entry does not point at a valid record, so the index cannot be
        // trusted: rebuild it from the start of the segment.
        warn!(topic, segment = base, "index does not match its segment; rebuilding it");
        index.clear();
        end = scan_tail(&mut index)?.0;
    }

    if let Some(reason) = &end.invalid {
        if is_last {
            let cut = file_len - end.end_pos;
            log.set_len(end.end_pos)?;
            log.sync_all()?;
            warn!(topic, segment = base, cut_bytes = cut, reason = %reason, "truncated a torn or corrupt log tail");
        } else {
            warn!(
                topic,
                segment = base,
                unreadable_bytes = file_len - end.end_pos,
                reason = %reason,
                "sealed segment has an unreadable tail; its records from there on are skipped"
            );
        }
    }

    let idx_len = (index.len() * INDEX_ENTRY_LEN) as u64;
    if idx_bytes.as_ref().is_none_or(|b| b.len() as u64 != idx_len) {
        let mut bytes = Vec::with_capacity(idx_len as usize);
        encode_index(&index, &mut bytes);
        // Not fsynced: a lost index is rebuilt on the next open.
        fs::write(&idx_path, &bytes)?;
    }

    let policy = IndexPolicy::after(index.last().map_or(0, |e| u64::from(e.position)));
    let segment = Segment {
        base,
        next_offset: end.next_offset,
        size: end.end_pos,
        last_ts: end.last_ts,
        index,
        log_path,
        idx_path: idx_path.clone(),
    };
    let active = if is_last {
        let idx = OpenOptions::new().write(true).create(true).truncate(false).open(&idx_path)?;
        Some(Active { base, log, idx: Some(idx), idx_len, size: end.end_pos, next_offset: end.next_offset, policy })
    } else {
        None
    };
    Ok((segment, active))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = log_path(Path::new("/x"), 42);
        assert_eq!(p.file_name().unwrap(), "00000000000000000042.log");
        assert_eq!(parse_log_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert_eq!(parse_log_name("00000000000000000042.idx"), None);
    }

    #[test]
    fn index_lookup_and_decode() {
        let mut bytes = Vec::new();
        let entries =
            [IndexEntry { relative_offset: 10, position: 5000 }, IndexEntry { relative_offset: 20, position: 9000 }];
        encode_index(&entries, &mut bytes);
        bytes.extend_from_slice(&[1, 2, 3]); // torn entry
        let decoded = decode_index(&bytes, 10_000);
        assert_eq!(decoded, entries);
        assert_eq!(decode_index(&bytes, 8000).len(), 1);
        let seg = Segment {
            base: 100,
            next_offset: 130,
            size: 10_000,
            last_ts: None,
            index: decoded,
            log_path: PathBuf::new(),
            idx_path: PathBuf::new(),
        };
        assert_eq!(seg.position_for(50), 0);
        assert_eq!(seg.position_for(105), 0);
        assert_eq!(seg.position_for(110), 5000);
        assert_eq!(seg.position_for(119), 5000);
        assert_eq!(seg.position_for(125), 9000);
    }
}
