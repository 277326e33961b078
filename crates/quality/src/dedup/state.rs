//! Dedup's state: the first version of every key seen within the window, in two generations.
//!
//! New keys enter the young generation. Once the state holds twice the keys that were live at
//! the last rotation, it rotates: the old generation's keys the watermark has not passed move
//! into the young one (almost none once a generation spans a window), the old one is emptied
//! (its table's control bytes cleared, its vectors truncated: no per-entry work) and the two
//! swap. A rotation reads the old generation's event times in the order they were added, a
//! sequential pass with a predictable branch. The one map this replaces was swept with
//! `retain`: every entry visited twice per insert, in hash order, on a branch mispredicted
//! half the time (9 % of `finlake dq`'s CPU on a 10M-row day).
//!
//! A generation's table holds only the key's low half (the hash it is probed by) and where
//! its entry is: 16 bytes a key, where the map held 48, so the table a probe or an insert
//! touches is a third the size and stays nearer the core. Entries and event times are appended
//! in order; a probe reads an entry only when the low half matches (a repeat).

use super::Key;

/// The state is not rotated below this many keys.
const ROTATE_AT_LEAST: usize = 4096;

/// A key's first version but for its event time, which is kept apart (a rotation reads only
/// the times): 40 bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry {
    pub key: Key,
    /// Its payload's hash (see [`super::payload_hashes`]).
    pub payload: u64,
    /// Its `_offset` and `_partition` (when [`super::HAS_OFFSET`] and
    /// [`super::HAS_PARTITION`] say the batch had them).
    pub offset: i64,
    pub partition: i32,
    /// [`super::REPEATED`], [`super::HAS_OFFSET`], [`super::HAS_PARTITION`].
    pub flags: u8,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 40);
const _: () = assert!(std::mem::size_of::<Slot>() == 16);

/// A key in a generation's table: its fingerprint's low half and its entry's place.
#[derive(Debug, Clone, Copy)]
struct Slot {
    lo: u64,
    at: usize,
}

#[derive(Debug, Default)]
struct Generation {
    index: hashbrown::HashTable<Slot>,
    times: Vec<i64>,
    entries: Vec<Entry>,
}

impl Generation {
    fn find(&self, key: Key) -> Option<usize> {
        self.index
            .find(key.1, |s| {
                s.lo == key.1 && self.entries.get(s.at).is_some_and(|e| e.key == key)
            })
            .map(|s| s.at)
    }

    /// Adds `key`, which the generation does not hold.
    fn push(&mut self, t: i64, entry: Entry) {
        let at = self.entries.len();
        self.times.push(t);
        self.entries.push(entry);
        self.index.insert_unique(
            entry.key.1,
            Slot {
                lo: entry.key.1,
                at,
            },
            |s| s.lo,
        );
    }

    fn clear(&mut self) {
        self.index.clear();
        self.times.clear();
        self.entries.clear();
    }
}

/// Where a key's version is.
#[derive(Debug, Clone, Copy)]
pub(super) enum Found {
    Young(usize),
    Old(usize),
}

/// The two generations.
#[derive(Debug, Default)]
pub(super) struct State {
    young: Generation,
    old: Generation,
    /// Keys live after the last rotation: the next comes when the state holds twice as many
    /// (and at least [`ROTATE_AT_LEAST`]), so it holds at most twice one window's keys.
    live: usize,
}

impl State {
    /// Keys held, live or not yet rotated out.
    pub fn len(&self) -> usize {
        self.young.entries.len() + self.old.entries.len()
    }

    /// Where `key`'s version is: the young generation's shadows the old one's.
    pub fn find(&self, key: Key) -> Option<Found> {
        match self.young.find(key) {
            Some(at) => Some(Found::Young(at)),
            None => self.old.find(key).map(Found::Old),
        }
    }

    /// The event time of the version `found` names.
    pub fn time(&self, found: Found) -> Option<i64> {
        match found {
            Found::Young(at) => self.young.times.get(at).copied(),
            Found::Old(at) => self.old.times.get(at).copied(),
        }
    }

    /// The entry `found` names.
    pub fn get_mut(&mut self, found: Found) -> Option<&mut Entry> {
        match found {
            Found::Young(at) => self.young.entries.get_mut(at),
            Found::Old(at) => self.old.entries.get_mut(at),
        }
    }

    /// Makes `entry` the key's version: in place of the young generation's (`found` there), or
    /// added to the young generation (the key absent, or its old version shadowed from now on).
    pub fn put(&mut self, found: Option<Found>, t: i64, entry: Entry) {
        if let Some(Found::Young(at)) = found {
            if let (Some(time), Some(e)) =
                (self.young.times.get_mut(at), self.young.entries.get_mut(at))
            {
                *time = t;
                *e = entry;
                return;
            }
        }
        self.young.push(t, entry);
    }

    /// Whether the state has doubled since the last rotation.
    pub fn due(&self) -> bool {
        self.len() >= (2 * self.live).max(ROTATE_AT_LEAST)
    }

    /// Rotates the generations, keeping the old one's versions at or after `watermark` (all
    /// of them without one).
    pub fn rotate(&mut self, watermark: Option<i64>) {
        let kept = |t: i64| watermark.is_none_or(|w| t >= w);
        let State { young, old, live } = self;
        for (&t, e) in old.times.iter().zip(&old.entries) {
            if kept(t) && young.find(e.key).is_none() {
                young.push(t, *e);
            }
        }
        old.clear();
        std::mem::swap(young, old);
        *live = old.times.iter().filter(|&&t| kept(t)).count();
    }
}
