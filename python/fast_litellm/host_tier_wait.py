"""The host tier's timeout on a Redis call, counted in the event loop's responsive time.

A plain `asyncio.wait_for` also counts the time the worker's own loop was too busy to read a
reply that had arrived: on a loaded host (a worker with dozens of requests in flight, more
workers than cores) a call Redis answered in a millisecond "outlasts" 250 ms, and the down
policy then admits beside Redis's grants (seen in CI: 31 and 34 admitted at rpm 30 over
three hosts). Here the wait is cut into SLICES slices, and each counts for its planned length
only, however late the loop wakes the waiter from it: a call gets timeout_s of a loop that
runs on time, and so at least SLICES turns of the loop to finish in (a redis-py call takes
several). A hung Redis still never holds a request for more than MAX_TIMEOUTS × timeout_s.
"""

import asyncio
from typing import Awaitable, Callable, Optional, TypeVar

T = TypeVar("T")

#: The wait is measured in this many steps of timeout / SLICES.
SLICES = 16
#: The longest wait, in timeouts, however late the loop runs.
MAX_TIMEOUTS = 6


async def within_timeout(call: Awaitable[T], timeout_s: Optional[float],
                         on_extended: Optional[Callable[[], None]] = None) -> T:
    """`call`'s result, or `asyncio.TimeoutError` (the call cancelled) once it has had
    `timeout_s` of a responsive loop, or MAX_TIMEOUTS × timeout_s in all. `on_extended` is
    called once if the wait goes on past timeout_s because the loop ran late. `timeout_s`
    None waits without limit, as `wait_for` does."""
    if timeout_s is None:
        return await call
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(call)
    begun = loop.time()
    step = timeout_s / SLICES
    slices = 0
    extended = False
    try:
        while slices < SLICES:
            done, _ = await asyncio.wait((task,), timeout=step)
            if done:
                return task.result()
            slices += 1
            waited = loop.time() - begun
            if waited >= timeout_s * MAX_TIMEOUTS:
                break
            if not extended and waited >= timeout_s and slices < SLICES:
                extended = True
                if on_extended is not None:
                    on_extended()
        # One more turn of the loop: a reply read in the turn that woke this waiter resumes
        # the call in it.
        await asyncio.sleep(0)
        if task.done():
            return task.result()
        raise asyncio.TimeoutError(f"no answer in {(loop.time() - begun) * 1000:.0f} ms "
                                   f"({slices * step * 1000:.0f} ms of a responsive event loop)")
    finally:
        if not task.done():
            task.cancel()
