"""Python test workflows for the shared isolation mode (tests/e2e/shared.rs):
many runs in one interpreter. `Shared` picks a scenario by
payload["scenario"]; `SharedV2` replays as `Shared` does and says it is v2.
"""

import asyncio
import os
import random
import time

from weft import WorkflowEntrypoint, fetch

# Module-level state, which runs in a shared instance share.
RUNS_SEEN = []


class Scenarios:
    VERSION = 0

    async def run(self, event, step):
        p = event["payload"]
        RUNS_SEEN.append(event["instanceId"])
        return await getattr(self, "s_" + p["scenario"])(event, step, p)

    async def s_mix(self, event, step, p):
        """Each run's output is made of its own id, input, clock and
        random values, with steps and timers interleaved with other runs."""
        me = event["instanceId"]
        r = random.random()
        started = time.time()
        acc = []
        for i in range(p["n"]):

            @step.do(f"m{i}")
            async def m():
                await asyncio.sleep(random.random() / 100)
                return f"{me}:{i}:{p['seed']}"

            acc.append(await m())
            await asyncio.sleep(0.001)
        # Named after this run's random value: a replay that drew another
        # value would be refused as non-deterministic.
        await step.sleep(f"nap-{int(r * 1_000_000)}", p["nap"])
        return {"me": me, "acc": acc, "r": r, "started": started, "seed": p["seed"], "v": self.VERSION}

    async def s_counted(self, event, step, p):
        """Steps that each report to a loopback counter, then a wait."""
        base = p["url"] + "/hit/" + event["instanceId"] + "-"

        def hit(name):
            @step.do(name, config={"retries": {"limit": 0}})
            async def count():
                r = await fetch(base + name, method="POST")
                return int(await r.text())

            return count

        total = 0
        for i in range(p["n"]):
            total += await hit(f"s{i}")()
        ev = await step.wait_for_event("go", "go")
        total += await hit("after")()
        return {"total": total, "event": ev["payload"], "v": self.VERSION}

    async def s_crash_on_event(self, event, step, p):
        """Traps the interpreter (abort(): not an exception) in a step once
        told to, twice (one retry)."""
        await step.wait_for_event("crash", "crash")

        @step.do("crash", config={"retries": {"limit": 1, "delay": 0.01}})
        async def crash():
            os.abort()

        try:
            await crash()
        except Exception as e:
            return {"crash": type(e).__name__, "message": str(e)}
        return {"crash": None}


    async def s_storm(self, event, step, p):
        """Traps the interpreter in every attempt of a step with many
        retries and no delay: a trap storm."""

        @step.do("crash", config={"retries": {"limit": p["retries"], "delay": 0}})
        async def crash():
            os.abort()

        try:
            await crash()
        except Exception as e:
            return {"crash": type(e).__name__}
        return {"crash": None}


class Shared(Scenarios, WorkflowEntrypoint):
    VERSION = 1


class SharedV2(Scenarios, WorkflowEntrypoint):
    VERSION = 2
