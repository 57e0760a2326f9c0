//! The few things the engine asks of the OS: the clock, the boot id and process liveness.

use std::fs;

/// Nanoseconds of CLOCK_BOOTTIME: one clock for every process of the host, never stepped by
/// NTP or an admin (unlike CLOCK_REALTIME) and still counting during suspend (unlike
/// CLOCK_MONOTONIC, so a window does not stretch over a laptop's sleep). It restarts at boot;
/// the region records the boot id to know when its clock values are from another boot.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_BOOTTIME exists on every Linux this
    // crate supports, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock nanoseconds since the Unix epoch, only for display (the creation time).
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The kernel's random id of this boot, as 16 bytes.
pub fn boot_id() -> [u8; 16] {
    let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    xxhash_rust::xxh3::xxh3_128(text.trim().as_bytes()).to_le_bytes()
}

pub fn pid() -> u32 {
    std::process::id()
}

/// What /proc says of a process: its state letter and start time (clock ticks after boot).
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; fields after the last
    // ')' are space separated: state is field 3, starttime field 22.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Start time of `pid` in clock ticks after boot, or 0 when /proc cannot say.
pub fn start_ticks(pid: u32) -> u64 {
    proc_stat(pid).map(|(_, t)| t).unwrap_or(0)
}

/// Whether the process that registered as (pid, start_ticks) still runs. A zombie (killed,
/// not yet waited for by its parent) counts as dead: it will never release anything.
/// A pid reused by a new process is told apart by its start time.
pub fn process_alive(pid: u32, start_ticks: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match proc_stat(pid) {
        Some((state, start)) => state != 'Z' && state != 'X' && (start_ticks == 0 || start == start_ticks),
        None => {
            // No /proc entry: ask the kernel directly (EPERM means it exists, owned by another user).
            // SAFETY: signal 0 performs only the existence and permission check.
            let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
            rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = pid();
        let start = start_ticks(me);
        assert!(start > 0);
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        assert!(!process_alive(0, 0));
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}
