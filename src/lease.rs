//! Leases: units of a limit that a shared store (LiteLLM's Redis) granted to this host for one
//! of its windows, spent here without I/O (the host tier, docs/host-tier.md).
//!
//! Per limit key the region holds two stamped entries, both stamped with the store's window
//! start: `granted` (units granted for that window, ending at a local deadline no later than
//! the store's window end) and `used` (units taken, capped by `granted`). A take succeeds only
//! if `used + cost <= granted` for the same window and the deadline has not passed when the
//! take is known to have happened, so this host never spends more than it was granted, nor
//! in another window than the one the units were counted in.

use crate::stamped::{Added, Expiry};
use crate::table::{Table, TableFull};

/// What a take found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub taken: bool,
    /// The store's window start the lease is for (0: no live lease).
    pub stamp: u32,
    /// Granted units of that window not yet taken (after this take).
    pub left: u64,
}

fn granted_key(key: &[u8]) -> Vec<u8> {
    [b"lease:".as_slice(), key, b":granted"].concat()
}

fn used_key(key: &[u8]) -> Vec<u8> {
    [b"lease:".as_slice(), key, b":used"].concat()
}

impl Table {
    /// Adds `units` the store granted in its window `stamp`, spendable until region second
    /// `end_s`. A lease of an older window is replaced; false (nothing added) when the lease
    /// here is already of a newer window.
    pub fn lease_grant(&self, key: &[u8], stamp: u32, units: u64, end_s: u32) -> Result<bool, TableFull> {
        let added = self.stamped_add(&granted_key(key), stamp, units as i64, Expiry::At { s: end_s }, None)?;
        Ok(matches!(added, Added::Done(_)))
    }

    /// Takes `cost` units of the live lease of `key`, or none.
    pub fn lease_take(&self, key: &[u8], cost: u64) -> Result<Take, TableFull> {
        let none = Take {
            taken: false,
            stamp: 0,
            left: 0,
        };
        let Some(granted) = self.stamped_get(&granted_key(key)) else {
            return Ok(none);
        };
        let used = used_key(key);
        let expiry = Expiry::At { s: granted.expires_s };
        let added = self.stamped_add(&used, granted.stamp, cost as i64, expiry, Some(granted.count))?;
        let (taken, count) = match added {
            Added::Done(c) => (true, c.count),
            Added::Capped(c) => (false, c.count),
            Added::Newer(_) => return Ok(none),
        };
        if taken && crate::stamped::now_s() >= granted.expires_s {
            // The deadline may have passed before the add: give the units back, refuse.
            self.lease_untake(key, granted.stamp, cost)?;
            return Ok(none);
        }
        Ok(Take {
            taken,
            stamp: granted.stamp,
            left: granted.count.saturating_sub(count),
        })
    }

    /// Gives back `cost` units taken from the lease of window `stamp` (an all-or-nothing
    /// request whose other limits refused). Nothing happens if the lease moved on.
    pub fn lease_untake(&self, key: &[u8], stamp: u32, cost: u64) -> Result<(), TableFull> {
        let used = used_key(key);
        if let Some(u) = self.stamped_get(&used).filter(|u| u.stamp == stamp) {
            self.stamped_add(&used, stamp, -(cost as i64), Expiry::At { s: u.expires_s }, None)?;
        }
        Ok(())
    }

    /// Granted units of the live lease not yet taken, and its window: what a return to the
    /// store may give back. (0, 0) without a live lease.
    pub fn lease_left(&self, key: &[u8]) -> (u32, u64) {
        let Some(granted) = self.stamped_get(&granted_key(key)) else {
            return (0, 0);
        };
        let used = self
            .stamped_get(&used_key(key))
            .filter(|u| u.stamp == granted.stamp)
            .map_or(0, |u| u.count);
        (granted.stamp, granted.count.saturating_sub(used))
    }
}

#[cfg(test)]
mod tests {
    use crate::table::tests::table;

    #[test]
    fn a_host_spends_at_most_what_was_granted_in_that_window() {
        let t = table();
        let far = crate::stamped::now_s() + 60;
        assert!(!t.lease_take(b"k", 1).unwrap().taken, "no lease, no take");
        assert!(t.lease_grant(b"k", 100, 3, far).unwrap());
        let takes: Vec<bool> = (0..5).map(|_| t.lease_take(b"k", 1).unwrap().taken).collect();
        assert_eq!(takes, [true, true, true, false, false]);
        assert!(t.lease_grant(b"k", 100, 2, far).unwrap(), "more of the same window");
        assert_eq!(t.lease_left(b"k"), (100, 2));
        assert!(!t.lease_take(b"k", 3).unwrap().taken, "a cost above what is left takes nothing");
        let take = t.lease_take(b"k", 2).unwrap();
        assert_eq!((take.taken, take.stamp, take.left), (true, 100, 0));
        // A new window replaces the lease; an older one is refused.
        assert!(t.lease_grant(b"k", 160, 1, far).unwrap());
        assert!(!t.lease_grant(b"k", 100, 5, far).unwrap());
        assert_eq!(t.lease_left(b"k"), (160, 1));
        let take = t.lease_take(b"k", 1).unwrap();
        assert!(take.taken && take.stamp == 160);
        t.lease_untake(b"k", 160, 1).unwrap();
        assert_eq!(t.lease_left(b"k"), (160, 1), "a take given back is spendable again");
    }

    #[test]
    fn a_lease_past_its_deadline_is_never_spent() {
        let t = table();
        let now = crate::stamped::now_s();
        assert!(t.lease_grant(b"k", 7, 10, now).unwrap());
        assert!(!t.lease_take(b"k", 1).unwrap().taken);
        assert_eq!(t.lease_left(b"k"), (0, 0));
    }
}
