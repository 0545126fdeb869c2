//! Which offsets of a partition have a final outcome, and the watermark below which all do.

use std::collections::BTreeMap;

/// Completion tracking for one partition: the offsets read and not yet final, and how far the
/// partition has been read. Every offset below `read_upto` that is not pending is final (it was
/// delivered, dead-lettered, or did not match). Only the watermark is ever committed.
///
/// Invariant: progress never passes an event whose outcome is not final.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// Pending offsets and when each was appended (ms since the Unix epoch).
    pending: BTreeMap<u64, i64>,
    read_upto: u64,
}

impl Tracker {
    /// Starts tracking at `offset`: everything below it is final.
    pub(crate) fn new(offset: u64) -> Tracker {
        Tracker { pending: BTreeMap::new(), read_upto: offset }
    }

    /// Records that `offset` (appended at `timestamp_ms`) was read and is pending; everything
    /// below it was read too.
    pub(crate) fn track(&mut self, offset: u64, timestamp_ms: i64) {
        self.pending.insert(offset, timestamp_ms);
        self.advance(offset + 1);
    }

    /// Records that everything below `offset` has been read.
    pub(crate) fn advance(&mut self, offset: u64) {
        self.read_upto = self.read_upto.max(offset);
    }

    /// Records that `offset` has a final outcome.
    pub(crate) fn complete(&mut self, offset: u64) {
        self.pending.remove(&offset);
    }

    /// The next offset to commit: the lowest pending one, or how far the partition was read.
    pub(crate) fn watermark(&self) -> u64 {
        self.pending.first_key_value().map_or(self.read_upto, |(&offset, _)| offset).min(self.read_upto)
    }

    /// When the oldest pending event was appended.
    pub(crate) fn oldest_pending_ms(&self) -> Option<i64> {
        self.pending.first_key_value().map(|(_, &timestamp_ms)| timestamp_ms)
    }

    /// How far reading runs ahead of the watermark.
    pub(crate) fn window(&self) -> u64 {
        self.read_upto - self.watermark()
    }

    /// How far the partition has been read.
    pub(crate) fn read_upto(&self) -> u64 {
        self.read_upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_stops_at_the_first_pending_offset() {
        let mut t = Tracker::new(10);
        assert_eq!(t.watermark(), 10);
        for o in [10, 12, 14] {
            t.track(o, o as i64 * 1000);
        }
        assert_eq!((t.watermark(), t.window()), (10, 5));
        t.complete(12);
        assert_eq!((t.watermark(), t.oldest_pending_ms()), (10, Some(10_000)));
        t.complete(10);
        assert_eq!((t.watermark(), t.oldest_pending_ms()), (14, Some(14_000)));
        t.advance(20);
        t.complete(14);
        assert_eq!((t.watermark(), t.window(), t.oldest_pending_ms()), (20, 0, None));
    }

    #[test]
    fn reading_never_goes_backwards_and_stale_completions_are_ignored() {
        let mut t = Tracker::new(5);
        t.advance(3);
        assert_eq!(t.read_upto(), 5);
        t.complete(1);
        t.track(7, 0);
        t.complete(99);
        assert_eq!(t.watermark(), 7);
    }
}
