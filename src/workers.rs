//! Registered processes and concurrency slots.
//!
//! A slot count lives in a table entry (KIND_SLOTS, count = slots held host-wide). Each
//! process also records what it holds in its own worker entry. The order of the two writes
//! keeps the records at or above the truth: acquire raises the holding record before the
//! shared count, release lowers the shared count before the record. When a process dies, its
//! entry is marked REAPING and every key it held is audited: the shared count is set to the
//! sum of the live processes' records (checked twice and committed with a CAS, so a
//! concurrent acquire or release makes it retry). An error can only leave a count too high
//! for a moment, never too low: no over-admission.

use crate::layout::{state, Worker, KIND_SLOTS, W_FREE, W_LIVE, W_REAPING};
use crate::sys;
use crate::table::{read_state_words, Found, Table, TableFull};
use std::sync::atomic::{AtomicBool, Ordering::*};

const COUNT_MASK: u64 = 0xffff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// No table entry could be made for the key.
    TableFull,
    /// This process already holds as many distinct keys as its worker entry has records.
    HoldingsFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotHeld;

/// A worker entry's state word: pid (32 bits) | registration sequence (16) | status (16).
/// The sequence changes at every registration, so a reaper that saw LIVE(pid) cannot reap a
/// new registration of the same entry by a process that reused the pid.
#[inline]
fn pack_worker(pid: u32, seq: u64, status: u32) -> u64 {
    (pid as u64) << 32 | (seq & 0xffff) << 16 | status as u64
}

#[inline]
pub(crate) fn worker_pid(st: u64) -> u32 {
    (st >> 32) as u32
}

#[inline]
fn worker_seq(st: u64) -> u64 {
    (st >> 16) & 0xffff
}

#[inline]
pub(crate) fn worker_status(st: u64) -> u32 {
    (st & 0xffff) as u32
}

/// Whether a thread of this process is reaping. Reaps within one process take turns, so two
/// threads never finish one entry at once; a forked child starts with it clear.
static REAPING_HERE: AtomicBool = AtomicBool::new(false);

/// Called in a forked child: a reap that another thread of the parent was running at the
/// fork does not exist in the child.
pub(crate) fn reset_after_fork() {
    REAPING_HERE.store(false, Relaxed);
}

/// Holds REAPING_HERE for its lifetime.
struct ReapTurn;

impl ReapTurn {
    fn try_take() -> Option<ReapTurn> {
        REAPING_HERE
            .compare_exchange(false, true, Acquire, Relaxed)
            .ok()
            .map(|_| ReapTurn)
    }

    fn take() -> ReapTurn {
        loop {
            if let Some(turn) = ReapTurn::try_take() {
                return turn;
            }
            std::thread::yield_now();
        }
    }
}

impl Drop for ReapTurn {
    fn drop(&mut self) {
        REAPING_HERE.store(false, Release);
    }
}

#[inline]
fn holding_tag(idx: usize) -> u64 {
    (idx as u64 + 1) << 32
}

/// (slot index, count) of a holding record, if it is in use and names a slot of a table of
/// `capacity` slots (a damaged record must never index outside the mapping).
#[inline]
pub(crate) fn holding_parts(v: u64, capacity: u32) -> Option<(usize, u64)> {
    let tag = v >> 32;
    if tag == 0 || tag > capacity as u64 {
        None
    } else {
        Some((tag as usize - 1, v & COUNT_MASK))
    }
}

impl Table {
    pub(crate) fn worker(&self, w: usize) -> &Worker {
        self.map.worker(w)
    }

    /// Takes a free worker entry for this process. Dead workers are reaped first.
    pub fn register(&self) -> Option<usize> {
        self.reap_dead();
        let pid = sys::pid();
        for w in 0..self.dims.max_workers as usize {
            let entry = self.worker(w);
            let st = entry.state.load(Acquire);
            if worker_status(st) != W_FREE {
                continue;
            }
            if entry
                .state
                .compare_exchange(st, pack_worker(pid, worker_seq(st) + 1, W_LIVE), AcqRel, Acquire)
                .is_ok()
            {
                entry.start_ticks.store(sys::start_ticks(pid), Release);
                entry.registered_ns.store(sys::now_ns(), Release);
                self.map.header().registrations.fetch_add(1, Relaxed);
                return Some(w);
            }
        }
        None
    }

    /// Gives back everything worker `w` holds and frees its entry (a clean exit). If an audit
    /// cannot finish, the entry stays REAPING under this pid and a later scan completes it.
    pub fn deregister(&self, w: usize) {
        let _turn = ReapTurn::take();
        let entry = self.worker(w);
        let st = entry.state.load(Acquire);
        if worker_status(st) == W_LIVE && worker_pid(st) == sys::pid() {
            let reaping = pack_worker(sys::pid(), worker_seq(st), W_REAPING);
            if entry.state.compare_exchange(st, reaping, AcqRel, Acquire).is_ok() {
                self.finish_reap(w, reaping);
            }
        }
    }

    /// Finds workers whose process is gone and gives back their slots. Returns how many
    /// entries were freed. Skipped (0) while another thread of this process is reaping.
    pub fn reap_dead(&self) -> usize {
        let Some(_turn) = ReapTurn::try_take() else {
            return 0;
        };
        let me = sys::pid();
        self.map.header().last_reap_ns.store(sys::now_ns(), Relaxed);
        let mut reaped = 0;
        for w in 0..self.dims.max_workers as usize {
            let entry = self.worker(w);
            let st = entry.state.load(Acquire);
            let pid = worker_pid(st);
            let reaping = pack_worker(me, worker_seq(st), W_REAPING);
            let ours = match worker_status(st) {
                W_LIVE if !sys::process_alive(pid, entry.start_ticks.load(Acquire)) => {
                    entry.state.compare_exchange(st, reaping, AcqRel, Acquire).is_ok()
                }
                // Our own reap that an audit could not finish: try again.
                W_REAPING if pid == me => true,
                // A reaper that died mid-way: take its job over.
                W_REAPING if !sys::process_alive(pid, 0) => {
                    entry.state.compare_exchange(st, reaping, AcqRel, Acquire).is_ok()
                }
                W_FREE | W_LIVE | W_REAPING => false,
                // A status no version writes: a damaged entry. Reap it like a dead worker.
                _ => entry.state.compare_exchange(st, reaping, AcqRel, Acquire).is_ok(),
            };
            if ours && self.finish_reap(w, reaping) {
                reaped += 1;
            }
        }
        if reaped > 0 {
            self.map.header().reaped_workers.fetch_add(reaped as u64, Relaxed);
        }
        reaped
    }

    /// Reaps only if no scan ran in the last `interval_ns` (used when a slot is refused, so a
    /// dead holder blocks nobody for longer than that).
    pub fn reap_if_due(&self, interval_ns: u64) -> usize {
        let header = self.map.header();
        let last = header.last_reap_ns.load(Relaxed);
        let now = sys::now_ns();
        // A last scan in the future (a damaged value) counts as overdue, not as recent.
        if last <= now && now - last < interval_ns {
            return 0;
        }
        if header
            .last_reap_ns
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            return 0; // Another process is scanning right now.
        }
        self.reap_dead()
    }

    /// Audits every key worker `w` (REAPING under this process) recorded, then frees the
    /// entry. False, with the entry and its records left as they are, if an audit could not
    /// finish: its records stay out of every sum meanwhile, so counts can only be too high.
    fn finish_reap(&self, w: usize, reaping: u64) -> bool {
        let entry = self.worker(w);
        let mut complete = true;
        for h in entry.holdings.iter() {
            if let Some((idx, _)) = holding_parts(h.load(Acquire), self.dims.capacity) {
                complete &= self.audit(idx);
            }
        }
        if !complete || entry.state.load(Acquire) != reaping {
            return false;
        }
        for h in entry.holdings.iter() {
            h.store(0, Relaxed);
        }
        entry.start_ticks.store(0, Relaxed);
        // Release: the cleared records are visible before the entry can be taken again.
        let free = pack_worker(0, worker_seq(reaping), W_FREE);
        entry.state.compare_exchange(reaping, free, Release, Relaxed).is_ok()
    }

    /// Sum of the LIVE workers' holding records for slot `idx`.
    fn live_holdings(&self, idx: usize) -> u64 {
        let tag = holding_tag(idx);
        let mut total = 0;
        for w in 0..self.dims.max_workers as usize {
            let entry = self.worker(w);
            if worker_status(entry.state.load(Acquire)) != W_LIVE {
                continue;
            }
            for h in entry.holdings.iter() {
                let v = h.load(Acquire);
                if v & !COUNT_MASK == tag {
                    total += v & COUNT_MASK;
                }
            }
        }
        total
    }

    /// Sets a slot entry's count to what the live workers hold (module docs). False if
    /// concurrent changes kept it from committing.
    fn audit(&self, idx: usize) -> bool {
        let s = self.slot(idx);
        for attempt in 0..1000 {
            let st = s.state.load(Acquire);
            let (lo, hi) = (st as u64, (st >> 64) as u64);
            if state::status(hi) != state::LIVE || crate::table::meta_kind(s.meta.load(Acquire)) != KIND_SLOTS {
                return true; // Reclaimed: nothing is held there.
            }
            // Every acquire and release moves lo on, so this CAS fails if any count changed
            // after `st` was read; records read after it are at least each worker's share.
            let held = self.live_holdings(idx);
            let lo = lo.max(sys::now_ns()).saturating_add(1);
            let new = (state::pack(state::LIVE, state::generation(hi), held) as u128) << 64 | lo as u128;
            if s.state.compare_exchange(st, new, AcqRel, Acquire).is_ok() {
                return true;
            }
            if attempt % 16 == 15 {
                std::thread::yield_now();
            }
        }
        false
    }

    /// Raises worker `w`'s record for slot `idx` by one; false when it has no free record.
    fn hold(&self, w: usize, idx: usize) -> bool {
        let tag = holding_tag(idx);
        let records = &self.worker(w).holdings;
        for h in records.iter() {
            let mut v = h.load(Acquire);
            while v & !COUNT_MASK == tag {
                match h.compare_exchange_weak(v, v + 1, AcqRel, Acquire) {
                    Ok(_) => return true,
                    Err(actual) => v = actual,
                }
            }
        }
        for h in records.iter() {
            let v = h.load(Acquire);
            if v & COUNT_MASK == 0 && h.compare_exchange(v, tag | 1, AcqRel, Acquire).is_ok() {
                return true;
            }
        }
        false
    }

    /// Lowers worker `w`'s record for slot `idx` by one; false when it holds none.
    fn unhold(&self, w: usize, idx: usize) -> bool {
        let tag = holding_tag(idx);
        for h in self.worker(w).holdings.iter() {
            let mut v = h.load(Acquire);
            while v & !COUNT_MASK == tag && v & COUNT_MASK > 0 {
                match h.compare_exchange_weak(v, v - 1, AcqRel, Acquire) {
                    Ok(_) => return true,
                    Err(actual) => v = actual,
                }
            }
        }
        false
    }

    fn holds(&self, w: usize, idx: usize) -> bool {
        let tag = holding_tag(idx);
        self.worker(w).holdings.iter().any(|h| {
            let v = h.load(Acquire);
            v & !COUNT_MASK == tag && v & COUNT_MASK > 0
        })
    }

    /// Takes one of `max_slots` slots of `key` for worker `w`. Ok(false): all are taken.
    pub fn acquire(&self, w: usize, key: &[u8], max_slots: u64) -> Result<bool, SlotError> {
        'find: loop {
            let Found { idx, generation } = self
                .find_or_insert(KIND_SLOTS, key, 0)
                .map_err(|TableFull| SlotError::TableFull)?;
            if !self.hold(w, idx) {
                return Err(SlotError::HoldingsFull);
            }
            let s = self.slot(idx);
            let mut st = s.state.load(Acquire);
            loop {
                let (lo, hi) = (st as u64, (st >> 64) as u64);
                if state::status(hi) != state::LIVE || state::generation(hi) != generation {
                    self.unhold(w, idx);
                    continue 'find;
                }
                let count = state::count(hi);
                if count >= max_slots {
                    self.unhold(w, idx);
                    return Ok(false);
                }
                // lo is a version that every change moves forward (the audit's CAS relies on it)
                // and the last-touched time that decides when an idle entry may be reclaimed.
                let lo = lo.max(sys::now_ns()).saturating_add(1);
                let new = (state::pack(state::LIVE, generation, count + 1) as u128) << 64 | lo as u128;
                match s.state.compare_exchange_weak(st, new, AcqRel, Acquire) {
                    Ok(_) => return Ok(true),
                    Err(actual) => st = actual,
                }
            }
        }
    }

    /// Gives back one slot of `key` held by worker `w`.
    pub fn release(&self, w: usize, key: &[u8]) -> Result<(), NotHeld> {
        let Found { idx, generation } = self.find(KIND_SLOTS, key).ok_or(NotHeld)?;
        if !self.holds(w, idx) {
            return Err(NotHeld);
        }
        let s = self.slot(idx);
        let mut st = s.state.load(Acquire);
        loop {
            let (lo, hi) = (st as u64, (st >> 64) as u64);
            if state::status(hi) != state::LIVE || state::generation(hi) != generation {
                break;
            }
            let lo = lo.max(sys::now_ns()).saturating_add(1);
            let count = state::count(hi).saturating_sub(1);
            let new = (state::pack(state::LIVE, generation, count) as u128) << 64 | lo as u128;
            match s.state.compare_exchange_weak(st, new, AcqRel, Acquire) {
                Ok(_) => break,
                Err(actual) => st = actual,
            }
        }
        self.unhold(w, idx);
        Ok(())
    }

    /// Slots of `key` held host-wide.
    pub fn slots_in_use(&self, key: &[u8]) -> u64 {
        self.find(KIND_SLOTS, key)
            .map(|f| state::count(read_state_words(self.slot(f.idx)).1))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::table;

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn a_reap_left_by_a_dead_reaper_is_taken_over_and_a_live_reapers_is_not() {
        let t = table();
        let w = t.register().unwrap();
        assert!(t.acquire(w, b"k", 5).unwrap());
        let entry = t.worker(w);
        let seq = worker_seq(entry.state.load(SeqCst));
        // A live reaper (pid 1 always runs) owns the reap: nobody else touches it.
        entry.state.store(pack_worker(1, seq, W_REAPING), SeqCst);
        assert_eq!(t.reap_dead(), 0);
        assert_eq!(entry.state.load(SeqCst), pack_worker(1, seq, W_REAPING));
        // Its reaper died: the next scan finishes the job.
        entry.state.store(pack_worker(dead_pid(), seq, W_REAPING), SeqCst);
        assert_eq!(t.reap_dead(), 1);
        assert_eq!(worker_status(entry.state.load(SeqCst)), W_FREE);
        assert_eq!(t.slots_in_use(b"k"), 0);
    }

    #[test]
    fn a_dead_workers_slots_are_audited_away_and_live_ones_kept() {
        let t = table();
        let live = t.register().unwrap();
        let dead = t.register().unwrap();
        assert!(t.acquire(live, b"k", 5).unwrap());
        assert!(t.acquire(dead, b"k", 5).unwrap());
        assert!(t.acquire(dead, b"k", 5).unwrap());
        let seq = worker_seq(t.worker(dead).state.load(SeqCst));
        t.worker(dead).state.store(pack_worker(dead_pid(), seq, W_LIVE), SeqCst);
        assert_eq!(t.slots_in_use(b"k"), 3);
        assert_eq!(t.reap_dead(), 1);
        assert_eq!(t.slots_in_use(b"k"), 1);
        t.release(live, b"k").unwrap();
        assert_eq!(t.slots_in_use(b"k"), 0);
    }

    #[test]
    fn every_registration_of_an_entry_has_a_new_sequence() {
        // A reaper that saw LIVE(pid, seq) must not match a later registration by a process
        // that reused the pid: the sequence differs.
        let t = table();
        let w = t.register().unwrap();
        let first = t.worker(w).state.load(SeqCst);
        t.deregister(w);
        assert_eq!(t.register(), Some(w));
        let second = t.worker(w).state.load(SeqCst);
        assert_eq!(worker_pid(first), worker_pid(second));
        assert_ne!(first, second);
        assert_eq!(worker_seq(second), worker_seq(first) + 1);
    }
}
