//! Which offsets of a partition have a final outcome, and the watermark below which all do.

use std::collections::VecDeque;

/// Completion tracking for one partition. Offsets are tracked in read order; the watermark is
/// the lowest offset whose outcome is not final yet (or the next offset to read when every read
/// offset is final). Only the watermark is ever committed, so progress never passes an event
/// whose outcome is not final.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// The offset of `done[0]`.
    base: u64,
    /// `done[i]`: the outcome of offset `base + i` is final.
    done: VecDeque<bool>,
}

impl Tracker {
    /// Starts tracking at `offset`, the first offset read.
    pub(crate) fn new(offset: u64) -> Tracker {
        Tracker { base: offset, done: VecDeque::new() }
    }

    /// Records that `offset` was read and is pending. Offsets skipped by the log (gaps) count
    /// as final: there is nothing there to deliver.
    pub(crate) fn track(&mut self, offset: u64) {
        let end = self.base + self.done.len() as u64;
        if offset < end {
            return;
        }
        for _ in end..offset {
            self.done.push_back(true);
        }
        self.done.push_back(false);
    }

    /// Records that `offset` has a final outcome.
    pub(crate) fn complete(&mut self, offset: u64) {
        if let Some(slot) = offset.checked_sub(self.base).and_then(|i| self.done.get_mut(i as usize)) {
            *slot = true;
        }
        while self.done.front() == Some(&true) {
            self.done.pop_front();
            self.base += 1;
        }
    }

    /// The next offset to commit.
    pub(crate) fn watermark(&self) -> u64 {
        self.base
    }

    /// How many offsets are read but not yet below the watermark.
    pub(crate) fn window(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_stops_at_the_first_pending_offset() {
        let mut t = Tracker::new(10);
        for o in 10..15 {
            t.track(o);
        }
        t.complete(11);
        t.complete(12);
        assert_eq!(t.watermark(), 10);
        t.complete(10);
        assert_eq!(t.watermark(), 13);
        t.complete(14);
        assert_eq!(t.watermark(), 13);
        t.complete(13);
        assert_eq!(t.watermark(), 15);
        assert_eq!(t.window(), 0);
    }

    #[test]
    fn gaps_count_as_final_and_stale_completions_are_ignored() {
        let mut t = Tracker::new(0);
        t.track(0);
        t.track(5);
        t.complete(0);
        assert_eq!(t.watermark(), 5);
        t.complete(3);
        t.complete(5);
        assert_eq!(t.watermark(), 6);
    }
}
