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

/// A value per partition, for what a worker keeps of each partition it reads: a few entries
/// at most (one on the embedded log), so a list, which costs one small allocation where a
/// `HashMap` took about 80 to 190 bytes of every trigger.
#[derive(Debug, Clone)]
pub(crate) struct Partitions<V>(Vec<(u32, V)>);

impl<V> Default for Partitions<V> {
    fn default() -> Partitions<V> {
        Partitions(Vec::new())
    }
}

impl<V> Partitions<V> {
    pub(crate) fn get(&self, partition: &u32) -> Option<&V> {
        self.0.iter().find(|(p, _)| p == partition).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, partition: &u32) -> Option<&mut V> {
        self.0.iter_mut().find(|(p, _)| p == partition).map(|(_, v)| v)
    }

    /// The partition's value, made by `make` if it has none.
    pub(crate) fn get_or_insert_with(&mut self, partition: u32, make: impl FnOnce() -> V) -> &mut V {
        let index = match self.0.iter().position(|(p, _)| *p == partition) {
            Some(index) => index,
            None => {
                self.0.push((partition, make()));
                self.0.len() - 1
            }
        };
        &mut self.0[index].1
    }

    pub(crate) fn insert(&mut self, partition: u32, value: V) {
        match self.get_mut(&partition) {
            Some(slot) => *slot = value,
            None => self.0.push((partition, value)),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u32, &V)> {
        self.0.iter().map(|(p, v)| (p, v))
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_keep_one_value_each() {
        let mut partitions = Partitions::default();
        partitions.insert(3, 30);
        partitions.insert(1, 10);
        partitions.insert(3, 31);
        *partitions.get_or_insert_with(1, || 0) += 1;
        *partitions.get_or_insert_with(2, || 20) += 1;
        assert_eq!(
            (partitions.get(&1), partitions.get(&2), partitions.get(&3), partitions.get(&4)),
            (Some(&11), Some(&21), Some(&31), None)
        );
        let mut all: Vec<(u32, u64)> = partitions.iter().map(|(&p, &v)| (p, v)).collect();
        all.sort();
        assert_eq!(all, [(1, 11), (2, 21), (3, 31)]);
        assert_eq!(partitions.values().sum::<u64>(), 63);
    }

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
