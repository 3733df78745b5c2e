//! Which input offset is safe to commit: a contiguous watermark per partition.
//!
//! Records are handed out in offset order but their deliveries finish in any order. The
//! offset committed for a partition is the first offset that is not done yet (or one past
//! the last handed-out offset when everything is done), so a crash never skips a record
//! whose delivery was not confirmed. A record that will never be delivered by this process
//! (a permanent failure, or a retry abandoned at shutdown) is *abandoned*: it holds the
//! watermark back for good, which stops the partition instead of losing the record.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

/// A topic and a partition of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
}

impl TopicPartition {
    /// Names a partition of a topic.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// One assignment of a partition to this consumer.
///
/// A partition revoked and assigned again gets a new epoch, so that a delivery finishing
/// late for the old assignment cannot mark an offset of the new one as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pending {
    /// Its delivery is still being attempted.
    InFlight,
    /// This process will not deliver it: it holds the watermark back for good.
    Abandoned,
}

/// The offsets of one partition: handed out, not yet done, and the watermark.
#[derive(Clone, Debug, Default)]
pub struct PartitionOffsets {
    /// Offsets handed out and not done yet.
    pending: BTreeMap<i64, Pending>,
    /// How many of `pending` are in flight (not abandoned).
    in_flight: usize,
    /// The first offset handed out: where the group stood when this assignment began.
    start: Option<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The last offset committed, or the first offset handed out (where the group already
    /// stands, so committing it again would be a no-op).
    committed: Option<i64>,
    /// Where the group stood when this assignment began (its committed offset), if known:
    /// the first offset handed out should be this one.
    expected_start: Option<i64>,
}

impl PartitionOffsets {
    /// No offset handed out yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records where the group stood when this assignment began (its committed offset).
    pub fn expect_start(&mut self, offset: i64) {
        self.expected_start = Some(offset);
    }

    /// Records that `offset` was consumed and its record is on its way.
    ///
    /// Offsets normally come in increasing order; one handed out again (a redelivery after
    /// a seek) is tracked again and never moves the committed offset backwards.
    ///
    /// Returns the offsets jumped over, when `offset` lies beyond the next one expected
    /// (one past the last handed out, or the group's committed offset for the first): the
    /// broker never delivered them. In a plain topic that is a loss (retention deleted
    /// them before they were read, or a broker fault); a compacted topic or transaction
    /// markers leave such gaps legitimately.
    pub fn hand_out(&mut self, offset: i64) -> Option<Range<i64>> {
        let skipped = self
            .next
            .or(self.expected_start)
            .filter(|&expected| offset > expected)
            .map(|expected| expected..offset);
        if self.pending.insert(offset, Pending::InFlight) != Some(Pending::InFlight) {
            self.in_flight += 1;
        }
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
        self.start.get_or_insert(offset);
        self.committed.get_or_insert(offset);
        skipped
    }

    /// Records that the record at `offset` was delivered. Returns false when the offset
    /// was not pending.
    pub fn mark_done(&mut self, offset: i64) -> bool {
        match self.pending.remove(&offset) {
            Some(Pending::InFlight) => {
                self.in_flight -= 1;
                true
            }
            Some(Pending::Abandoned) => true,
            None => false,
        }
    }

    /// Records that this process gives up on the record at `offset`: the watermark will
    /// never pass it. Returns false when the offset was not pending.
    pub fn mark_abandoned(&mut self, offset: i64) -> bool {
        match self.pending.get_mut(&offset) {
            Some(state @ Pending::InFlight) => {
                *state = Pending::Abandoned;
                self.in_flight -= 1;
                true
            }
            Some(Pending::Abandoned) => true,
            None => false,
        }
    }

    /// The next offset to commit: the first pending offset, or one past the highest offset
    /// handed out when none is pending. `None` before anything was handed out.
    pub fn watermark(&self) -> Option<i64> {
        match self.pending.first_key_value() {
            Some((&first_pending, _)) => Some(first_pending),
            None => self.next,
        }
    }

    /// The watermark, when it moved past the last committed offset.
    pub fn committable(&self) -> Option<i64> {
        let watermark = self.watermark()?;
        match self.committed {
            Some(committed) if watermark <= committed => None,
            _ => Some(watermark),
        }
    }

    /// The watermark, when it moved past where this assignment began, whether or not it
    /// was committed already: what a final or a revoking commit sends, in case an earlier
    /// asynchronous commit was lost.
    pub fn progress(&self) -> Option<i64> {
        let watermark = self.watermark()?;
        match self.start {
            Some(start) if watermark <= start => None,
            _ => Some(watermark),
        }
    }

    /// Records that `offset` was committed.
    pub fn mark_committed(&mut self, offset: i64) {
        self.committed = Some(self.committed.map_or(offset, |old| old.max(offset)));
    }

    /// How many handed-out records still have a delivery under way.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// How many handed-out records are not done (in flight or abandoned).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The first abandoned offset, if any: where this partition is stuck.
    pub fn first_abandoned(&self) -> Option<i64> {
        self.pending
            .iter()
            .find(|(_, state)| **state == Pending::Abandoned)
            .map(|(offset, _)| *offset)
    }
}

#[derive(Debug)]
struct Tracked {
    epoch: Epoch,
    offsets: PartitionOffsets,
}

/// Watermarks of every partition assigned to this consumer.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, Tracked>,
    next_epoch: u64,
}

impl OffsetTracker {
    /// No partition assigned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new assignment of `tp`, forgetting anything known about it before.
    pub fn assign(&mut self, tp: TopicPartition) -> Epoch {
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        self.partitions.insert(
            tp,
            Tracked {
                epoch,
                offsets: PartitionOffsets::new(),
            },
        );
        epoch
    }

    /// Ends the assignment of `tp`, returning what was known about it.
    pub fn revoke(&mut self, tp: &TopicPartition) -> Option<PartitionOffsets> {
        self.partitions.remove(tp).map(|tracked| tracked.offsets)
    }

    /// The current epoch of `tp`, if assigned.
    pub fn epoch(&self, tp: &TopicPartition) -> Option<Epoch> {
        self.partitions.get(tp).map(|tracked| tracked.epoch)
    }

    /// Records that `offset` of `tp` was consumed; assigns `tp` first if it is unknown.
    /// Returns the epoch, and the offsets jumped over (see [`PartitionOffsets::hand_out`]).
    pub fn hand_out(&mut self, tp: &TopicPartition, offset: i64) -> (Epoch, Option<Range<i64>>) {
        if !self.partitions.contains_key(tp) {
            self.assign(tp.clone());
        }
        let tracked = self
            .partitions
            .get_mut(tp)
            .expect("the partition was assigned just above");
        let skipped = tracked.offsets.hand_out(offset);
        (tracked.epoch, skipped)
    }

    /// Records where the group stood on `tp` when it was assigned (ignored if not assigned).
    pub fn expect_start(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(tracked) = self.partitions.get_mut(tp) {
            tracked.offsets.expect_start(offset);
        }
    }

    /// Records that `offset` of `tp` was delivered. Ignored (returns false) when the
    /// partition was reassigned since (`epoch` is stale) or the offset is not pending.
    pub fn mark_done(&mut self, tp: &TopicPartition, epoch: Epoch, offset: i64) -> bool {
        self.current_mut(tp, epoch)
            .is_some_and(|offsets| offsets.mark_done(offset))
    }

    /// Records that `offset` of `tp` will not be delivered by this process. Ignored
    /// (returns false) when `epoch` is stale or the offset is not pending.
    pub fn mark_abandoned(&mut self, tp: &TopicPartition, epoch: Epoch, offset: i64) -> bool {
        self.current_mut(tp, epoch)
            .is_some_and(|offsets| offsets.mark_abandoned(offset))
    }

    /// The offsets of `tp`, if assigned.
    pub fn partition(&self, tp: &TopicPartition) -> Option<&PartitionOffsets> {
        self.partitions.get(tp).map(|tracked| &tracked.offsets)
    }

    /// How many deliveries of `tp` are under way (0 when not assigned).
    pub fn in_flight(&self, tp: &TopicPartition) -> usize {
        self.partition(tp).map_or(0, PartitionOffsets::in_flight)
    }

    /// The watermark of `tp`, if anything was handed out.
    pub fn committable(&self, tp: &TopicPartition) -> Option<i64> {
        self.partition(tp).and_then(PartitionOffsets::committable)
    }

    /// Every partition whose watermark moved past its last commit, sorted.
    pub fn all_committable(&self) -> Vec<(TopicPartition, i64)> {
        let mut ready: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(tp, tracked)| Some((tp.clone(), tracked.offsets.committable()?)))
            .collect();
        ready.sort();
        ready
    }

    /// Every partition whose watermark moved since it was assigned, committed or not,
    /// sorted.
    pub fn all_progress(&self) -> Vec<(TopicPartition, i64)> {
        let mut ready: Vec<_> = self
            .partitions
            .iter()
            .filter_map(|(tp, tracked)| Some((tp.clone(), tracked.offsets.progress()?)))
            .collect();
        ready.sort();
        ready
    }

    /// Records that `offset` of `tp` was committed.
    pub fn mark_committed(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(tracked) = self.partitions.get_mut(tp) {
            tracked.offsets.mark_committed(offset);
        }
    }

    /// Deliveries under way over all partitions.
    pub fn total_in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(|tracked| tracked.offsets.in_flight())
            .sum()
    }

    fn current_mut(&mut self, tp: &TopicPartition, epoch: Epoch) -> Option<&mut PartitionOffsets> {
        self.partitions
            .get_mut(tp)
            .filter(|tracked| tracked.epoch == epoch)
            .map(|tracked| &mut tracked.offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0)
    }

    #[test]
    fn offsets_jumped_over_are_reported() {
        let mut offsets = PartitionOffsets::new();
        offsets.expect_start(100);
        assert_eq!(offsets.hand_out(100), None, "starts where the group stood");
        assert_eq!(offsets.hand_out(101), None);
        assert_eq!(offsets.hand_out(105), Some(102..105));
        assert_eq!(offsets.hand_out(103), None, "a redelivery is no gap");
        assert_eq!(offsets.hand_out(106), None);

        let mut late = PartitionOffsets::new();
        late.expect_start(100);
        assert_eq!(
            late.hand_out(982),
            Some(100..982),
            "the broker started further on"
        );

        let mut unknown = PartitionOffsets::new();
        assert_eq!(
            unknown.hand_out(7),
            None,
            "no committed offset: nothing to compare"
        );
        let mut earlier = PartitionOffsets::new();
        earlier.expect_start(10);
        assert_eq!(
            earlier.hand_out(4),
            None,
            "a reset to earlier offsets loses nothing"
        );
    }

    #[test]
    fn nothing_handed_out_nothing_to_commit() {
        let offsets = PartitionOffsets::new();
        assert_eq!(offsets.watermark(), None);
        assert_eq!(offsets.committable(), None);
    }

    #[test]
    fn watermark_waits_for_the_first_undone_offset() {
        let mut offsets = PartitionOffsets::new();
        for offset in 10..15 {
            offsets.hand_out(offset);
        }
        // Nothing done: the group already stands at 10.
        assert_eq!(offsets.watermark(), Some(10));
        assert_eq!(offsets.committable(), None);

        assert!(offsets.mark_done(12));
        assert!(offsets.mark_done(13));
        assert_eq!(offsets.committable(), None, "10 and 11 are not done");

        assert!(offsets.mark_done(10));
        assert_eq!(offsets.committable(), Some(11));

        assert!(offsets.mark_done(11));
        assert_eq!(offsets.committable(), Some(14));

        assert!(offsets.mark_done(14));
        assert_eq!(offsets.committable(), Some(15));
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn committed_watermark_is_not_offered_again() {
        let mut offsets = PartitionOffsets::new();
        offsets.hand_out(0);
        offsets.mark_done(0);
        assert_eq!(offsets.committable(), Some(1));
        offsets.mark_committed(1);
        assert_eq!(offsets.committable(), None);
        assert_eq!(offsets.progress(), Some(1), "a final commit sends it again");
        offsets.hand_out(1);
        offsets.mark_done(1);
        assert_eq!(offsets.committable(), Some(2));
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        // Compacted topics and transaction markers leave holes in the offsets.
        let mut offsets = PartitionOffsets::new();
        for offset in [3, 7, 8, 20] {
            offsets.hand_out(offset);
        }
        for offset in [20, 8, 7, 3] {
            offsets.mark_done(offset);
        }
        assert_eq!(offsets.committable(), Some(21));
    }

    #[test]
    fn abandoned_offset_holds_the_watermark_forever() {
        let mut offsets = PartitionOffsets::new();
        for offset in 0..5 {
            offsets.hand_out(offset);
        }
        offsets.mark_done(0);
        assert!(offsets.mark_abandoned(1));
        for offset in 2..5 {
            offsets.mark_done(offset);
        }
        assert_eq!(offsets.committable(), Some(1));
        assert_eq!(offsets.in_flight(), 0);
        assert_eq!(offsets.pending(), 1);
        assert_eq!(offsets.first_abandoned(), Some(1));
    }

    #[test]
    fn unknown_offsets_are_ignored() {
        let mut offsets = PartitionOffsets::new();
        offsets.hand_out(5);
        assert!(!offsets.mark_done(4));
        assert!(!offsets.mark_abandoned(6));
        assert_eq!(offsets.in_flight(), 1);
    }

    #[test]
    fn redelivered_offset_never_moves_the_commit_backwards() {
        let mut offsets = PartitionOffsets::new();
        offsets.hand_out(0);
        offsets.hand_out(1);
        offsets.mark_done(0);
        offsets.mark_done(1);
        offsets.mark_committed(2);
        offsets.hand_out(1);
        assert_eq!(offsets.watermark(), Some(1));
        assert_eq!(offsets.committable(), None);
        offsets.mark_done(1);
        assert_eq!(offsets.committable(), None, "2 is already committed");
    }

    #[test]
    fn late_delivery_from_a_previous_assignment_is_ignored() {
        let mut tracker = OffsetTracker::new();
        let old = tracker.assign(tp());
        tracker.hand_out(&tp(), 7);
        tracker.revoke(&tp());
        let new = tracker.assign(tp());
        assert_ne!(old, new);
        assert_eq!(tracker.hand_out(&tp(), 7), (new, None));
        assert!(!tracker.mark_done(&tp(), old, 7), "stale epoch");
        assert_eq!(tracker.in_flight(&tp()), 1);
        assert!(tracker.mark_done(&tp(), new, 7));
        assert_eq!(tracker.committable(&tp()), Some(8));
    }

    #[test]
    fn tracker_lists_partitions_that_advanced() {
        let mut tracker = OffsetTracker::new();
        let a = TopicPartition::new("t", 0);
        let b = TopicPartition::new("t", 1);
        let (epoch_a, _) = tracker.hand_out(&a, 0);
        tracker.hand_out(&b, 0);
        tracker.mark_done(&a, epoch_a, 0);
        assert_eq!(tracker.all_committable(), vec![(a.clone(), 1)]);
        tracker.mark_committed(&a, 1);
        assert!(tracker.all_committable().is_empty());
        assert_eq!(tracker.all_progress(), vec![(a.clone(), 1)]);
        assert_eq!(tracker.total_in_flight(), 1);
    }

    /// Offsets with gaps, an order in which they finish, and which of them fail for good.
    fn scenario() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<bool>)> {
        prop::collection::vec(1i64..4, 1..60).prop_flat_map(|steps| {
            let offsets: Vec<i64> = steps
                .iter()
                .scan(100i64, |offset, step| {
                    *offset += step;
                    Some(*offset)
                })
                .collect();
            let len = offsets.len();
            (
                Just(offsets),
                Just((0..len).collect::<Vec<_>>()).prop_shuffle(),
                prop::collection::vec(prop::bool::weighted(0.1), len),
            )
        })
    }

    proptest! {
        #[test]
        fn never_commits_past_an_undone_offset((offsets, order, abandoned) in scenario()) {
            let mut tracker = PartitionOffsets::new();
            for offset in &offsets {
                tracker.hand_out(*offset);
            }
            let mut done = vec![false; offsets.len()];
            let mut last_committed = None;
            for index in order {
                if abandoned[index] {
                    tracker.mark_abandoned(offsets[index]);
                } else {
                    tracker.mark_done(offsets[index]);
                    done[index] = true;
                }
                if let Some(commit) = tracker.committable() {
                    // Every offset below the commit is done.
                    for (offset, is_done) in offsets.iter().zip(&done) {
                        if *offset < commit {
                            prop_assert!(*is_done, "committed {commit} past undone {offset}");
                        }
                    }
                    prop_assert!(last_committed.is_none_or(|last| commit > last));
                    tracker.mark_committed(commit);
                    last_committed = Some(commit);
                }
            }
            // At the end the watermark stands exactly on the first undone offset.
            let first_undone = offsets.iter().zip(&done).find(|(_, d)| !**d).map(|(o, _)| *o);
            let expected = first_undone.unwrap_or(offsets[offsets.len() - 1] + 1);
            prop_assert_eq!(tracker.watermark(), Some(expected));
            prop_assert_eq!(tracker.in_flight(), 0);
        }
    }
}
