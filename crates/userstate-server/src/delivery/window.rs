//! The delivery window of one target: the events read and not yet retired, which of them may
//! be sent now, and the checkpoint they allow.
//!
//! Rules (the property test below checks them for any order of completions and failures):
//! - at most `concurrency` units are in flight, a unit being up to `chunk` events sent by one
//!   call of the sink (in position order);
//! - an event is sent only when every earlier event of its user (stream) is done: one user's
//!   events are never in flight in two units, and never overtake each other;
//! - the [`checkpoint`](Window::checkpoint) is the end of the contiguous prefix of events that
//!   are done (delivered or dead-lettered): it never covers an event still to send.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use userstate::RecordedEvent;

/// Where one event stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not in flight: to be sent when its user's earlier events are done.
    Waiting,
    /// In a unit in flight (or waiting for its retry in that unit's slot).
    InFlight,
    /// Delivered or dead-lettered.
    Done,
}

/// One event in the window.
#[derive(Debug)]
struct Entry {
    event: Arc<RecordedEvent>,
    state: State,
    /// Failed attempts so far.
    attempts: u32,
}

/// A set of events sent by one call of the sink, named by their sequence numbers in the
/// window (stable while they are in it).
pub type Unit = Vec<u64>;

/// The events of one target between its checkpoint and what the feed has read.
#[derive(Debug)]
pub struct Window {
    entries: VecDeque<Entry>,
    /// The sequence number of `entries[0]`.
    front: u64,
    /// The position the feed has read up to (filtered events included).
    read: u64,
    /// Units in flight.
    in_flight: usize,
    concurrency: usize,
    chunk: usize,
}

impl Window {
    /// An empty window whose events are all done up to `position`.
    pub fn new(position: u64, concurrency: usize, chunk: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            front: 0,
            read: position,
            in_flight: 0,
            concurrency: concurrency.max(1),
            chunk: chunk.max(1),
        }
    }

    /// Adds the feed's next batch (in position order), read up to `read`.
    pub fn push(&mut self, batch: Vec<RecordedEvent>, read: u64) {
        self.entries.extend(batch.into_iter().map(|event| Entry {
            event: Arc::new(event),
            state: State::Waiting,
            attempts: 0,
        }));
        self.read = self.read.max(read);
    }

    /// Events in the window (in flight, waiting, or done behind an earlier undone one).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position every event up to which is done (or filtered out): what may be saved.
    pub fn checkpoint(&self) -> u64 {
        match self.entries.front() {
            Some(first) => first.event.position - 1,
            None => self.read,
        }
    }

    /// The event of sequence number `seq`.
    pub fn event(&self, seq: u64) -> &Arc<RecordedEvent> {
        &self.entry(seq).event
    }

    /// The events of `unit`, in order.
    pub fn events(&self, unit: &[u64]) -> Vec<Arc<RecordedEvent>> {
        unit.iter().map(|seq| self.event(*seq).clone()).collect()
    }

    fn entry(&self, seq: u64) -> &Entry {
        &self.entries[(seq - self.front) as usize]
    }

    fn entry_mut(&mut self, seq: u64) -> &mut Entry {
        &mut self.entries[(seq - self.front) as usize]
    }

    /// Takes the units that may be sent now (as many as free slots allow), marking their
    /// events in flight. Scans from the front: an event whose user has an earlier event not
    /// done (outside the unit being built) waits.
    pub fn dispatch(&mut self) -> Vec<Unit> {
        let mut units = Vec::new();
        let free = self.concurrency.saturating_sub(self.in_flight);
        if free == 0 {
            return units;
        }
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut unit: Unit = Vec::new();
        let mut unit_users: HashSet<&str> = HashSet::new();
        for (i, entry) in self.entries.iter().enumerate() {
            let user = entry.event.stream.as_str();
            match entry.state {
                State::Done => continue,
                State::InFlight => {
                    blocked.insert(user);
                    continue;
                }
                State::Waiting if blocked.contains(user) => continue,
                State::Waiting => {}
            }
            unit.push(self.front + i as u64);
            unit_users.insert(user);
            if unit.len() == self.chunk {
                blocked.extend(unit_users.drain());
                units.push(std::mem::take(&mut unit));
                if units.len() == free {
                    break;
                }
            }
        }
        if !unit.is_empty() {
            units.push(unit);
        }
        for seq in units.iter().flatten() {
            self.entry_mut(*seq).state = State::InFlight;
        }
        self.in_flight += units.len();
        units
    }

    /// The first `sent` events of `unit` were delivered: they are done. Returns the unit's
    /// remaining events (still in flight until [`retry`](Self::retry) or
    /// [`finish`](Self::finish)).
    pub fn delivered<'u>(&mut self, unit: &'u [u64], sent: usize) -> &'u [u64] {
        let sent = sent.min(unit.len());
        for seq in &unit[..sent] {
            self.entry_mut(*seq).state = State::Done;
        }
        self.retire();
        &unit[sent..]
    }

    /// Counts a failed attempt of the event `seq`; returns the attempts so far.
    pub fn failed(&mut self, seq: u64) -> u32 {
        let entry = self.entry_mut(seq);
        entry.attempts += 1;
        entry.attempts
    }

    /// The event `seq` was dead-lettered: done.
    pub fn dead_lettered(&mut self, seq: u64) {
        self.entry_mut(seq).state = State::Done;
        self.retire();
    }

    /// Keeps the unit's slot for a retry of its first remaining event `rest[0]`; the others
    /// wait again (the dispatch rule keeps them behind it when they are its user's).
    pub fn retry(&mut self, rest: &[u64]) {
        self.requeue(rest.get(1..).unwrap_or_default());
    }

    /// Ends a unit: its events in `rest` were not sent and wait again; frees its slot.
    pub fn finish(&mut self, rest: &[u64]) {
        self.requeue(rest);
        self.in_flight -= 1;
    }

    fn requeue(&mut self, seqs: &[u64]) {
        for seq in seqs {
            let entry = self.entry_mut(*seq);
            if entry.state == State::InFlight {
                entry.state = State::Waiting;
            }
        }
    }

    /// Drops the done events at the front (the checkpoint moves past them).
    fn retire(&mut self) {
        while self.entries.front().is_some_and(|e| e.state == State::Done) {
            self.entries.pop_front();
            self.front += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use userstate::store::EventMetadata;
    use userstate::StreamId;

    fn event(position: u64, user: u8) -> RecordedEvent {
        RecordedEvent {
            event_id: uuid::Uuid::new_v4(),
            stream: StreamId::new(format!("user:i:u{user}")).unwrap(),
            sequence: position,
            position,
            created_at: chrono::Utc::now(),
            event_type: "user.locked".into(),
            revision: 1,
            payload: serde_json::json!({}),
            metadata: EventMetadata::default(),
            hash: Default::default(),
        }
    }

    proptest! {
        /// Whatever the users of the events, the window size, and the order in which units
        /// complete, fail in part or are dead-lettered: no user has two events in flight,
        /// each user's events are delivered in position order, every event is done in the end,
        /// and the checkpoint never covers an event not done.
        #[test]
        fn units_keep_per_user_order_and_the_checkpoint_covers_only_done_events(
            users in proptest::collection::vec(0u8..6, 1..80),
            concurrency in 1usize..8,
            chunk in 1usize..4,
            outcomes in proptest::collection::vec((any::<usize>(), 0usize..4, any::<bool>()), 0..400),
        ) {
            let mut window = Window::new(10, concurrency, chunk);
            let events: Vec<RecordedEvent> =
                users.iter().enumerate().map(|(i, u)| event(11 + i as u64, *u)).collect();
            // Positions 11.. with a gap: 10 + len + 1 .. + 3 were read and filtered out.
            let last = 10 + events.len() as u64;
            // Pushed in two batches, as a feed would.
            let half = events.len() / 2;
            window.push(events[..half].to_vec(), 10 + half as u64);
            window.push(events[half..].to_vec(), last + 3);
            let mut flying: Vec<Unit> = Vec::new();
            let mut done: HashMap<u64, bool> = HashMap::new();
            let mut order: HashMap<String, u64> = HashMap::new();
            let mut outcomes = outcomes.into_iter();
            loop {
                flying.extend(window.dispatch());
                prop_assert!(flying.len() <= concurrency);
                // No user in two units.
                let mut owner: HashMap<&str, usize> = HashMap::new();
                for (u, unit) in flying.iter().enumerate() {
                    prop_assert!(unit.len() <= chunk);
                    for seq in unit {
                        let user = window.event(*seq).stream.as_str();
                        prop_assert_eq!(*owner.entry(user).or_insert(u), u, "one user, two units");
                    }
                }
                if flying.is_empty() {
                    break;
                }
                let (pick, sent, dead) = outcomes.next().unwrap_or((0, 4, false));
                let unit = flying.remove(pick % flying.len());
                let sent = sent.min(unit.len());
                for seq in &unit[..sent] {
                    let e = window.event(*seq);
                    let before = order.insert(e.stream.to_string(), e.position).unwrap_or(0);
                    prop_assert!(before < e.position, "{} delivered {} after {}", e.stream, e.position, before);
                    done.insert(e.position, true);
                }
                let rest = window.delivered(&unit, sent).to_vec();
                match rest.first() {
                    None => window.finish(&rest),
                    // Dead-lettered (told so, or after 3 attempts): done, the unit ends.
                    Some(first) if dead || window.failed(*first) >= 3 => {
                        let e = window.event(*first);
                        let before = order.insert(e.stream.to_string(), e.position).unwrap_or(0);
                        prop_assert!(before < e.position);
                        done.insert(e.position, true);
                        window.dead_lettered(*first);
                        window.finish(&rest[1..]);
                    }
                    // Retried in the unit's slot.
                    Some(first) => {
                        window.retry(&rest);
                        flying.push(vec![*first]);
                    }
                }
                let checkpoint = window.checkpoint();
                prop_assert!((11..=checkpoint).all(|p| done.contains_key(&p) || p > last),
                    "checkpoint {} covers an event not done", checkpoint);
            }
            prop_assert_eq!(done.len(), events.len(), "every event done");
            prop_assert_eq!(window.checkpoint(), last + 3, "all read: the read position");
            prop_assert_eq!(window.len(), 0);
        }
    }
}
