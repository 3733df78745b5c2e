//! Which input offset is safe to commit: a contiguous watermark per partition.
//!
//! Records are handed out in offset order but their deliveries finish in any order. The
//! offset committed for a partition is the first offset that is not done yet (or one past
//! the last handed-out offset when everything is done), so a crash never skips a record
//! whose delivery was not confirmed. A record that will never be delivered by this process
//! (a permanent failure, or a retry abandoned at shutdown) is *abandoned*: it holds the
//! watermark back for good, which stops the partition instead of losing the record.
//!
//! [`PartitionOffsets`] costs O(1) per record: the records of a partition sit in a ring in
//! consumption order, each with a state, and each is named by a [`Ticket`] (its position in
//! that order). Marking a record done flips its state; the ring's head then moves past the
//! done records in front, so the watermark is the offset of the record at the head. Only
//! when the consumer went back to an earlier offset (a seek) is the ring not in offset
//! order; the watermark is then the lowest offset not done, found by a scan, until the
//! ring empties again.

use std::collections::VecDeque;
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

/// Names one handed-out record of a partition: its rank in consumption order.
///
/// Tickets only grow. A partition assigned again continues from the ticket where its
/// previous assignment stopped ([`PartitionOffsets::starting_at`]), so a delivery that
/// finishes late for the old assignment names a ticket the new one never handed out, and
/// is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Its delivery is still being attempted.
    InFlight,
    /// Delivered: the head moves past it.
    Done,
    /// This process will not deliver it: it holds the watermark back for good.
    Abandoned,
}

#[derive(Clone, Debug)]
struct Entry<T> {
    offset: i64,
    state: State,
    tag: T,
}

/// The offsets of one partition: handed out, not yet done, and the watermark.
///
/// Each record carries a `tag` of the caller's (e.g. where it went and when it was read),
/// handed back when it is done.
#[derive(Clone, Debug)]
pub struct PartitionOffsets<T = ()> {
    /// Records handed out, in consumption order, from the first one not done.
    ring: VecDeque<Entry<T>>,
    /// The ticket of `ring[0]`.
    head: u64,
    /// How many records in `ring` are in flight.
    in_flight: usize,
    /// How many records in `ring` are abandoned.
    abandoned: usize,
    /// Whether an offset was handed out below an earlier one while `ring` held records:
    /// `ring` is not in offset order until it empties.
    unordered: bool,
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

impl<T: Copy> Default for PartitionOffsets<T> {
    fn default() -> Self {
        Self::starting_at(Ticket(0))
    }
}

impl<T: Copy> PartitionOffsets<T> {
    /// No offset handed out yet; the first ticket is 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// No offset handed out yet; the first ticket is `first` (see [`Ticket`]).
    pub fn starting_at(first: Ticket) -> Self {
        Self {
            ring: VecDeque::new(),
            head: first.0,
            in_flight: 0,
            abandoned: 0,
            unordered: false,
            start: None,
            next: None,
            committed: None,
            expected_start: None,
        }
    }

    /// Records where the group stood when this assignment began (its committed offset).
    pub fn expect_start(&mut self, offset: i64) {
        self.expected_start = Some(offset);
    }

    /// Records that `offset` was consumed and its record is on its way; returns its
    /// ticket.
    ///
    /// Offsets normally come in increasing order; one handed out again (a redelivery after
    /// a seek) is tracked again and never moves the committed offset backwards.
    ///
    /// Also returns the offsets jumped over, when `offset` lies beyond the next one
    /// expected (one past the last handed out, or the group's committed offset for the
    /// first): the broker never delivered them. In a plain topic that is a loss (retention
    /// deleted them before they were read, or a broker fault); a compacted topic or
    /// transaction markers leave such gaps legitimately.
    pub fn hand_out(&mut self, offset: i64, tag: T) -> (Ticket, Option<Range<i64>>) {
        let skipped = self
            .next
            .or(self.expected_start)
            .filter(|&expected| offset > expected)
            .map(|expected| expected..offset);
        if self.next.is_some_and(|next| offset < next) && !self.ring.is_empty() {
            self.unordered = true;
        }
        let ticket = Ticket(self.next_ticket().0);
        self.ring.push_back(Entry {
            offset,
            state: State::InFlight,
            tag,
        });
        self.in_flight += 1;
        self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
        self.start.get_or_insert(offset);
        self.committed.get_or_insert(offset);
        (ticket, skipped)
    }

    /// The ticket the next record handed out will get.
    pub fn next_ticket(&self) -> Ticket {
        Ticket(self.head + self.ring.len() as u64)
    }

    /// The tag of a record in flight.
    pub fn tag_mut(&mut self, ticket: Ticket) -> Option<&mut T> {
        let entry = self.entry_mut(ticket)?;
        (entry.state == State::InFlight).then_some(&mut entry.tag)
    }

    /// The offset of a record not done yet.
    pub fn offset(&self, ticket: Ticket) -> Option<i64> {
        let index = usize::try_from(ticket.0.checked_sub(self.head)?).ok()?;
        self.ring
            .get(index)
            .filter(|entry| entry.state != State::Done)
            .map(|entry| entry.offset)
    }

    /// Records that the record of `ticket` was delivered; returns its tag. `None` when the
    /// ticket is not pending (unknown, from an earlier assignment, or done already).
    pub fn mark_done(&mut self, ticket: Ticket) -> Option<T> {
        let entry = self.entry_mut(ticket)?;
        let was = entry.state;
        let tag = entry.tag;
        entry.state = State::Done;
        match was {
            State::Done => return None,
            State::InFlight => self.in_flight -= 1,
            State::Abandoned => self.abandoned -= 1,
        }
        while self
            .ring
            .front()
            .is_some_and(|entry| entry.state == State::Done)
        {
            self.ring.pop_front();
            self.head += 1;
        }
        if self.ring.is_empty() {
            self.unordered = false;
        }
        Some(tag)
    }

    /// Records that this process gives up on the record of `ticket`: the watermark will
    /// never pass it. Returns false when the ticket is not pending.
    pub fn mark_abandoned(&mut self, ticket: Ticket) -> bool {
        let Some(entry) = self.entry_mut(ticket) else {
            return false;
        };
        match entry.state {
            State::Done => false,
            State::Abandoned => true,
            State::InFlight => {
                entry.state = State::Abandoned;
                self.in_flight -= 1;
                self.abandoned += 1;
                true
            }
        }
    }

    /// Gives up on every record in flight (see [`PartitionOffsets::mark_abandoned`]).
    pub fn abandon_all(&mut self) {
        for entry in &mut self.ring {
            if entry.state == State::InFlight {
                entry.state = State::Abandoned;
            }
        }
        self.abandoned += self.in_flight;
        self.in_flight = 0;
    }

    /// The next offset to commit: the first offset not done, or one past the highest
    /// offset handed out when all are done. `None` before anything was handed out.
    pub fn watermark(&self) -> Option<i64> {
        if self.unordered {
            // After a seek back only: the lowest offset not done.
            return self
                .ring
                .iter()
                .filter(|entry| entry.state != State::Done)
                .map(|entry| entry.offset)
                .min()
                .or(self.next);
        }
        // The head is never done, and the ring is in offset order.
        self.ring.front().map(|entry| entry.offset).or(self.next)
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
        self.in_flight + self.abandoned
    }

    /// The first abandoned offset, if any: where this partition is stuck.
    pub fn first_abandoned(&self) -> Option<i64> {
        self.ring
            .iter()
            .filter(|entry| entry.state == State::Abandoned)
            .map(|entry| entry.offset)
            .min()
    }

    fn entry_mut(&mut self, ticket: Ticket) -> Option<&mut Entry<T>> {
        let index = usize::try_from(ticket.0.checked_sub(self.head)?).ok()?;
        self.ring.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use proptest::prelude::*;

    /// Hands out `offsets` in order; returns their tickets.
    fn hand_out_all(offsets: &mut PartitionOffsets, handed: &[i64]) -> Vec<Ticket> {
        handed
            .iter()
            .map(|offset| offsets.hand_out(*offset, ()).0)
            .collect()
    }

    #[test]
    fn offsets_jumped_over_are_reported() {
        let mut offsets = PartitionOffsets::<()>::new();
        offsets.expect_start(100);
        assert_eq!(
            offsets.hand_out(100, ()).1,
            None,
            "starts where the group stood"
        );
        assert_eq!(offsets.hand_out(101, ()).1, None);
        assert_eq!(offsets.hand_out(105, ()).1, Some(102..105));
        assert_eq!(offsets.hand_out(103, ()).1, None, "a redelivery is no gap");
        assert_eq!(offsets.hand_out(106, ()).1, None);

        let mut late = PartitionOffsets::<()>::new();
        late.expect_start(100);
        assert_eq!(
            late.hand_out(982, ()).1,
            Some(100..982),
            "the broker started further on"
        );

        let mut unknown = PartitionOffsets::<()>::new();
        assert_eq!(
            unknown.hand_out(7, ()).1,
            None,
            "no committed offset: nothing to compare"
        );
        let mut earlier = PartitionOffsets::<()>::new();
        earlier.expect_start(10);
        assert_eq!(
            earlier.hand_out(4, ()).1,
            None,
            "a reset to earlier offsets loses nothing"
        );
    }

    #[test]
    fn nothing_handed_out_nothing_to_commit() {
        let offsets = PartitionOffsets::<()>::new();
        assert_eq!(offsets.watermark(), None);
        assert_eq!(offsets.committable(), None);
    }

    #[test]
    fn watermark_waits_for_the_first_undone_offset() {
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[10, 11, 12, 13, 14]);
        // Nothing done: the group already stands at 10.
        assert_eq!(offsets.watermark(), Some(10));
        assert_eq!(offsets.committable(), None);

        assert!(offsets.mark_done(t[2]).is_some());
        assert!(offsets.mark_done(t[3]).is_some());
        assert_eq!(offsets.committable(), None, "10 and 11 are not done");

        assert!(offsets.mark_done(t[0]).is_some());
        assert_eq!(offsets.committable(), Some(11));

        assert!(offsets.mark_done(t[1]).is_some());
        assert_eq!(offsets.committable(), Some(14));

        assert!(offsets.mark_done(t[4]).is_some());
        assert_eq!(offsets.committable(), Some(15));
        assert_eq!(offsets.in_flight(), 0);
        assert!(offsets.mark_done(t[4]).is_none(), "done once only");
    }

    #[test]
    fn a_done_record_hands_its_tag_back() {
        let mut offsets = PartitionOffsets::new();
        let (ticket, _) = offsets.hand_out(3, "forward");
        assert_eq!(offsets.offset(ticket), Some(3));
        *offsets.tag_mut(ticket).unwrap() = "retried";
        assert_eq!(offsets.mark_done(ticket), Some("retried"));
        assert_eq!(offsets.offset(ticket), None);
        assert_eq!(offsets.tag_mut(ticket), None);
    }

    #[test]
    fn committed_watermark_is_not_offered_again() {
        let mut offsets = PartitionOffsets::new();
        let (first, _) = offsets.hand_out(0, ());
        offsets.mark_done(first);
        assert_eq!(offsets.committable(), Some(1));
        offsets.mark_committed(1);
        assert_eq!(offsets.committable(), None);
        assert_eq!(offsets.progress(), Some(1), "a final commit sends it again");
        let (second, _) = offsets.hand_out(1, ());
        offsets.mark_done(second);
        assert_eq!(offsets.committable(), Some(2));
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        // Compacted topics and transaction markers leave holes in the offsets.
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[3, 7, 8, 20]);
        for ticket in t.into_iter().rev() {
            offsets.mark_done(ticket);
        }
        assert_eq!(offsets.committable(), Some(21));
    }

    #[test]
    fn abandoned_offset_holds_the_watermark_forever() {
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[0, 1, 2, 3, 4]);
        offsets.mark_done(t[0]);
        assert!(offsets.mark_abandoned(t[1]));
        for ticket in &t[2..] {
            offsets.mark_done(*ticket);
        }
        assert_eq!(offsets.committable(), Some(1));
        assert_eq!(offsets.in_flight(), 0);
        assert_eq!(offsets.pending(), 1);
        assert_eq!(offsets.first_abandoned(), Some(1));
    }

    #[test]
    fn abandoning_all_keeps_what_is_done() {
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[0, 1, 2]);
        offsets.mark_done(t[0]);
        offsets.abandon_all();
        assert_eq!(offsets.in_flight(), 0);
        assert_eq!(offsets.pending(), 2);
        assert_eq!(offsets.progress(), Some(1));
    }

    #[test]
    fn unknown_tickets_are_ignored() {
        let mut offsets = PartitionOffsets::starting_at(Ticket(10));
        let (ticket, _) = offsets.hand_out(5, ());
        assert_eq!(ticket, Ticket(10));
        assert!(offsets.mark_done(Ticket(9)).is_none());
        assert!(!offsets.mark_abandoned(Ticket(11)));
        assert_eq!(offsets.in_flight(), 1);
    }

    #[test]
    fn redelivered_offset_never_moves_the_commit_backwards() {
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[0, 1]);
        offsets.mark_done(t[0]);
        offsets.mark_done(t[1]);
        offsets.mark_committed(2);
        let (again, _) = offsets.hand_out(1, ());
        assert_eq!(offsets.watermark(), Some(1));
        assert_eq!(offsets.committable(), None);
        offsets.mark_done(again);
        assert_eq!(offsets.committable(), None, "2 is already committed");
    }

    #[test]
    fn a_seek_back_holds_the_watermark_at_the_lowest_undone_offset() {
        let mut offsets = PartitionOffsets::new();
        let t = hand_out_all(&mut offsets, &[5, 6, 7, 3]);
        offsets.mark_done(t[0]);
        offsets.mark_done(t[1]);
        assert_eq!(offsets.watermark(), Some(3), "3 is not done");
        offsets.mark_done(t[3]);
        assert_eq!(offsets.watermark(), Some(7));
        offsets.mark_done(t[2]);
        assert_eq!(offsets.watermark(), Some(8));
    }

    #[test]
    fn a_new_assignment_ignores_tickets_of_the_previous_one() {
        let mut old = PartitionOffsets::new();
        let (late, _) = old.hand_out(7, ());
        let mut new = PartitionOffsets::starting_at(old.next_ticket());
        let (current, _) = new.hand_out(7, ());
        assert_ne!(late, current);
        assert!(new.mark_done(late).is_none(), "stale ticket");
        assert_eq!(new.in_flight(), 1);
        assert!(new.mark_done(current).is_some());
        assert_eq!(new.committable(), Some(8));
    }

    /// The obvious implementation, kept as the model: every pending offset in an ordered
    /// map (a lookup and an allocation per record).
    #[derive(Default)]
    struct Model {
        pending: BTreeMap<i64, bool>,
        next: Option<i64>,
        start: Option<i64>,
        committed: Option<i64>,
    }

    impl Model {
        fn hand_out(&mut self, offset: i64) {
            self.pending.insert(offset, false);
            self.next = Some(self.next.map_or(offset + 1, |next| next.max(offset + 1)));
            self.start.get_or_insert(offset);
            self.committed.get_or_insert(offset);
        }
        fn done(&mut self, offset: i64) {
            self.pending.remove(&offset);
        }
        fn abandon(&mut self, offset: i64) {
            self.pending.insert(offset, true);
        }
        fn watermark(&self) -> Option<i64> {
            self.pending.keys().next().copied().or(self.next)
        }
        fn committable(&self) -> Option<i64> {
            let watermark = self.watermark()?;
            (self.committed.is_none_or(|committed| watermark > committed)).then_some(watermark)
        }
        fn progress(&self) -> Option<i64> {
            let watermark = self.watermark()?;
            (self.start.is_none_or(|start| watermark > start)).then_some(watermark)
        }
        fn in_flight(&self) -> usize {
            self.pending
                .values()
                .filter(|abandoned| !**abandoned)
                .count()
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// Hands out the next offset of the sequence.
        HandOut,
        /// Finishes the n-th record still pending (modulo how many there are).
        Done(usize),
        /// Gives up on the n-th record still pending.
        Abandon(usize),
        /// Commits the committable watermark.
        Commit,
    }

    /// Distinct offsets in the order they are consumed (with gaps, and with seeks back
    /// when `ordered` is false), and operations interleaving hand-outs and deliveries.
    fn scenario(ordered: bool) -> impl Strategy<Value = (Vec<i64>, Vec<Op>)> {
        let offsets = prop::collection::btree_set(0i64..400, 1..80)
            .prop_map(|set| set.into_iter().collect::<Vec<_>>());
        let offsets = if ordered {
            offsets.boxed()
        } else {
            offsets.prop_shuffle().boxed()
        };
        let op = prop_oneof![
            4 => Just(Op::HandOut),
            4 => any::<usize>().prop_map(Op::Done),
            1 => any::<usize>().prop_map(Op::Abandon),
            1 => Just(Op::Commit),
        ];
        (offsets, prop::collection::vec(op, 1..300))
    }

    fn run_against_the_model(offsets: &[i64], ops: &[Op]) -> Result<(), TestCaseError> {
        let mut ring = PartitionOffsets::new();
        let mut model = Model::default();
        let mut next = offsets.iter();
        // (ticket, offset) of records not done, in hand-out order.
        let mut pending: Vec<(Ticket, i64)> = Vec::new();
        let mut last_committed = None;
        // Then everything is handed out, and everything finishes.
        let everything = ops
            .iter()
            .chain(std::iter::repeat_n(&Op::HandOut, offsets.len()))
            .chain(std::iter::repeat_n(&Op::Done(0), offsets.len()));
        for op in everything {
            match op {
                Op::HandOut => {
                    let Some(offset) = next.next() else { continue };
                    let (ticket, _) = ring.hand_out(*offset, ());
                    model.hand_out(*offset);
                    pending.push((ticket, *offset));
                }
                Op::Done(n) if !pending.is_empty() => {
                    let (ticket, offset) = pending.remove(n % pending.len());
                    prop_assert!(ring.mark_done(ticket).is_some());
                    model.done(offset);
                }
                Op::Abandon(n) if !pending.is_empty() => {
                    let (ticket, offset) = pending[n % pending.len()];
                    prop_assert!(ring.mark_abandoned(ticket));
                    model.abandon(offset);
                }
                Op::Commit => {
                    if let Some(commit) = ring.committable() {
                        prop_assert!(last_committed.is_none_or(|last| commit > last));
                        ring.mark_committed(commit);
                        model.committed = Some(model.committed.map_or(commit, |c| c.max(commit)));
                        last_committed = Some(commit);
                    }
                }
                Op::Done(_) | Op::Abandon(_) => {}
            }
            prop_assert_eq!(ring.watermark(), model.watermark());
            prop_assert_eq!(ring.committable(), model.committable());
            prop_assert_eq!(ring.progress(), model.progress());
            prop_assert_eq!(ring.in_flight(), model.in_flight());
            prop_assert_eq!(ring.pending(), model.pending.len());
        }
        prop_assert_eq!(ring.pending(), 0);
        Ok(())
    }

    proptest! {
        #[test]
        fn the_watermark_is_the_models_in_any_delivery_order((offsets, ops) in scenario(true)) {
            run_against_the_model(&offsets, &ops)?;
        }

        #[test]
        fn the_watermark_is_the_models_after_seeks_back((offsets, ops) in scenario(false)) {
            run_against_the_model(&offsets, &ops)?;
        }
    }
}
