//! A hashed timing wheel of one-second buckets holding slot ids, scheduled
//! lazily: refreshing a connection only moves its expiry later in the slot
//! itself; the wheel is touched when the old bucket comes due (and the entry
//! is then re-filed at its real expiry) or when an update brings expiry
//! forward. So a refresh costs no extra memory access, and expiring is O(1)
//! amortised. References left behind by such moves are recognised and dropped
//! because the slot's `scheduled` tick no longer names their bucket.

/// A power of two; longer timeouts wait for another turn of the wheel.
pub const SLOTS: u32 = 4096;

#[derive(Debug)]
pub struct Wheel {
    buckets: Vec<Vec<u32>>,
    /// Last tick whose bucket has been processed.
    done: u32,
}

impl Default for Wheel {
    fn default() -> Self {
        Wheel { buckets: vec![Vec::new(); SLOTS as usize], done: 0 }
    }
}

impl Wheel {
    pub fn bucket_of(tick: u32) -> usize {
        (tick & (SLOTS - 1)) as usize
    }

    /// File `id` at `at`, or at the next unprocessed tick if `at` has passed;
    /// returns the tick used.
    pub fn schedule(&mut self, id: u32, at: u32) -> u32 {
        let at = at.max(self.done.saturating_add(1));
        self.buckets[Self::bucket_of(at)].push(id);
        at
    }

    /// Ticks to process to reach `now`: each bucket at most once.
    pub fn due_ticks(&self, now: u32) -> core::ops::RangeInclusive<u32> {
        let span = now.saturating_sub(self.done).min(SLOTS);
        (now - span + 1)..=now
    }

    pub fn take(&mut self, tick: u32) -> Vec<u32> {
        core::mem::take(&mut self.buckets[Self::bucket_of(tick)])
    }

    /// Hand back a processed bucket's allocation if nothing was filed meanwhile.
    pub fn give_back(&mut self, tick: u32, mut refs: Vec<u32>) {
        let bucket = &mut self.buckets[Self::bucket_of(tick)];
        if bucket.is_empty() {
            refs.clear();
            *bucket = refs;
        }
    }

    pub fn finish(&mut self, now: u32) {
        self.done = self.done.max(now);
    }

    pub fn memory_bytes(&self) -> usize {
        self.buckets.iter().map(|b| b.capacity() * core::mem::size_of::<u32>()).sum::<usize>()
            + self.buckets.capacity() * core::mem::size_of::<Vec<u32>>()
    }
}
