"""One worker of one "host" in the host-tier tests: a real process attached to its host's
region, sending a plan of requests through fast_litellm.host_tier to a real Redis.

    python host_worker.py PLAN.json      -> prints one JSON line: what it admitted

PLAN: {"region", "redis_port", "hosts", "concurrency", "requests": [[limits, delay_s], ...],
       "policy"?, "give_back"?, "hold_s"?}, each limit [window_key, counter_key, limit, cost, ttl_s, window_s].
"""

import asyncio
import json
import sys
import time


async def main(plan):
    import redis.asyncio

    from fast_litellm import shm
    from fast_litellm.host_tier import HostTier, Limit

    region = shm.Region(plan["region"], capacity=1 << 14)
    client = redis.asyncio.Redis(host="127.0.0.1", port=plan["redis_port"])
    tier = HostTier(region, client, hosts=plan["hosts"], down_policy=plan.get("policy", "local-share"))
    waits = []
    gate = asyncio.Semaphore(plan.get("concurrency", 4))
    admitted = []

    async def one(limits, delay):
        await asyncio.sleep(delay)
        async with gate:
            lims = [Limit(*l) for l in limits]
            asked = time.time()
            a = await tier.admit(lims)
            waits.append(time.time() - asked)
            if a.allowed:
                admitted.append({"limits": [[l.counter_key, w, l.cost] for l, w in zip(lims, a.windows)],
                                 "asked": asked, "local": a.redis_calls == 0})

    print("ready", flush=True)
    await asyncio.gather(*(one(limits, delay) for limits, delay in plan["requests"]))
    if plan.get("give_back"):
        await tier.close()
    print(json.dumps({"admitted": admitted, "max_wait_s": max(waits, default=0.0)}), flush=True)
    if plan.get("hold_s"):
        await asyncio.sleep(plan["hold_s"])
    await client.aclose()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
