//! The byte layout of the shared region. `shm_layout.md` is the source of truth; every size
//! and offset it names is checked here at compile time.
//!
//! Every field that more than one process may touch after creation is an atomic, so there is
//! no data race in any process's view of the mapping; fields written only while the creator
//! holds the file lock (the fixed header part) are plain integers.

use portable_atomic::AtomicU128;
use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicU32, AtomicU64};

/// "FLSHMREG" read as a little-endian u64: the first 8 bytes of every region file.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FLSHMREG");
/// Bumped on any change to this file; a region with another version is refused on attach.
pub const LAYOUT_VERSION: u32 = 3;

pub const HEADER_SIZE: usize = 4096;
pub const SLOT_SIZE: usize = 64;
pub const WORKER_SIZE: usize = 4096;
/// Holding records per worker: distinct slot keys one process can hold at once.
pub const HOLDINGS_PER_WORKER: usize = (WORKER_SIZE - 64) / 8;
/// Bytes of key text kept in a slot for the inspector (the fingerprint is what identifies it).
pub const NAME_BYTES: usize = 24;
/// A key longer than NAME_BYTES keeps its first NAME_HEAD and last NAME_BYTES - NAME_HEAD
/// bytes: LiteLLM's keys differ in a hash in the middle and in their `:requests` / `:tokens`
/// suffix, so the head alone would make every key of a kind look the same.
pub const NAME_HEAD: usize = 12;

pub const MIN_CAPACITY: u32 = 64;
pub const MAX_CAPACITY: u32 = 1 << 26;
pub const MIN_WORKERS: u32 = 4;
pub const MAX_WORKERS: u32 = 4096;

/// The fixed-size header at offset 0.
#[repr(C)]
pub struct Header {
    pub magic: u64,
    pub layout_version: u32,
    pub slot_size: u32,
    pub header_size: u32,
    pub worker_size: u32,
    /// Number of counter slots, a power of two.
    pub capacity: u32,
    /// Number of worker entries.
    pub max_workers: u32,
    /// Bytes of the whole region: header + workers + slots.
    pub total_size: u64,
    /// Linux boot id of the boot that wrote the clock values in this region.
    pub boot_id: [u8; 16],
    pub created_unix_ns: u64,
    /// Longest probe distance any insert has used; lookups stop there.
    pub max_probe: AtomicU32,
    pub _reserved0: u32,
    /// Inserts that found no free slot within the probe limit.
    pub full_events: AtomicU64,
    /// Expired or dead entries taken over by a new key.
    pub reclaimed: AtomicU64,
    /// New keys inserted.
    pub inserts: AtomicU64,
    /// Dead workers whose holdings were given back.
    pub reaped_workers: AtomicU64,
    /// Clock value of the last dead-worker scan (rate-limits scans triggered by refusals).
    pub last_reap_ns: AtomicU64,
    /// Worker registrations since creation.
    pub registrations: AtomicU64,
    pub _reserved: [u8; HEADER_SIZE - 120],
}

/// One counter slot (one cache line).
#[repr(C, align(64))]
pub struct Slot {
    /// 128-bit xxh3 fingerprint of (kind byte, key text).
    pub key_lo: AtomicU64,
    pub key_hi: AtomicU64,
    /// lo 64 bits: a clock value whose meaning depends on the kind (window end, GCRA
    /// theoretical arrival time, or a version for slot counts); hi 64 bits: see `state`.
    pub state: AtomicU128,
    /// kind (u8) | name_len (u8) << 8 | window_ms (u32) << 32.
    pub meta: AtomicU64,
    /// The key text, or its head and tail when longer than NAME_BYTES, for the inspector.
    pub name: [AtomicU64; NAME_BYTES / 8],
}

/// One registered process.
#[repr(C)]
pub struct Worker {
    /// pid (u32) << 32 | status (u32); status is one of the W_* constants. The pid is the
    /// registered process's while W_LIVE, and the reaping process's while W_REAPING, so
    /// taking a reap over from a dead reaper is one CAS of this word.
    pub state: AtomicU64,
    /// Process start time in clock ticks since boot (/proc/PID/stat field 22): tells a
    /// reused pid from the process that registered.
    pub start_ticks: AtomicU64,
    pub registered_ns: AtomicU64,
    pub _reserved: [AtomicU64; 5],
    /// (slot index + 1) << 32 | count held; 0 is an unused record.
    pub holdings: [AtomicU64; HOLDINGS_PER_WORKER],
}

pub const W_FREE: u32 = 0;
pub const W_LIVE: u32 = 1;
pub const W_REAPING: u32 = 2;

/// Slot kinds. The kind is part of the fingerprint, so one key text used as a window and
/// as a slot counter gives two independent entries.
pub const KIND_WINDOW: u8 = 1;
pub const KIND_GCRA: u8 = 2;
pub const KIND_SLOTS: u8 = 3;
/// A stamped counter (`stamped.rs`): LiteLLM's windows, router counters and cooldowns.
pub const KIND_STAMPED: u8 = 4;

pub mod state {
    //! The hi word of a slot's state: status (3 bits) | generation (13 bits) | count (48 bits).
    pub const EMPTY: u64 = 0;
    /// Taken by an inserter that is writing the key.
    pub const CLAIMED: u64 = 1;
    /// Key written; the inserter is checking the chain for a duplicate.
    pub const KEYED: u64 = 2;
    pub const LIVE: u64 = 3;
    /// Expired or abandoned: free for any key, but still part of probe chains.
    pub const DEAD: u64 = 4;

    pub const COUNT_BITS: u32 = 48;
    pub const GEN_BITS: u32 = 13;
    pub const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
    const GEN_MASK: u64 = (1 << GEN_BITS) - 1;

    #[inline]
    pub fn status(hi: u64) -> u64 {
        hi >> (COUNT_BITS + GEN_BITS)
    }
    #[inline]
    pub fn generation(hi: u64) -> u64 {
        (hi >> COUNT_BITS) & GEN_MASK
    }
    #[inline]
    pub fn count(hi: u64) -> u64 {
        hi & COUNT_MAX
    }
    #[inline]
    pub fn pack(status: u64, generation: u64, count: u64) -> u64 {
        (status << (COUNT_BITS + GEN_BITS)) | ((generation & GEN_MASK) << COUNT_BITS) | count.min(COUNT_MAX)
    }
    /// The generation a reused slot gets; never 0, so a reused slot never looks new.
    #[inline]
    pub fn next_generation(generation: u64) -> u64 {
        let next = (generation + 1) & GEN_MASK;
        if next == 0 {
            1
        } else {
            next
        }
    }
}

/// Byte offset of worker `i`.
pub const fn worker_offset(i: usize) -> usize {
    HEADER_SIZE + i * WORKER_SIZE
}

/// Byte offset of slot `i` in a region with `max_workers` worker entries.
pub const fn slot_offset(max_workers: usize, i: usize) -> usize {
    HEADER_SIZE + max_workers * WORKER_SIZE + i * SLOT_SIZE
}

/// Total bytes of a region with these dimensions.
pub const fn region_size(capacity: usize, max_workers: usize) -> usize {
    slot_offset(max_workers, capacity)
}

// Compile-time checks that the structs match shm_layout.md byte for byte.
const _: () = {
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, layout_version) == 8);
    assert!(offset_of!(Header, slot_size) == 12);
    assert!(offset_of!(Header, header_size) == 16);
    assert!(offset_of!(Header, worker_size) == 20);
    assert!(offset_of!(Header, capacity) == 24);
    assert!(offset_of!(Header, max_workers) == 28);
    assert!(offset_of!(Header, total_size) == 32);
    assert!(offset_of!(Header, boot_id) == 40);
    assert!(offset_of!(Header, created_unix_ns) == 56);
    assert!(offset_of!(Header, max_probe) == 64);
    assert!(offset_of!(Header, full_events) == 72);
    assert!(offset_of!(Header, reclaimed) == 80);
    assert!(offset_of!(Header, inserts) == 88);
    assert!(offset_of!(Header, reaped_workers) == 96);
    assert!(offset_of!(Header, last_reap_ns) == 104);
    assert!(offset_of!(Header, registrations) == 112);
    assert!(offset_of!(Header, _reserved) == 120);

    assert!(size_of::<Slot>() == SLOT_SIZE);
    assert!(align_of::<Slot>() == 64);
    assert!(offset_of!(Slot, key_lo) == 0);
    assert!(offset_of!(Slot, key_hi) == 8);
    assert!(offset_of!(Slot, state) == 16);
    assert!(offset_of!(Slot, meta) == 32);
    assert!(offset_of!(Slot, name) == 40);
    assert!(NAME_HEAD > 0 && NAME_HEAD < NAME_BYTES);

    assert!(size_of::<Worker>() == WORKER_SIZE);
    assert!(offset_of!(Worker, state) == 0);
    assert!(offset_of!(Worker, start_ticks) == 8);
    assert!(offset_of!(Worker, registered_ns) == 16);
    assert!(offset_of!(Worker, _reserved) == 24);
    assert!(offset_of!(Worker, holdings) == 64);
    assert!(HOLDINGS_PER_WORKER == 504);
    // Slots start on a cache-line boundary for any worker count.
    assert!(HEADER_SIZE.is_multiple_of(64) && WORKER_SIZE.is_multiple_of(64));
};
