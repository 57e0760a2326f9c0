//! A region file shrunk under a running process (`truncate`, `: > file`) makes the kernel
//! send SIGBUS on the next access past the new end, which kills the process without a word.
//! This module turns that into an error: a SIGBUS handler that, for an address inside a
//! registered mapping, replaces the whole mapping with private zero pages and marks it lost.
//! The access that faulted then completes on the zeros; the caller checks `lost` after every
//! operation and discards its result, so nothing computed from the zeros is ever answered.
//! A SIGBUS anywhere else goes to the handler that was installed before (or the default).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::Once;

/// Mappings a process can guard at once. A process maps one region (plus one per inspector
/// view or test handle); past this many, a mapping is unguarded (SIGBUS as before).
const GUARDED: usize = 64;

struct Entry {
    start: AtomicUsize,
    len: AtomicUsize,
    lost: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Entry = Entry {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    lost: AtomicBool::new(false),
};
static ENTRIES: [Entry; GUARDED] = [EMPTY; GUARDED];

/// The handler that was installed before ours, written once by `install` before ours is.
static mut PREVIOUS: Option<libc::sigaction> = None;
static INSTALL: Once = Once::new();

/// A guard on one mapping's range; unregisters on drop.
pub struct Guard(Option<usize>);

impl Guard {
    /// Starts guarding `len` bytes at `start`.
    pub fn new(start: *mut u8, len: usize) -> Guard {
        install();
        for (i, e) in ENTRIES.iter().enumerate() {
            // Claim a free entry by its length; publish the start before the length is seen
            // by the handler (Release on len pairs with its Acquire).
            if e.len.compare_exchange(0, usize::MAX, AcqRel, Relaxed).is_ok() {
                e.lost.store(false, Relaxed);
                e.start.store(start as usize, Relaxed);
                e.len.store(len, Release);
                return Guard(Some(i));
            }
        }
        Guard(None)
    }

    /// A guard on nothing.
    pub fn none() -> Guard {
        Guard(None)
    }

    /// Whether the mapping was replaced by zero pages after a SIGBUS: the file it mapped was
    /// shrunk while in use, and nothing read from it since can be trusted.
    pub fn lost(&self) -> bool {
        // Acquire pairs with the handler's Release: a result computed after the replacement
        // is seen as lost.
        self.0.is_some_and(|i| ENTRIES[i].lost.load(Acquire))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            ENTRIES[i].len.store(0, Release);
        }
    }
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a zeroed struct, a valid handler and an empty mask; PREVIOUS
        // is written here once, before our handler (its only other reader) can run.
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &new, &mut old) == 0 {
                PREVIOUS = Some(old);
            }
        }
    });
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Async-signal-safe: atomics, mmap and sigaction only.
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for e in ENTRIES.iter() {
        let len = e.len.load(Acquire);
        let start = e.start.load(Relaxed);
        if len == 0 || len == usize::MAX || addr < start || addr >= start + len {
            continue;
        }
        // SAFETY: [start, start+len) is a mapping this process made and still holds (the
        // entry is registered); MAP_FIXED replaces it in place with readable, writable zero
        // pages, so the faulting access can complete.
        let p = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            e.lost.store(true, Release);
            return;
        }
    }
    // SAFETY: as above.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    // SAFETY: getpid has no failure mode and is async-signal-safe.
    if code <= 0 && sender == unsafe { libc::getpid() } {
        // Sent by this process, not a fault: a handler installed after ours (Python's
        // faulthandler) re-raising before it returns. Returning lets the faulting access
        // repeat, and that fault, with its address, comes to the handler now in place.
        return;
    }
    // Not ours: hand over to what was there before.
    // SAFETY: PREVIOUS was written before this handler was installed and never again.
    let previous = unsafe { *std::ptr::addr_of!(PREVIOUS) };
    match previous {
        Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: calling the previous handler the way the kernel would have.
            unsafe {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
        }
        _ => {
            // Restore the default action; the faulting access repeats and kills the process
            // as it would have without us.
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}
