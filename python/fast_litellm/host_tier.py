"""The host tier: this host's region in front of LiteLLM's Redis, for limits shared by hosts.

A request is admitted from units that Redis granted to this host ahead of time (a lease held
in the region, shared by every worker of the host), so most requests make no Redis call. When
the host's lease of a limit runs out, one Lua call on LiteLLM's own v3 keys
(`{descriptor:value}:window` and its `:requests` / `:tokens` counter) grants at most what is
left of that window's limit, with LiteLLM's semantics: the same window start (Redis `TIME`),
the same reset of the sibling counters, the same TTLs. Stock LiteLLM pods that run
`CHECK_AND_INCREMENT_BY_N_SCRIPT` on the same keys therefore share one limit with this host.

Bounds (docs/host-tier.md states and derives them):
- over-admission 0: Redis grants at most the limit per window, atomically; a host spends only
  what it was granted, only in the window it was granted in, and never after a local
  deadline that is no later than Redis's window end;
- under-admission: at most the units granted but not spent when a window ends, at most
  `hosts x max_lease` and, near the limit, `(limit - counter) / 2` in all;
- Redis calls: one per lease, and leases grow (doubling while a key keeps asking within
  `refill_s`) up to `(limit - counter) / (2 x hosts)`. One worker of the host at a time makes
  a key's lease call; requests of other workers that miss meanwhile take from its grant when
  it asks for enough. A key that keeps asking has its lease refilled ahead when a take leaves
  it low, so its requests do not wait for that call.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from . import _native, host_tier_wait

log = logging.getLogger("fast_litellm")
T = TypeVar("T")

# Per (window key, counter key) pair: first charge `debt` (units admitted here while Redis
# could not be reached) to the live window without a check, then grant min(want, limit -
# counter) of it, or nothing if that is less than `need` (what the request lacks: a refused
# request takes nothing, as with LiteLLM's check), opening a new window as LiteLLM v3 does
# (Redis TIME, siblings deleted, TTLs set). Nothing is written for a grant and a debt of 0.
# A call with a host id is also this host's heartbeat (at most one a second per host): it
# scores the id in the HOSTS_KEY sorted set with Redis's clock and answers how many hosts were
# heard from in the last HEARTBEAT_S.
# KEYS: pairs, then HOSTS_KEY. ARGV: per pair limit, want, need, ttl_s, window_s, debt; then
# the host id or ''. Returns per pair: grant, window start, Redis now, counter after the grant;
# then the number of hosts heard from (0 without a heartbeat).
LEASE_SCRIPT = """
local now = tonumber(redis.call('TIME')[1])
local out = {}
local pairs_n = (#KEYS - 1) / 2
for i = 1, pairs_n do
    local window_key, counter_key = KEYS[2 * i - 1], KEYS[2 * i]
    local b = (i - 1) * 6
    local limit, want, need = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    local ttl, size, debt = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6])
    local start = redis.call('GET', window_key)
    local expired = (not start) or (now - tonumber(start)) >= size
    local counter = debt
    if not expired then
        counter = counter + tonumber(redis.call('GET', counter_key) or 0)
    end
    local grant = math.min(want, limit - counter)
    if grant < need then grant = 0 end
    if expired then
        start = now
        if grant + debt > 0 then
            local prefix = string.sub(window_key, 1, -(#':window') - 1)
            redis.call('DEL', prefix .. ':requests', prefix .. ':tokens')
            redis.call('SET', window_key, tostring(now))
            redis.call('EXPIRE', window_key, size)
            redis.call('SET', counter_key, grant + debt)
            if ttl > 0 then redis.call('EXPIRE', counter_key, ttl) end
        end
    elseif grant + debt > 0 then
        redis.call('INCRBY', counter_key, grant + debt)
        if ttl > 0 and redis.call('TTL', counter_key) == -1 then
            redis.call('EXPIRE', counter_key, ttl)
        end
    end
    table.insert(out, grant)
    table.insert(out, tonumber(start))
    table.insert(out, now)
    table.insert(out, counter + grant)
end
local host_id = ARGV[pairs_n * 6 + 1]
if host_id ~= '' then
    local hosts_key = KEYS[#KEYS]
    redis.call('ZADD', hosts_key, now, host_id)
    redis.call('ZREMRANGEBYSCORE', hosts_key, '-inf', now - HEARTBEAT_S)
    redis.call('EXPIRE', hosts_key, HEARTBEAT_S)
    table.insert(out, redis.call('ZCARD', hosts_key))
else
    table.insert(out, 0)
end
return out
"""
#: The sorted set of the hosts that made a lease call lately (their ids, scored by Redis TIME).
HOSTS_KEY = "fast_litellm:host_tier:hosts"
#: A host counts towards the others' local share this long after its last lease call.
HEARTBEAT_S = 60
LEASE_SCRIPT = LEASE_SCRIPT.replace("HEARTBEAT_S", str(HEARTBEAT_S))

# Gives back unspent leased units: per pair, DECRBY what is given (never below 0) only while
# the window is still the one they were granted in. KEYS: pairs. ARGV: per pair stamp, units.
# Returns per pair the units given back.
RETURN_SCRIPT = """
local out = {}
for i = 1, #KEYS / 2 do
    local window_key, counter_key = KEYS[2 * i - 1], KEYS[2 * i]
    local stamp, units = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    local given = 0
    local start = redis.call('GET', window_key)
    if start and tonumber(start) == stamp then
        given = math.min(units, tonumber(redis.call('GET', counter_key) or 0))
        if given > 0 then redis.call('DECRBY', counter_key, given) end
    end
    table.insert(out, given)
end
return out
"""


#: What a host does for a limit whose lease is spent while Redis cannot be reached:
#: admit up to limit / hosts per window from the region alone, refuse, or admit.
DOWN_POLICIES = ("local-share", "closed", "open")
#: Region entries of the host-wide breaker: consecutive failures, and open (with a TTL of retry_s).
BREAKER_FAILURES = "tier:redis-failures"
BREAKER_OPEN = "tier:redis-open"
#: Region entry: how many hosts the last lease call heard from (kept through an outage).
HOSTS_HEARD = "tier:hosts-heard"
#: Region window entry: this host sent its heartbeat this second.
HEARTBEAT_SENT = "tier:heartbeat"


#: The host tier's host-wide counts (region counters `tier:stat:<name>`), for the metrics.
STATS = {
    "redis_calls": "Calls the host tier made to Redis: leases, returns, deferred increments, the "
                   "max_parallel_requests pool and the dead-host slot prologue.",
    "redis_failures": "Of those, calls that failed or timed out.",
    "redis_wait_us": "Microseconds requests waited on the host tier's Redis calls.",
    "ahead_refills": "Lease calls made ahead of need, off the request path, for keys that keep asking.",
    "shared_calls_waited": "Requests that waited for another worker's lease call instead of making their own.",
    "lagged_waits": "Waits on a Redis call extended past the timeout because the worker's event loop was running late.",
    "granted_units": "Units Redis granted to this host's leases (requests' own units included).",
    "returned_units": "Unspent units given back to Redis (idle and at shutdown).",
    "stranded_units": "Granted units left unkept because their window was ending (counted in Redis, never spent).",
    "deferred_increments": "Post-call token increments of counters without a token limit, sent to Redis summed once a flush interval.",
    "settled_units": "Tokens of post-call reconciliations settled in this host's leases instead of Redis.",
    "policy_admitted_units": "Units the down policy admitted while Redis could not be reached.",
    "unverifiable_refusals": "Checks refused as LiteLLM's fail_closed_rate_limit_enforcement refuses them (Redis unreachable, lease short).",
    "gauge_pool_takes": "Requests whose max_parallel_requests slots came from the host's pool, without a Redis call.",
    "gauge_pool_adds": "Slots added to the host's max_parallel_requests pool in Redis (one call each).",
    "gauge_pool_returns": "Idle slots of the host's max_parallel_requests pool given back to Redis.",
    "transitions": "Redis lost / Redis back transitions of this host (two processes recovering at once may count one twice).",
}


def stat_key(name: str) -> str:
    return f"tier:stat:{name}"


class RedisUnverifiable(Exception):
    """Redis cannot be reached, the lease is short and the caller asked to refuse what Redis
    cannot verify (`HostTier.fail_closed`, LiteLLM's fail_closed_rate_limit_enforcement)
    instead of following the down policy. Nothing of the request stays taken."""


@dataclass(frozen=True)
class Limit:
    """One of LiteLLM v3's (window, counter) pairs, as its pre-call check sees it."""

    window_key: str
    counter_key: str
    limit: int
    cost: int = 1
    ttl_s: int = 60
    window_s: int = 60
    #: Whether a refusal by Redis is remembered for poll_s (the dry marker). Not for counters
    #: that refunds lower before the window ends (TPM reservations, reconciled to the usage
    #: after the call): each refused request then asks Redis, as it does with LiteLLM alone.
    dry_poll: bool = True


@dataclass
class _Calls:
    """An admission's part in "one lease call per key at a time" (`_after_other_workers_call`)."""
    #: the `tier-calling:` slots it holds: it makes those calls
    claimed: List[str] = field(default_factory=list)
    #: it waited for another worker's call, which failed
    shared_call_failed: bool = False

    def end(self, region: Any) -> None:
        for slot in self.claimed:
            region.release(slot)


@dataclass(frozen=True)
class Admission:
    allowed: bool
    #: The first limit that refused, when not allowed.
    denied_index: Optional[int]
    #: Per limit, the Redis window start its units were counted in (0 where none was taken).
    windows: Tuple[int, ...]
    #: Redis calls this admission made (0 or 1).
    redis_calls: int


def _clock_s() -> float:
    return _native.clock_ns() / 1e9


class HostTier:
    """Admits requests against limits shared through Redis, spending leases held in `region`.

    `redis` is an asyncio Redis client (redis-py's, as LiteLLM's `RedisCache` holds); `hosts`
    is how many hosts share the limits, which sizes the leases (never correctness).
    """

    def __init__(self, region: Any, redis: Any, hosts: int, *, refill_s: float = 1.0, poll_s: float = 1.0,
                 idle_s: float = 1.0, max_lease: int = 1 << 20, down_policy: str = "local-share",
                 timeout_s: float = 0.25, failures_to_open: int = 3, retry_s: float = 1.0,
                 refill_ahead: bool = True) -> None:
        if hosts < 1:
            raise ValueError(f"hosts must be 1 or more, got {hosts}")
        if down_policy not in DOWN_POLICIES:
            raise ValueError(f"down_policy must be one of {', '.join(DOWN_POLICIES)}, got {down_policy!r}")
        self.down_policy = down_policy
        #: Asked when Redis is down and a lease is short: True refuses (RedisUnverifiable) instead
        #: of the down policy; units already granted by Redis are spent either way.
        self.fail_closed: Callable[[], bool] = lambda: False
        self.timeout_s = timeout_s
        self.failures_to_open = failures_to_open
        self.retry_s = retry_s
        self.region = region
        self.redis = redis
        self.hosts = hosts
        #: This host in the heartbeat: the machine and its region (every worker of a host shares both).
        self.host_id = f"{socket.gethostname()}:{region.path}"
        self.refill_s = refill_s
        self.poll_s = poll_s
        self.idle_s = idle_s
        self.max_lease = max_lease
        self.refill_ahead = refill_ahead
        #: Refills ahead this process has running (kept referenced until done; close() awaits them).
        self._ahead: "set[asyncio.Task[None]]" = set()
        self._lease = redis.register_script(LEASE_SCRIPT)
        self._return = redis.register_script(RETURN_SCRIPT)
        #: counter key -> its Limit, for give_back()
        self._seen: Dict[str, Limit] = {}
        #: counter key -> (window start, region-clock second its units end) of this process's last refill
        self._deadlines: Dict[str, Tuple[int, int]] = {}
        #: counter key -> clock of this process's last admit on it, for idle returns
        self._last_use: Dict[str, float] = {}
        self._idle_task: Optional["asyncio.Task[None]"] = None
        #: counter keys of a refill this process has in flight -> done when its units are kept
        self._inflight: Dict[Tuple[str, ...], "asyncio.Future[None]"] = {}

    # The sizing is the host's, in the region, so every worker's refill grows one lease:
    # `tier-size:<key>` holds (ms of the last refill mod 2^32, its want), `tier-count:<key>`
    # the counter Redis reported last (stamp 0).

    def _want(self, lim: Limit, need: int, now: float) -> int:
        last_refill = self.region.value_get(f"tier-size:{lim.counter_key}")
        grow = 0
        if last_refill is not None:
            at_ms, last = last_refill
            since_ms = (int(now * 1000) - at_ms) % (1 << 32)
            grow = 2 * last if since_ms < self.refill_s * 1000 else last // 2
        ahead = min(grow, self._share(lim), self.max_lease)
        # Whole costs: requests of one key tend to cost the same (a TPM reservation is the same
        # estimate for the same max_tokens), so a lease of whole costs leaves no leftover that
        # only Redis's remainder could complete.
        return max(need, ahead - ahead % need)

    def _share(self, lim: Limit) -> int:
        """The most one grant to this host may be: half its share of what Redis has left, by
        the counter Redis reported last."""
        return max(0, lim.limit - self._reported(lim)) // (2 * self.host_count())

    def host_count(self) -> int:
        """How many hosts share the limits: the configured count, or more if more were heard
        from (the heartbeat the lease calls carry), as this host last heard."""
        heard = self.region.value_get(HOSTS_HEARD)
        return max(self.hosts, 0 if heard is None else int(heard[1]))

    def _reported(self, lim: Limit) -> int:
        counter = self.region.value_get(f"tier-count:{lim.counter_key}")
        return 0 if counter is None else int(counter[1])

    def _sized(self, lim: Limit, want: int, sent: float, counter: int) -> None:
        ttl = float(max(lim.window_s, 1))
        self.region.value_set(f"tier-size:{lim.counter_key}", int(sent * 1000) % (1 << 32), want, ttl)
        self.region.value_set(f"tier-count:{lim.counter_key}", 0, max(0, min(counter, (1 << 48) - 1)), ttl)

    def _dry_key(self, lim: Limit) -> str:
        return f"lease:{lim.counter_key}:dry"

    def _note(self, limits: Sequence[Limit]) -> None:
        """Records the use (for idle returns and close()), starting the idle returns once."""
        if self._idle_task is None and self.idle_s > 0:
            self._idle_task = asyncio.get_running_loop().create_task(self._return_idle())
        now = _clock_s()
        for lim in limits:
            self._seen[lim.counter_key] = lim
            self._last_use[lim.counter_key] = now

    def dry(self, lim: Limit) -> bool:
        """Whether Redis refused this limit less than poll_s ago (then it is not asked again)."""
        return self.region.value_get(self._dry_key(lim)) is not None

    def estimate(self, lim: Limit) -> int:
        """An estimate of the count in the window, for LiteLLM's statuses and headers: what
        Redis last reported to this host, less what this host holds unspent."""
        left: int = self.region.lease_left(lim.counter_key)[1]
        return max(0, min(lim.limit, self._reported(lim) - left))

    async def admit_each(self, limits: Sequence[Limit]) -> List[Tuple[bool, int, int]]:
        """Each limit on its own, as LiteLLM's batch script counts each counter whatever the
        others say: per limit (taken, window start, estimated count), one Redis call at most."""
        calls = _Calls()
        try:
            return await self._admit_each(limits, calls)
        finally:
            calls.end(self.region)

    async def _admit_each(self, limits: Sequence[Limit], calls: "_Calls") -> List[Tuple[bool, int, int]]:
        self._note(limits)
        out: List[Optional[Tuple[bool, int, int]]] = [None] * len(limits)
        ask: List[int] = []
        for i, lim in enumerate(limits):
            ok, stamp, left = self.region.lease_take(lim.counter_key, lim.cost)
            if ok:
                out[i] = (True, stamp, self.estimate(lim))
                self._maybe_refill_ahead(lim, left)
            elif self.dry(lim):
                out[i] = (False, 0, lim.limit)
            else:
                ask.append(i)
        for i, stamp in await self._after_refill_in_flight(limits, ask, calls):
            out[i] = (True, stamp, self.estimate(limits[i]))
        ask = [i for i in ask if out[i] is None]
        if ask:
            try:
                granted = await self._refill([limits[i] for i in ask], policy=calls.shared_call_failed)
            except RedisUnverifiable:
                self._untake(limits, [(i, o[1]) for i, o in enumerate(out) if o is not None and o[0]])
                raise
            for i, (units, start) in zip(ask, granted):
                lim = limits[i]
                ok = units >= lim.cost
                self._keep(lim, start, units - lim.cost if ok else units)
                out[i] = (ok, start, self.estimate(lim) if ok else lim.limit)
        return [o for o in out if o is not None]

    async def admit(self, limits: Sequence[Limit]) -> Admission:
        """All or nothing: every limit takes its cost, or none does."""
        calls = _Calls()
        try:
            return await self._admit(limits, calls)
        finally:
            calls.end(self.region)

    async def _admit(self, limits: Sequence[Limit], calls: "_Calls") -> Admission:
        self._note(limits)
        taken: List[Tuple[int, int]] = []  # (index, stamp) taken from the host's lease
        missing: List[int] = []
        lows: List[Tuple[Limit, int]] = []  # (limit, units left) of the takes
        for i, lim in enumerate(limits):
            ok, stamp, left = self.region.lease_take(lim.counter_key, lim.cost)
            if ok:
                taken.append((i, stamp))
                lows.append((lim, left))
            else:
                missing.append(i)
        retaken = await self._after_refill_in_flight(limits, missing, calls)
        taken += retaken
        missing = [i for i in missing if i not in dict(retaken)]
        if not missing:
            for lim, left in lows:
                self._maybe_refill_ahead(lim, left)
            windows = dict(taken)
            return Admission(True, None, tuple(windows[i] for i in range(len(limits))), 0)
        # A limit Redis refused less than poll_s ago is refused again without asking.
        for i in missing:
            if self.dry(limits[i]):
                self._untake(limits, taken)
                return Admission(False, i, (), 0)
        try:
            granted = await self._refill([limits[i] for i in missing], policy=calls.shared_call_failed)
        except RedisUnverifiable:
            self._untake(limits, taken)
            raise
        direct: List[Tuple[int, int]] = []  # (index, window) of a cost taken straight from its grant
        denied: Optional[int] = None
        for i, (units, start) in zip(missing, granted):
            lim = limits[i]
            if denied is None and units >= lim.cost:
                # This request's share comes straight from the grant (Redis counted it while its
                # window was open), even when too little of the window is left to keep the rest.
                direct.append((i, start))
                units -= lim.cost
            self._keep(lim, start, units)
            if denied is None and (i, start) not in direct:
                # Too small alone: with what the host held already (a cost larger than 1), it may do.
                ok, stamp, _ = self.region.lease_take(lim.counter_key, lim.cost)
                if ok:
                    taken.append((i, stamp))
                else:
                    denied = i
        if denied is not None:
            self._untake(limits, taken)
            for i, start in direct:  # back to the host's lease, for the next requests
                self._keep(limits[i], start, limits[i].cost)
            return Admission(False, denied, (), 1)
        windows = dict(taken + direct)
        return Admission(True, None, tuple(windows[i] for i in range(len(limits))), 1)

    async def _after_refill_in_flight(self, limits: Sequence[Limit], missing: List[int],
                                      calls: "_Calls") -> List[Tuple[int, int]]:
        """When another task of this process is already refilling the same limits, waits for its
        units instead of a call of its own (concurrent requests of one key miss the lease
        together), then takes from the lease again; then the same for another worker of the
        host (`_after_other_workers_call`): [(index, stamp)] of what it took."""
        pending = self._inflight.get(tuple(limits[i].counter_key for i in missing)) if missing else None
        retaken: List[Tuple[int, int]] = []
        if pending is not None:
            await asyncio.shield(pending)
            for i in missing:
                ok, stamp, _ = self.region.lease_take(limits[i].counter_key, limits[i].cost)
                if ok:
                    retaken.append((i, stamp))
        still = [i for i in missing if i not in dict(retaken)]
        return retaken + await self._after_other_workers_call(limits, still, calls)

    # One worker of the host at a time makes a key's lease call: it holds the region slot
    # `tier-calling:<counter key>` (max 1; the region gives a dead holder's back) from its miss
    # until it has kept what was granted, and sets `tier-asked:<counter key>` to the units it
    # will ask for beyond its own request. A request waiting for such a call holds a
    # `tier-waiting:<counter key>` slot.

    def _claim_call(self, lim: Limit, own_cost: int) -> Optional[str]:
        """The call of `lim`'s lease, if no other worker of the host is making it: the slot to
        give back once the grant is kept."""
        slot = f"tier-calling:{lim.counter_key}"
        try:
            if not self.region.acquire(slot, 1):
                return None
            surplus = self._want(lim, lim.cost, _clock_s()) - own_cost
            self.region.value_set(f"tier-asked:{lim.counter_key}", 0, max(0, surplus), 2 * self.timeout_s + 1)
        except _native.RegionError:  # a full table: calls as before, in parallel
            return None
        return slot

    async def _after_other_workers_call(self, limits: Sequence[Limit], missing: List[int],
                                        calls: "_Calls") -> List[Tuple[int, int]]:
        """Claims the lease call of each limit this request misses (into `calls`). When every
        one is another worker's call, asking for enough units for this request too (its cost
        times the requests waiting, itself included), takes from the lease as their units
        arrive instead of a call of its own, at most 2 × timeout_s: [(index, stamp)] of what
        it took. A call asking too little is not waited for: the request calls too, in parallel."""
        busy = []
        for i in missing:
            slot = self._claim_call(limits[i], limits[i].cost)
            if slot is None:
                busy.append(i)
            else:
                calls.claimed.append(slot)
        if calls.claimed or not busy:
            return []
        waiting: List[str] = []
        try:
            for i in busy:
                lim, slot = limits[i], f"tier-waiting:{limits[i].counter_key}"
                if not self.region.acquire(slot, 1 << 30):
                    return []
                waiting.append(slot)
                asked = self.region.value_get(f"tier-asked:{lim.counter_key}")
                if asked is None or self.region.slots_in_use(slot) * lim.cost > asked[1]:
                    return []
            return await self._take_as_units_arrive(limits, busy, calls)
        except _native.RegionError:  # a full table: calls as before
            return []
        finally:
            for slot in waiting:
                self.region.release(slot)

    async def _take_as_units_arrive(self, limits: Sequence[Limit], busy: List[int],
                                    calls: "_Calls") -> List[Tuple[int, int]]:
        self.stat("shared_calls_waited", 1)
        failures = self.region.counter_get(BREAKER_FAILURES) or 0
        loop = asyncio.get_running_loop()
        # Past the call's own timeout, which started first, so that its failure is seen here.
        deadline = loop.time() + 2 * self.timeout_s
        taken: List[Tuple[int, int]] = []
        left = list(busy)
        while True:
            # Read before the takes: a call that ends after this read has kept its units by then.
            in_flight = any(self.region.slots_in_use(f"tier-calling:{limits[i].counter_key}") for i in left)
            for i in list(left):
                ok, stamp, _ = self.region.lease_take(limits[i].counter_key, limits[i].cost)
                if ok:
                    taken.append((i, stamp))
                    left.remove(i)
            if not left or not in_flight or loop.time() >= deadline:
                # A call that failed meanwhile (a Redis failure and no success since): the
                # policy answers this request too, rather than a second timeout of its own.
                calls.shared_call_failed = bool(left) and (self.region.counter_get(BREAKER_FAILURES) or 0) > failures
                return taken
            await asyncio.sleep(0.001)

    def _untake(self, limits: Sequence[Limit], taken: List[Tuple[int, int]]) -> None:
        for i, stamp in taken:
            self.region.lease_untake(limits[i].counter_key, stamp, limits[i].cost)

    def stat(self, name: str, n: int) -> None:
        if n:
            try:
                self.region.counter_add(stat_key(name), n, 0.0)
            except _native.RegionFullError:  # a full table must not undo the step it counts
                pass

    async def counted_call(self, call: Awaitable[T], *, waited: bool, timeouts: int = 1) -> T:
        """`call` (within_timeout) of the tier's other parts (the max_parallel_requests pool,
        the dead-host slot prologue, the deferred increments), counted in redis_calls and, when
        a request waits on it, in redis_wait_us."""
        self.stat("redis_calls", 1)
        sent = _clock_s()
        try:
            return await self.within_timeout(call, timeouts)
        finally:
            if waited:
                self.stat("redis_wait_us", int((_clock_s() - sent) * 1e6))

    # ---- Redis slow or down: the breaker, the policy, the debt -------------------------------

    async def within_timeout(self, call: Awaitable[T], timeouts: int = 1) -> T:
        """`call`, given `timeouts` × timeout_s of this process's responsive event loop
        (`host_tier_wait`)."""
        return await host_tier_wait.within_timeout(call, self.timeout_s * timeouts,
                                                   lambda: self.stat("lagged_waits", 1))

    def _redis_down(self) -> bool:
        """The host-wide breaker is open: no call until it half-opens after retry_s."""
        return self.region.value_get(BREAKER_OPEN) is not None

    def _failed(self, error: BaseException) -> None:
        """One more failed call; the breaker opens for the host after failures_to_open in a
        row. The first failure after a success is the host's "Redis lost" transition."""
        self.stat("redis_failures", 1)
        failures = self.region.counter_add(BREAKER_FAILURES, 1, 0.0)
        if failures >= self.failures_to_open:
            self.region.value_set(BREAKER_OPEN, 0, 1, self.retry_s)
        if failures == 1:
            self.stat("transitions", 1)
            log.warning("fast_litellm: host tier: Redis unreachable (%s: %s): %s until it answers",
                        type(error).__name__, error, self.down_policy)

    def _answered(self) -> None:
        """A call succeeded: after failures, the host's "Redis back" transition."""
        failures = self.region.counter_get(BREAKER_FAILURES) or 0
        if failures and self.region.counter_add(BREAKER_FAILURES, -failures, 0.0) == 0:
            self.stat("transitions", 1)
            log.warning("fast_litellm: host tier: Redis answers again; what was admitted meanwhile is charged to it")

    def _policy_answers(self, limits: Sequence[Limit], why: str) -> List[Tuple[int, int]]:
        if self.fail_closed():
            self.stat("unverifiable_refusals", 1)
            raise RedisUnverifiable(f"Redis unreachable ({why})")
        return [self._without_redis(lim) for lim in limits]

    def _without_redis(self, lim: Limit) -> Tuple[int, int]:
        """The down policy's answer for one limit: (units for this request, window 0)."""
        if self.down_policy == "closed":
            return 0, 0
        if self.down_policy == "local-share":
            share = lim.limit // self.host_count()
            if not self.region.hit(f"tier-share:{lim.counter_key}", share, float(lim.window_s), lim.cost).allowed:
                return 0, 0
        self.region.counter_add(self._debt_key(lim.counter_key), lim.cost, 0.0)  # charged to Redis when it is back
        self.stat("policy_admitted_units", lim.cost)
        return lim.cost, 0

    @staticmethod
    def _debt_key(counter_key: str) -> str:
        return f"tier-debt:{counter_key}"

    def _take_debt(self, counter_key: str, most: Optional[int] = None) -> int:
        """Takes up to `most` (default all) of a counter's debt out of the region, for one call to
        charge: a worker taking it at the same time gets only what is left, never the same units."""
        key = self._debt_key(counter_key)
        want = self.region.counter_get(key) or 0
        if most is not None:
            want = min(want, most)
        if want <= 0:
            return 0
        after = self.region.counter_add(key, -want, 0.0)
        if after < 0:  # another worker took part of it first
            self.region.counter_add(key, -after, 0.0)
            want += after
        return max(0, want)

    def _restore_debts(self, limits: Sequence[Limit], debts: Sequence[int]) -> None:
        """Puts back debts taken for a call that failed."""
        for lim, debt in zip(limits, debts):
            if debt:
                self.region.counter_add(self._debt_key(lim.counter_key), debt, 0.0)

    async def charge_debts(self) -> int:
        """Charges to Redis the debts of the limits this process has used, units admitted while
        Redis could not be reached, without waiting for a request that needs a lease (there may
        be none before the window ends, or before the process stops): one call, granting
        nothing. Returns the units charged."""
        if self._redis_down():
            return 0
        limits = list(self._seen.values())
        debts = [self._take_debt(lim.counter_key) for lim in limits]
        owed = [(lim, debt) for lim, debt in zip(limits, debts) if debt]
        if not owed:
            return 0
        keys: List[str] = []
        args: List[Any] = []
        for lim, debt in owed:
            keys += [lim.window_key, lim.counter_key]
            args += [lim.limit, 0, 0, lim.ttl_s, lim.window_s, debt]
        keys.append(HOSTS_KEY)
        self.stat("redis_calls", 1)
        try:
            await self.within_timeout(self._lease(keys=keys, args=[*args, ""]))
        except Exception as error:  # noqa: BLE001 - kept for the next call (one that ran anyway charges twice: less admitted)
            self._restore_debts([lim for lim, _ in owed], [debt for _, debt in owed])
            self._failed(error)
            return 0
        self._answered()
        return sum(debt for _, debt in owed)

    def _maybe_refill_ahead(self, lim: Limit, left: int) -> None:
        """After a take from the lease of `lim` left `left` units: when the key keeps asking (its
        last grant was sent less than refill_s ago, the test that doubles a lease), the take
        left under a quarter of that grant and Redis has plenty left (the host's share of it,
        as `_want` reckons it, at least 8 times that grant: near the limit, units taken early
        would be taken from the other hosts, and a grant to a worker that exits before keeping
        it is stranded), the next lease is asked for now, in the background,
        so that the request that would have found the lease empty finds it refilled. Not while
        another lease call of the key is in flight on the host (it claims the key's call, as a
        request's refill does: `_claim_call`), nor while Redis is down (the
        down policy answers requests, never a refill ahead) or while Redis refused the key
        lately. Exactness is the lease call's: Redis grants at most what is left."""
        if not self.refill_ahead:
            return
        sized = self.region.value_get(f"tier-size:{lim.counter_key}")
        if sized is None:
            return
        at_ms, last_want = sized
        since_ms = (int(_clock_s() * 1000) - at_ms) % (1 << 32)
        if (since_ms >= self.refill_s * 1000 or 4 * left >= last_want or self._share(lim) < 8 * last_want
                or (lim.counter_key,) in self._inflight or self.dry(lim) or self._redis_down()):
            return
        claim = self._claim_call(lim, 0)
        if claim is None:  # another worker's call is in flight, or a full table
            return
        task = asyncio.get_running_loop().create_task(self._refill_ahead(lim, claim))
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    async def _refill_ahead(self, lim: Limit, claim: str) -> None:
        try:
            self.stat("ahead_refills", 1)
            [(units, start)] = await self._refill([lim], ahead=True)
            self._keep(lim, start, units)  # before the waiters of _refill wake
        except Exception as error:  # noqa: BLE001 - the request path refills as before
            log.debug("fast_litellm: host tier: a refill ahead failed: %s", error)
        finally:
            self.region.release(claim)

    async def _refill(self, limits: Sequence[Limit], ahead: bool = False, policy: bool = False) -> List[Tuple[int, int]]:
        """`_lease_call`, with the other tasks of this process that miss the same limits
        meanwhile waiting for it (`_after_refill_in_flight`): they take from what it keeps, which
        the caller puts into the lease before its next await."""
        keys = tuple(lim.counter_key for lim in limits)
        done = asyncio.get_running_loop().create_future()
        self._inflight.setdefault(keys, done)
        try:
            return await self._lease_call(limits, ahead, policy)
        finally:
            if self._inflight.get(keys) is done:
                del self._inflight[keys]
            # Resolved after the caller has kept the units: it runs on before the waiters wake.
            asyncio.get_running_loop().call_soon(done.set_result, None)

    async def _lease_call(self, limits: Sequence[Limit], ahead: bool = False,
                          policy: bool = False) -> List[Tuple[int, int]]:
        """One Lua call for all `limits`: [(units granted, window start)], leases' deadlines set.
        With Redis down or slow (the breaker, or a call that fails or outlasts timeout_s), the
        down policy answers for each instead, with window 0; a refill `ahead` of need, which
        answers no request, gets nothing then. With `policy` (another worker's call of these
        limits failed while this request waited for it) the down policy answers at once."""
        if self._redis_down():
            return [(0, 0)] * len(limits) if ahead else self._policy_answers(limits, "the breaker is open")
        if policy:
            return self._policy_answers(limits, "another worker's lease call of these limits failed")
        sent = _clock_s()
        wants = [self._want(lim, lim.cost, sent) for lim in limits]
        debts = [self._take_debt(lim.counter_key) for lim in limits]
        keys: List[str] = []
        args: List[int] = []
        for lim, want, debt in zip(limits, wants, debts):
            keys += [lim.window_key, lim.counter_key]
            # What the host already holds counts towards the cost (admit() takes both).
            need = max(1, lim.cost - self.region.lease_left(lim.counter_key)[1])
            args += [lim.limit, want, need, lim.ttl_s, lim.window_s, debt]
        keys.append(HOSTS_KEY)
        beat = self.region.hit(HEARTBEAT_SENT, 1, 1.0, 1).allowed
        call_args: List[Any] = [*args, self.host_id if beat else ""]
        self.stat("redis_calls", 1)
        try:
            reply = [int(v) for v in await self.within_timeout(self._lease(keys=keys, args=call_args))]
        except Exception as error:  # noqa: BLE001 - Redis slow or down: the policy answers
            self.stat("redis_wait_us", 0 if ahead else int((_clock_s() - sent) * 1e6))
            # A call that timed out may still have run: its grants are then stranded (counted,
            # never spent) and its debts charged while they are also kept here (charged twice):
            # both err towards admitting less, never more.
            self._restore_debts(limits, debts)
            self._failed(error)
            if ahead:
                return [(0, 0)] * len(limits)
            return self._policy_answers(limits, f"{type(error).__name__}: {error}")
        self.stat("redis_wait_us", 0 if ahead else int((_clock_s() - sent) * 1e6))
        self._answered()
        # Kept for an hour: through an outage it is what the local share divides by.
        if reply[-1]:
            self.region.value_set(HOSTS_HEARD, 0, reply[-1], 3600.0)
        self.stat("granted_units", sum(reply[4 * n] for n in range(len(limits))))
        out = []
        for n, (lim, want) in enumerate(zip(limits, wants)):
            grant, start, now, counter = reply[4 * n: 4 * n + 4]
            # Whole seconds of the window left for sure: Redis's `now` is truncated, and
            # `sent` was read before the call, so sent + left is never past the true end.
            left = start + lim.window_s - now - 1
            self._deadlines[lim.counter_key] = (start, int(sent + left) if left > 0 else 0)
            self._sized(lim, want, sent, counter)
            if grant < lim.cost and lim.dry_poll:
                self.region.value_set(self._dry_key(lim), start, 1, min(self.poll_s, max(left, 0.001)))
            out.append((grant, start))
        return out

    def _keep(self, lim: Limit, start: int, units: int) -> None:
        """Puts `units` granted in window `start` into the host's lease, if time is left to
        spend them; otherwise they stay counted in Redis and unspent (stranded)."""
        window, end = self._deadlines.get(lim.counter_key, (0, 0))
        if window != start:
            end = 0
        # Window 0: units the down policy admitted, not granted by Redis: never kept.
        if units > 0 and start and end > _clock_s():
            self.region.lease_grant(lim.counter_key, start, units, end)
        elif units > 0 and start:
            self.stat("stranded_units", units)

    def settle(self, counter_key: str, delta: int, window: Optional[int] = None) -> int:
        """A post-call adjustment of a counter (LiteLLM's reconciliation, actual - reserved),
        made in the host's live lease of the counter instead of Redis when there is one (of
        `window`, when the adjustment is guarded by it): a refund goes into the lease, an extra
        charge is taken from it. Redis's counter holds leased units either way, so its count of
        the window stays what LiteLLM's INCRBY would make it. Returns what is left for Redis:
        0, or `delta` when the lease cannot take it (no window of this process's refills live,
        or too few units for a charge)."""
        if delta < 0 and window is None:
            # A refund while the host owes Redis units it admitted without it (the down policy)
            # cancels part of that debt: sent now, it would make Redis count less than was
            # admitted until the debt is charged. Only whole: a part would be sent twice.
            netted = self._take_debt(counter_key, -delta)
            if netted == -delta:
                self.stat("settled_units", netted)
                return 0
            if netted:
                self.region.counter_add(self._debt_key(counter_key), netted, 0.0)
        # The window this process last refilled in, while it is live: a spent lease is refilled
        # by a refund, a lease of a newer window (another worker's refill) is not this one.
        known, end = self._deadlines.get(counter_key, (0, 0))
        stamp, _ = self.region.lease_left(counter_key)
        if not delta or not known or end <= _clock_s() or window not in (None, known) or stamp not in (0, known):
            return delta
        stamp = known
        if delta < 0:
            if not self.region.lease_grant(counter_key, stamp, -delta, end):
                return delta
            self.stat("settled_units", -delta)
            return 0
        taken, took_from, _ = self.region.lease_take(counter_key, delta)
        if taken and took_from != stamp:  # another window's lease: not the one this charge is of
            self.region.lease_untake(counter_key, took_from, delta)
            return delta
        if not taken:
            return delta
        self.stat("settled_units", delta)
        return 0

    async def _return_idle(self) -> None:
        """Gives back the leases of keys this process has not asked for in idle_s, so that
        units a host no longer needs reach the hosts still asking (they poll every poll_s)."""
        while True:
            await asyncio.sleep(self.idle_s / 2)
            now = _clock_s()
            idle = [k for k, t in self._last_use.items() if now - t >= self.idle_s]
            # Before the keys are forgotten: their debts would wait for a request to charge them.
            await self.charge_debts()
            if not idle:
                continue
            try:
                await self.give_back(idle)
            except Exception as error:  # noqa: BLE001 - the units stay stranded until the window ends
                log.warning("fast_litellm: returning idle leases to Redis failed: %s", error)
            for k in idle:  # a process forgets the keys it stopped using: no growth with keys seen
                if now - self._last_use.get(k, now) >= self.idle_s and not self.region.counter_get(self._debt_key(k)):
                    self._last_use.pop(k, None)
                    self._seen.pop(k, None)
                    self._deadlines.pop(k, None)

    async def close(self) -> int:
        """Stops the idle returns, charges the debts and gives every lease back (shutdown)."""
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
        # Their units are kept before the leases are given back (at most 6 timeouts each).
        await asyncio.gather(*self._ahead, return_exceptions=True)
        await self.charge_debts()
        return await self.give_back()

    def _take_unspent(self, keys: Optional[Sequence[str]]) -> Optional[Tuple[List[str], List[int]]]:
        """Takes the unspent units of the leases of `keys` (default: every key this process has
        used) out of the region, so that no worker spends what is being returned: the return
        script's KEYS and ARGV, None when there is nothing to return."""
        redis_keys: List[str] = []
        args: List[int] = []
        for key in list(self._seen) if keys is None else keys:
            lim = self._seen.get(key)
            if lim is None:
                continue
            _, left = self.region.lease_left(key)
            # The take names the window they are of.
            taken, stamp, _ = self.region.lease_take(key, left) if left else (False, 0, 0)
            if taken:
                redis_keys += [lim.window_key, lim.counter_key]
                args += [stamp, left]
        return (redis_keys, args) if redis_keys else None

    async def give_back(self, keys: Optional[Sequence[str]] = None) -> int:
        """Returns the unspent units of the leases of `keys` (default: every key this process
        has used) to Redis, guarded by the window they were granted in. Returns the units
        given back."""
        taken = self._take_unspent(keys)
        if taken is None:
            return 0
        self.stat("redis_calls", 1)
        returned = sum(int(v) for v in await self._return(keys=taken[0], args=taken[1]))
        self.stat("returned_units", returned)
        return returned

    def give_back_at_exit(self, sync_return: Any) -> None:
        """At a worker's exit (its event loop is gone): `give_back` through a synchronous
        client's RETURN_SCRIPT, so that a stopping worker's leases reach the other hosts now
        rather than at their window's end."""
        taken = self._take_unspent(None)
        if taken is None:
            return
        try:
            returned = sum(int(v) for v in sync_return(keys=taken[0], args=taken[1]))
        except Exception as error:  # noqa: BLE001 - exiting: they stay stranded until the window ends
            log.warning("fast_litellm: leases not given back to Redis at exit: %s", error)
            return
        self.stat("redis_calls", 1)
        self.stat("returned_units", returned)
