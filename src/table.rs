//! The open-addressed counter table inside the region: lock-free find-or-insert, fixed-window
//! and GCRA counters, all-or-nothing multi-limit hits, and in-place reclaiming of expired
//! entries. Pure Rust over the mapping; it knows nothing of Python.
//!
//! Insertion never makes two live entries for one key, without any lock:
//! 1. an inserter claims a free slot (CAS of its state word to CLAIMED, next generation),
//!    raises the table's max probe distance, writes the key and moves to KEYED (SeqCst);
//! 2. it then scans the key's whole chain for another KEYED or LIVE entry of the same key;
//! 3. it publishes LIVE only if none is found. Of two KEYED duplicates the one nearer the
//!    key's home slot wins: the farther one steps back, or is killed (KEYED -> DEAD) by the
//!    nearer one. Both stores precede both scans in the SeqCst order, so at least one of two
//!    racing inserters sees the other; a LIVE entry always wins.
//!
//! Every update of a slot is a CAS of its 128-bit state, which carries the generation: a
//! process that found a slot before it was reclaimed and reused fails its CAS and looks again.

use crate::layout::{state, Slot, KIND_GCRA, KIND_SLOTS, KIND_STAMPED, KIND_WINDOW, NAME_BYTES, NAME_HEAD};
use crate::region::{Dimensions, Mapping};
use crate::sys::{self, now_ns};
use portable_atomic::AtomicU128;
use std::sync::atomic::{AtomicU64, Ordering::*};

/// The farthest from its home slot a key may be placed. Past this an insert reports a full table.
pub const PROBE_LIMIT: usize = 1024;
/// How long an inserter waits for another one to finish its key before treating it as dead
/// (killed mid-insert) and taking its slot away. Safe either way: a slow inserter whose slot
/// was taken simply starts over.
const SETTLE_WAIT_NS: u64 = 20_000_000;
/// How long a CLAIMED slot whose claimer still looks alive is waited for before it is
/// given up as a tombstone (see `settle`).
const CLAIM_GIVE_UP_NS: u64 = 1_000_000_000;
/// lo of a DEAD slot that must never be reused (a claim given up while its owner might
/// still write to it).
pub(crate) const TOMBSTONE: u64 = 1;
/// A slot-count entry that is at zero and untouched this long may be reclaimed.
pub const SLOTS_IDLE_NS: u64 = 60_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// LiteLLM's fixed window: it starts at the first hit after the previous one ended.
    FixedWindow,
    /// Generic cell rate algorithm: `limit` per `window`, spread evenly, bursts up to `limit`.
    Gcra,
}

impl Algorithm {
    fn kind(self) -> u8 {
        match self {
            Algorithm::FixedWindow => KIND_WINDOW,
            Algorithm::Gcra => KIND_GCRA,
        }
    }
}

/// One limit to check: `cost` units against `limit` per `window_ns`.
#[derive(Debug, Clone)]
pub struct Hit<'a> {
    pub key: &'a [u8],
    pub limit: u64,
    pub window_ns: u64,
    pub cost: u64,
    pub algorithm: Algorithm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub allowed: bool,
    /// Units counted in the current window (GCRA: the equivalent, rounded up).
    pub current: u64,
    pub remaining: u64,
    /// Until the count is back to zero.
    pub reset_in_ns: u64,
    /// When refused: until a retry of the same cost can succeed; 0 when allowed.
    pub retry_after_ns: u64,
    /// No slot could be found or made for the key: `allowed` is the full-table policy's answer.
    pub table_full: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiDecision {
    pub allowed: bool,
    /// One per limit, in order. After a refusal the later ones are read, not counted.
    pub decisions: Vec<Decision>,
    /// The first limit that refused.
    pub denied_index: Option<usize>,
    pub table_full: bool,
}

/// What a full table means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Admit (and count the event): availability over strictness.
    Open,
    /// Refuse (and count the event): never admit what could not be counted.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub idx: usize,
    pub generation: u64,
}

/// Reserved units of one hit, to undo them if a later limit of the same call refuses.
#[derive(Debug, Clone, Copy)]
struct Reservation {
    found: Found,
    /// The state's lo word this hit wrote. The hit is undone only while lo still holds it:
    /// once another hit moved it (or the window ended), undoing could give back units that
    /// others have used, so the units stay counted (a brief under-admission).
    written_lo: u64,
    /// lo after the undo: the same window end, or the GCRA arrival time before this hit.
    undo_lo: u64,
    /// lo after an undo that leaves the count at 0: no window at all (0, reclaimable) for a
    /// fixed window, so a refused call leaves no entry behind that could fill the table.
    empty_lo: u64,
    units: u64,
}

pub struct Table {
    pub(crate) map: Mapping,
    pub(crate) dims: Dimensions,
    mask: usize,
}

#[inline]
pub(crate) fn split(v: u128) -> (u64, u64) {
    (v as u64, (v >> 64) as u64)
}

#[inline]
pub(crate) fn join(lo: u64, hi: u64) -> u128 {
    (hi as u128) << 64 | lo as u128
}

pub(crate) fn fingerprint(kind: u8, key: &[u8]) -> (u64, u64) {
    split(xxhash_rust::xxh3::xxh3_128_with_seed(key, kind as u64))
}

pub(crate) fn pack_meta(kind: u8, name_len: usize, window_ms: u32) -> u64 {
    kind as u64 | (name_len.min(255) as u64) << 8 | (window_ms as u64) << 32
}

pub(crate) fn meta_kind(meta: u64) -> u8 {
    meta as u8
}

pub(crate) fn meta_window_ms(meta: u64) -> u32 {
    (meta >> 32) as u32
}

/// Whether an entry holds nothing worth keeping at `now`, so its slot can be given to any key.
pub(crate) fn reclaimable(kind: u8, lo: u64, hi: u64, now: u64) -> bool {
    match kind {
        // lo is the window end / theoretical arrival time: past it the entry counts nothing.
        KIND_WINDOW | KIND_GCRA => lo <= now,
        // lo is the last-touched time; a held slot is never reclaimed.
        KIND_SLOTS => state::count(hi) == 0 && lo.saturating_add(SLOTS_IDLE_NS) <= now,
        KIND_STAMPED => crate::stamped::stamped_expired(lo, (now / 1_000_000_000) as u32),
        _ => true,
    }
}

impl Table {
    pub fn new(map: Mapping, dims: Dimensions) -> Table {
        Table {
            map,
            dims,
            mask: dims.capacity as usize - 1,
        }
    }

    pub fn dims(&self) -> Dimensions {
        self.dims
    }

    pub fn mapping(&self) -> &Mapping {
        &self.map
    }

    #[inline]
    pub(crate) fn slot(&self, i: usize) -> &Slot {
        self.map.slot(self.dims.max_workers as usize, i)
    }

    fn probe_limit(&self) -> usize {
        PROBE_LIMIT.min(self.dims.capacity as usize)
    }

    #[inline]
    fn key_matches(&self, s: &Slot, fp: (u64, u64)) -> bool {
        s.key_lo.load(Acquire) == fp.0 && s.key_hi.load(Acquire) == fp.1
    }

    /// Finds the live entry of a key without inserting one.
    pub(crate) fn find(&self, kind: u8, key: &[u8]) -> Option<Found> {
        let fp = fingerprint(kind, key);
        let home = fp.0 as usize & self.mask;
        let reach = self.map.header().max_probe.load(Acquire) as usize;
        for d in 0..=reach.min(self.probe_limit() - 1) {
            let i = (home + d) & self.mask;
            let s = self.slot(i);
            let (_, hi) = split(s.state.load(Acquire));
            match state::status(hi) {
                state::EMPTY => return None,
                state::LIVE if self.key_matches(s, fp) => {
                    return Some(Found {
                        idx: i,
                        generation: state::generation(hi),
                    })
                }
                _ => {}
            }
        }
        None
    }

    /// Waits while a slot keeps the status (CLAIMED or KEYED) it has on entry: its inserter
    /// finishing. An inserter presumed dead loses its claim:
    /// - KEYED: its owner only CASes from here on, so after SETTLE_WAIT_NS the claim is killed
    ///   and the slot is free again; an owner that was merely slow starts over.
    /// - CLAIMED: its owner may still make plain stores of its key words, so the slot is freed
    ///   only once the owner's process (lo holds its pid) is gone. If it still looks alive after
    ///   CLAIM_GIVE_UP_NS (a stopped process, a reused pid), the slot becomes a tombstone that is
    ///   never reused: late stores from the owner then land where no key lives.
    fn settle(&self, s: &Slot) {
        let start = now_ns();
        let first = state::status(split(s.state.load(Acquire)).1);
        let mut spins = 0u32;
        loop {
            let st = s.state.load(Acquire);
            let (lo, hi) = split(st);
            if state::status(hi) != first || (first != state::CLAIMED && first != state::KEYED) {
                return;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
                continue;
            }
            let waited = now_ns().saturating_sub(start);
            let dead_lo = match first {
                state::KEYED if waited > SETTLE_WAIT_NS => Some(0),
                state::CLAIMED if waited > SETTLE_WAIT_NS && !sys::process_alive(lo as u32, 0) => Some(0),
                state::CLAIMED if waited > CLAIM_GIVE_UP_NS => Some(TOMBSTONE),
                _ => None,
            };
            if let Some(dead_lo) = dead_lo {
                let dead = join(dead_lo, state::pack(state::DEAD, state::generation(hi), 0));
                let _ = s.state.compare_exchange(st, dead, SeqCst, Acquire);
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Finds the live entry of a key, inserting it if there is none.
    pub(crate) fn find_or_insert(&self, kind: u8, key: &[u8], window_ns: u64) -> Result<Found, TableFull> {
        let fp = fingerprint(kind, key);
        let home = fp.0 as usize & self.mask;
        let limit = self.probe_limit();
        'restart: loop {
            let reach = self.map.header().max_probe.load(Acquire) as usize;
            // Read only if another key's entry must be judged expired: a key found on its
            // probe path needs no clock here (the hit reads it once, in reserve_at).
            let mut now = None;
            // The first slot this key could take: (distance, index, the state seen there).
            let mut free: Option<(usize, usize, u128)> = None;
            let mut d = 0;
            while d < limit {
                let i = (home + d) & self.mask;
                let s = self.slot(i);
                let st = s.state.load(Acquire);
                let (lo, hi) = split(st);
                match state::status(hi) {
                    state::EMPTY => {
                        // The end of every chain through here: the key is not present.
                        if free.is_none() {
                            free = Some((d, i, st));
                        }
                        break;
                    }
                    state::LIVE => {
                        if self.key_matches(s, fp) {
                            return Ok(Found {
                                idx: i,
                                generation: state::generation(hi),
                            });
                        }
                        if free.is_none()
                            && reclaimable(meta_kind(s.meta.load(Acquire)), lo, hi, *now.get_or_insert_with(now_ns))
                        {
                            free = Some((d, i, st));
                        }
                    }
                    state::DEAD if free.is_none() && lo != TOMBSTONE => free = Some((d, i, st)),
                    state::KEYED if self.key_matches(s, fp) => {
                        // Another process is inserting this very key: wait for its outcome.
                        self.settle(s);
                        continue;
                    }
                    _ => {} // CLAIMED, or KEYED for another key: not ours, not free.
                }
                // Past the farthest any key was placed, only a free slot is still of interest.
                if d >= reach && free.is_some() {
                    break;
                }
                d += 1;
            }
            let Some((dist, idx, seen)) = free else {
                self.map.header().full_events.fetch_add(1, Relaxed);
                return Err(TableFull);
            };
            match self.claim(kind, key, fp, home, dist, idx, seen, window_ns) {
                Some(found) => return Ok(found),
                None => continue 'restart,
            }
        }
    }

    /// Steps 1-3 of the insertion protocol at `idx`; None means start over.
    #[allow(clippy::too_many_arguments)]
    fn claim(
        &self,
        kind: u8,
        key: &[u8],
        fp: (u64, u64),
        home: usize,
        dist: usize,
        idx: usize,
        seen: u128,
        window_ns: u64,
    ) -> Option<Found> {
        let s = self.slot(idx);
        let (_, seen_hi) = split(seen);
        let generation = state::next_generation(state::generation(seen_hi));
        // lo names the claiming process, for waiters to tell a dead claimer from a slow one.
        let claimed = join(sys::pid() as u64, state::pack(state::CLAIMED, generation, 0));
        // SeqCst: the claim and the KEYED store below take part in the insertion protocol's
        // store-then-scan argument (module docs).
        if s.state.compare_exchange(seen, claimed, SeqCst, Acquire).is_err() {
            return None;
        }
        if state::status(seen_hi) != state::EMPTY {
            self.map.header().reclaimed.fetch_add(1, Relaxed);
        }
        self.map.header().max_probe.fetch_max(dist as u32, SeqCst);
        s.key_lo.store(fp.0, Relaxed);
        s.key_hi.store(fp.1, Relaxed);
        let window_ms = (window_ns / 1_000_000).min(u32::MAX as u64) as u32;
        s.meta.store(pack_meta(kind, key.len(), window_ms), Relaxed);
        let mut name = [0u8; NAME_BYTES];
        if key.len() <= NAME_BYTES {
            name[..key.len()].copy_from_slice(key);
        } else {
            name[..NAME_HEAD].copy_from_slice(&key[..NAME_HEAD]);
            name[NAME_HEAD..].copy_from_slice(&key[key.len() - (NAME_BYTES - NAME_HEAD)..]);
        }
        for (word, chunk) in s.name.iter().zip(name.chunks_exact(8)) {
            word.store(u64::from_le_bytes(chunk.try_into().unwrap()), Relaxed);
        }
        // Publishes the key words above (the Release half of SeqCst).
        let keyed = join(0, state::pack(state::KEYED, generation, 0));
        if s.state.compare_exchange(claimed, keyed, SeqCst, Acquire).is_err() {
            return None; // Presumed dead by a waiter and killed: start over.
        }

        let abandon = || {
            let dead = join(0, state::pack(state::DEAD, generation, 0));
            let _ = s.state.compare_exchange(keyed, dead, SeqCst, Acquire);
        };
        let reach = self.map.header().max_probe.load(SeqCst) as usize;
        let mut d = 0;
        while d <= reach.min(self.probe_limit() - 1) {
            let j = (home + d) & self.mask;
            if j == idx {
                d += 1;
                continue;
            }
            let other = self.slot(j);
            let st = other.state.load(SeqCst);
            let (_, hi) = split(st);
            match state::status(hi) {
                state::EMPTY => break,
                state::CLAIMED => {
                    // Its key is not written yet; it may be ours.
                    self.settle(other);
                    continue;
                }
                state::LIVE if self.key_matches(other, fp) => {
                    abandon();
                    return Some(Found {
                        idx: j,
                        generation: state::generation(hi),
                    });
                }
                state::KEYED if self.key_matches(other, fp) => {
                    if d < dist {
                        abandon();
                        return None; // The nearer duplicate wins; find it on the next pass.
                    }
                    let dead = join(0, state::pack(state::DEAD, state::generation(hi), 0));
                    if other.state.compare_exchange(st, dead, SeqCst, Acquire).is_err() {
                        continue; // It moved on (published or died): look at it again.
                    }
                }
                _ => {}
            }
            d += 1;
        }
        let live = join(
            if kind == KIND_SLOTS { now_ns() } else { 0 },
            state::pack(state::LIVE, generation, 0),
        );
        if s.state.compare_exchange(keyed, live, SeqCst, Acquire).is_err() {
            return None; // Killed by a nearer duplicate.
        }
        self.map.header().inserts.fetch_add(1, Relaxed);
        Some(Found { idx, generation })
    }

    /// Counts `cost` against one limit. Err only when the table is full.
    pub fn hit(&self, h: &Hit) -> Result<Decision, TableFull> {
        self.reserve(h).map(|(d, _)| d)
    }

    fn reserve(&self, h: &Hit) -> Result<(Decision, Option<Reservation>), TableFull> {
        loop {
            let found = self.find_or_insert(h.algorithm.kind(), h.key, h.window_ns)?;
            if let Some(result) = self.reserve_at(found, h) {
                return Ok(result);
            }
        }
    }

    /// The CAS loop of one hit on a found entry; None if the entry was reclaimed meanwhile.
    fn reserve_at(&self, found: Found, h: &Hit) -> Option<(Decision, Option<Reservation>)> {
        let s = self.slot(found.idx);
        let mut st = s.state.load(Acquire);
        loop {
            let (lo, hi) = split(st);
            if state::status(hi) != state::LIVE || state::generation(hi) != found.generation {
                return None;
            }
            let now = now_ns();
            let (decision, new_lo, new_count, undo_lo) = match h.algorithm {
                Algorithm::FixedWindow => window_step(lo, state::count(hi), now, h),
                Algorithm::Gcra => gcra_step(lo, now, h),
            };
            if !decision.allowed {
                return Some((decision, None));
            }
            let new = join(new_lo, state::pack(state::LIVE, found.generation, new_count));
            match s.state.compare_exchange_weak(st, new, AcqRel, Acquire) {
                Ok(_) => {
                    let r = Reservation {
                        found,
                        written_lo: new_lo,
                        undo_lo,
                        empty_lo: match h.algorithm {
                            Algorithm::FixedWindow => 0,
                            Algorithm::Gcra => undo_lo,
                        },
                        units: h.cost,
                    };
                    return Some((decision, Some(r)));
                }
                Err(actual) => st = actual,
            }
        }
    }

    /// Undoes a reservation, unless its window has already ended (then there is nothing to undo).
    fn unreserve(&self, r: &Reservation) {
        let s = self.slot(r.found.idx);
        let mut st = s.state.load(Acquire);
        loop {
            let (lo, hi) = split(st);
            if state::status(hi) != state::LIVE || state::generation(hi) != r.found.generation {
                return;
            }
            if lo != r.written_lo {
                return;
            }
            let count = state::count(hi).saturating_sub(r.units);
            // Only units of this call are in it when the count goes back to 0: dropping the
            // window then gives back nothing another caller counted.
            let lo = if count == 0 { r.empty_lo } else { r.undo_lo };
            let new = join(lo, state::pack(state::LIVE, r.found.generation, count));
            match s.state.compare_exchange_weak(st, new, AcqRel, Acquire) {
                Ok(_) => return,
                Err(actual) => st = actual,
            }
        }
    }

    /// Reads a key without counting: `current`, `remaining` and the reset as they are, and
    /// `allowed` / `retry_after` as `hit` would answer a hit of cost 1 now (so a key at its
    /// limit, or a limit of 0, reads as refused).
    pub fn peek(&self, h: &Hit) -> Decision {
        let now = now_ns();
        let (lo, count) = match self.find(h.algorithm.kind(), h.key) {
            Some(found) => {
                let (lo, hi) = split(self.slot(found.idx).state.load(Acquire));
                (lo, state::count(hi))
            }
            None => (0, 0),
        };
        let step = |cost: u64| {
            let probe = Hit { cost, ..h.clone() };
            match h.algorithm {
                Algorithm::FixedWindow => window_step(lo, count, now, &probe).0,
                Algorithm::Gcra => gcra_step(lo, now, &probe).0,
            }
        };
        let (read, next) = (step(0), step(1));
        Decision {
            allowed: next.allowed,
            retry_after_ns: next.retry_after_ns,
            ..read
        }
    }

    /// Counts against every limit or none: admits only if all admit, and never leaves any of
    /// them over its limit. Units reserved in earlier limits are given back when a later one
    /// refuses; between the two, other callers may see them (a brief under-admission, never
    /// an over-admission).
    pub fn hit_many(&self, hits: &[Hit], policy: FullPolicy) -> MultiDecision {
        let mut decisions = Vec::with_capacity(hits.len());
        let mut reserved = Vec::with_capacity(hits.len());
        let mut table_full = false;
        for (n, h) in hits.iter().enumerate() {
            match self.reserve(h) {
                Ok((d, r)) => {
                    decisions.push(d);
                    if let Some(r) = r {
                        reserved.push(r);
                    }
                    if !d.allowed {
                        return self.refuse(hits, decisions, &reserved, n, table_full);
                    }
                }
                Err(TableFull) => {
                    table_full = true;
                    let allowed = policy == FullPolicy::Open;
                    decisions.push(Decision {
                        allowed,
                        table_full: true,
                        remaining: 0,
                        ..Decision::default()
                    });
                    if !allowed {
                        return self.refuse(hits, decisions, &reserved, n, true);
                    }
                }
            }
        }
        MultiDecision {
            allowed: true,
            decisions,
            denied_index: None,
            table_full,
        }
    }

    fn refuse(
        &self,
        hits: &[Hit],
        mut decisions: Vec<Decision>,
        reserved: &[Reservation],
        denied: usize,
        table_full: bool,
    ) -> MultiDecision {
        for r in reserved {
            self.unreserve(r);
        }
        // The earlier limits were given back: report them as refused, with their counts now.
        for (d, h) in decisions.iter_mut().zip(hits).take(denied) {
            *d = Decision {
                allowed: false,
                ..self.peek(h)
            };
        }
        for h in &hits[denied + 1..] {
            decisions.push(Decision {
                allowed: false,
                ..self.peek(h)
            });
        }
        MultiDecision {
            allowed: false,
            decisions,
            denied_index: Some(denied),
            table_full,
        }
    }
}

/// Fixed window: the window starts at the first hit after the previous one ended (as
/// LiteLLM's in-memory limiter does). lo is the window's end. Refused hits are not counted.
/// Returns (decision, new lo, new count, lo to restore when the hit is undone).
fn window_step(end: u64, count: u64, now: u64, h: &Hit) -> (Decision, u64, u64, u64) {
    let (end, count) = if end <= now {
        (now.saturating_add(h.window_ns), 0)
    } else {
        (end, count)
    };
    let reset_in_ns = end - now;
    let after = count.saturating_add(h.cost);
    if after > h.limit || after > state::COUNT_MAX {
        let d = Decision {
            allowed: false,
            current: count,
            remaining: h.limit.saturating_sub(count),
            reset_in_ns,
            // A cost above the limit never fits; say so with a full window.
            retry_after_ns: if h.cost > h.limit { h.window_ns } else { reset_in_ns },
            table_full: false,
        };
        return (d, end, count, end);
    }
    let d = Decision {
        allowed: true,
        current: after,
        remaining: h.limit - after,
        reset_in_ns,
        retry_after_ns: 0,
        table_full: false,
    };
    (d, end, after, end)
}

/// GCRA: lo is the theoretical arrival time (TAT). Each unit moves it on by window/limit; a
/// hit is admitted while the TAT stays within one window of now.
fn gcra_step(tat: u64, now: u64, h: &Hit) -> (Decision, u64, u64, u64) {
    let interval = h.window_ns.checked_div(h.limit).map_or(u64::MAX, |i| i.max(1));
    let base = tat.max(now);
    let increment = interval.saturating_mul(h.cost);
    let new_tat = base.saturating_add(increment);
    let units_at = |t: u64| (t - now).div_ceil(interval);
    if h.limit == 0 || new_tat - now > h.window_ns {
        let current = units_at(base);
        let d = Decision {
            allowed: false,
            current,
            remaining: h.limit.saturating_sub(current),
            reset_in_ns: base - now,
            retry_after_ns: if h.cost > h.limit {
                h.window_ns
            } else {
                new_tat.saturating_sub(h.window_ns).saturating_sub(now)
            },
            table_full: false,
        };
        return (d, tat, 0, tat);
    }
    let current = units_at(new_tat);
    let d = Decision {
        allowed: true,
        current,
        remaining: h.limit.saturating_sub(current),
        reset_in_ns: new_tat - now,
        retry_after_ns: 0,
        table_full: false,
    };
    (d, new_tat, 0, base)
}

/// A torn-free read of a slot's state through two 64-bit loads, usable on a read-only
/// mapping (a 128-bit atomic load may be a CAS, which would fault there).
pub(crate) fn read_state_words(s: &Slot) -> (u64, u64) {
    let base = &s.state as *const AtomicU128 as *const AtomicU64;
    // SAFETY: the 16-byte state word is two naturally aligned u64 halves (little-endian: lo
    // first); 64-bit atomic loads of them only read. A pair torn by a concurrent CAS is caught
    // by re-reading hi, which carries the generation and count of every update.
    let (lo_word, hi_word) = unsafe { (&*base, &*base.add(1)) };
    loop {
        let hi = hi_word.load(Acquire);
        let lo = lo_word.load(Acquire);
        if hi_word.load(Acquire) == hi {
            return (lo, hi);
        }
    }
}

/// The key text stored in a slot: the whole key, or for a longer one its head and tail
/// joined by "…" (and true: the middle is missing).
pub(crate) fn read_name(s: &Slot) -> (String, bool) {
    let meta = s.meta.load(Acquire);
    let len = ((meta >> 8) & 0xff) as usize;
    let mut bytes = Vec::with_capacity(NAME_BYTES);
    for w in &s.name {
        bytes.extend_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    if len <= NAME_BYTES {
        bytes.truncate(len);
        return (String::from_utf8_lossy(&bytes).into_owned(), false);
    }
    let head = String::from_utf8_lossy(&bytes[..NAME_HEAD]);
    let tail = String::from_utf8_lossy(&bytes[NAME_HEAD..]);
    (format!("{head}…{tail}"), true)
}

/// A slot's 128-bit key fingerprint as 32 hex digits (high word first).
pub(crate) fn read_fingerprint(s: &Slot) -> String {
    format!("{:016x}{:016x}", s.key_hi.load(Relaxed), s.key_lo.load(Relaxed))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::region::{open_anonymous, Dimensions};

    const MS: u64 = 1_000_000;

    /// A small anonymous table for unit tests.
    pub(crate) fn table() -> Table {
        let dims = Dimensions {
            capacity: 1024,
            max_workers: 8,
        };
        Table::new(open_anonymous(dims).unwrap(), dims)
    }

    fn gcra(key: &[u8], cost: u64) -> Hit<'_> {
        Hit {
            key,
            limit: 10,
            window_ns: 60_000 * MS,
            cost,
            algorithm: Algorithm::Gcra,
        }
    }

    #[test]
    fn an_undo_gives_back_only_what_nobody_has_built_on() {
        let t = table();
        // Nobody touched the limit since: the units come back.
        let (_, r) = t.reserve(&gcra(b"g", 4)).unwrap();
        t.unreserve(&r.unwrap());
        assert_eq!(t.peek(&gcra(b"g", 0)).current, 0);
        // Another hit moved the arrival time on: undoing now could hand out units it used.
        let (_, r) = t.reserve(&gcra(b"g", 4)).unwrap();
        assert!(t.hit(&gcra(b"g", 3)).unwrap().allowed);
        t.unreserve(&r.unwrap());
        assert_eq!(
            t.peek(&gcra(b"g", 0)).current,
            7,
            "kept counted: a brief under-admission"
        );
        assert!(!t.hit(&gcra(b"g", 4)).unwrap().allowed);
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    /// Puts a claim by `pid` in the home slot of `key` (an inserter stopped mid-claim).
    fn stuck_claim(t: &Table, key: &[u8], pid: u32) -> usize {
        let home = fingerprint(KIND_WINDOW, key).0 as usize & t.mask;
        let claimed = join(pid as u64, state::pack(state::CLAIMED, 1, 0));
        t.slot(home).state.store(claimed, SeqCst);
        home
    }

    #[test]
    fn a_claim_whose_process_died_is_freed_for_reuse() {
        let t = table();
        let home = stuck_claim(&t, b"k", dead_pid());
        let w = Hit {
            key: b"k",
            limit: 1,
            window_ns: 60_000 * MS,
            cost: 1,
            algorithm: Algorithm::FixedWindow,
        };
        assert!(t.hit(&w).unwrap().allowed);
        let (lo, hi) = read_state_words(t.slot(home));
        assert_eq!((state::status(hi), lo), (state::DEAD, 0), "free for the next key");
    }

    #[test]
    fn a_claim_whose_process_lives_on_becomes_a_tombstone_never_reused() {
        let t = table();
        // pid 1 never exits: its claim may still write its key, so the slot is never reused.
        let home = stuck_claim(&t, b"k", 1);
        let start = std::time::Instant::now();
        let w = Hit {
            key: b"k",
            limit: 1,
            window_ns: 60_000 * MS,
            cost: 1,
            algorithm: Algorithm::FixedWindow,
        };
        assert!(t.hit(&w).unwrap().allowed);
        assert!(start.elapsed() >= std::time::Duration::from_millis(900));
        let (lo, hi) = read_state_words(t.slot(home));
        assert_eq!((state::status(hi), lo), (state::DEAD, TOMBSTONE));
        // Keys that probe through it skip it; the key counted exactly once still refuses.
        assert!(!t.hit(&w).unwrap().allowed);
        let same_home = (0..)
            .map(|i| format!("other{i}"))
            .filter(|k| fingerprint(KIND_WINDOW, k.as_bytes()).0 as usize & t.mask == home)
            .take(3);
        for key in same_home {
            let h = Hit {
                key: key.as_bytes(),
                ..w.clone()
            };
            assert!(t.hit(&h).unwrap().allowed);
        }
        assert_eq!(read_state_words(t.slot(home)).0, TOMBSTONE);
    }
}
