"""One worker of one "host" in the host-tier tests: a real process attached to its host's
region, sending a plan of requests through fast_litellm.host_tier to a real Redis.

    python host_worker.py PLAN.json      -> prints one JSON line: what it admitted

PLAN: {"region", "redis_port", "hosts", "concurrency", "requests": [[limits, delay_s], ...],
       "policy"?, "give_back"?, "hold_s"?, "observe"?, "timeout_s"?}, each limit [window_key, counter_key, limit,
       cost, ttl_s, window_s].
With "observe", the report also has the refused requests and what each lease call granted and
each return gave back, read off Redis's replies to them.
"""

import asyncio
import json
import sys
import time


class Watched:
    """A redis-py client whose lease and return script replies are recorded: per lease call
    and pair [counter key, window start, units granted, time], per return [counter key,
    window stamp, units given back, time]."""

    def __init__(self, client, grants, returns):
        self.client, self.grants, self.returns = client, grants, returns

    def register_script(self, text):
        from fast_litellm.host_tier import LEASE_SCRIPT, RETURN_SCRIPT

        script = self.client.register_script(text)

        async def run(keys, args):
            reply = await script(keys=keys, args=args)
            now = time.time()
            if text == LEASE_SCRIPT:
                for i in range((len(keys) - 1) // 2):
                    self.grants.append([keys[2 * i + 1], int(reply[4 * i + 1]), int(reply[4 * i]), now])
            elif text == RETURN_SCRIPT:
                for i in range(len(keys) // 2):
                    self.returns.append([keys[2 * i + 1], int(args[2 * i]), int(reply[i]), now])
            return reply

        return run


async def main(plan):
    import redis.asyncio

    from fast_litellm import shm
    from fast_litellm.host_tier import HostTier, Limit

    region = shm.Region(plan["region"], capacity=1 << 14)
    client = redis.asyncio.Redis(host="127.0.0.1", port=plan["redis_port"])
    grants, returns, refused = [], [], []
    tier = HostTier(region, Watched(client, grants, returns) if plan.get("observe") else client,
                    hosts=plan["hosts"], down_policy=plan.get("policy", "local-share"),
                    timeout_s=plan.get("timeout_s", 0.25))
    waits = []
    gate = asyncio.Semaphore(plan.get("concurrency", 4))
    admitted = []

    async def one(limits, delay):
        await asyncio.sleep(delay)
        async with gate:
            lims = [Limit(*l) for l in limits]
            asked = time.time()
            a = await tier.admit(lims)
            decided = time.time()
            waits.append(decided - asked)
            if a.allowed:
                admitted.append({"limits": [[l.counter_key, w, l.cost] for l, w in zip(lims, a.windows)],
                                 "asked": asked, "decided": decided, "local": a.redis_calls == 0})
            else:
                refused.append({"limits": [[l.counter_key, l.cost] for l in lims], "asked": asked,
                                "decided": decided, "denied": lims[a.denied_index].counter_key,
                                "local": a.redis_calls == 0})

    print("ready", flush=True)
    await asyncio.gather(*(one(limits, delay) for limits, delay in plan["requests"]))
    if plan.get("give_back"):
        await tier.close()
    report = {"admitted": admitted, "max_wait_s": max(waits, default=0.0)}
    if plan.get("observe"):
        report.update(refused=refused, grants=grants, returns=returns)
    print(json.dumps(report), flush=True)
    if plan.get("hold_s"):
        await asyncio.sleep(plan["hold_s"])
    await client.aclose()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        asyncio.run(main(json.load(f)))
