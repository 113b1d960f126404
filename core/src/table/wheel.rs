//! A hashed timing wheel of one-second slots over intrusive lists: O(1) to
//! schedule, move or cancel an expiry, O(1) amortised to expire.

use super::store::{Links, NIL};

/// A power of two; longer timeouts wait for another turn of the wheel
/// (a 900 s connection is never revisited, a 4096+ s one once per turn).
const SLOTS: usize = 4096;

#[derive(Debug)]
pub struct Wheel {
    heads: Vec<u32>,
    /// Last tick whose slot has been expired.
    done: u32,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel { heads: vec![NIL; SLOTS], done: 0 }
    }
}

impl Wheel {
    pub fn slot_of(&self, expires: u32) -> usize {
        expires as usize & (SLOTS - 1)
    }

    pub fn head(&self, slot: usize) -> u32 {
        self.heads[slot]
    }

    pub fn set_head(&mut self, slot: usize, id: u32) {
        self.heads[slot] = id;
    }

    /// Ids due by `now`, visiting only the slots of the ticks since the last
    /// call (every slot once if a whole turn has passed). The caller removes them.
    pub fn advance(&mut self, now: u32, expires: impl Fn(u32) -> u32, links: impl Fn(u32) -> Links) -> Vec<u32> {
        let mut due = Vec::new();
        if now <= self.done {
            return due;
        }
        let span = (now - self.done).min(SLOTS as u32);
        for tick in (now - span + 1)..=now {
            let mut id = self.heads[self.slot_of(tick)];
            while id != NIL {
                if expires(id) <= now {
                    due.push(id);
                }
                id = links(id).next;
            }
        }
        self.done = now;
        due
    }

    pub fn memory_bytes(&self) -> usize {
        self.heads.capacity() * core::mem::size_of::<u32>()
    }
}
