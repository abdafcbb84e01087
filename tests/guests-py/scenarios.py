"""A Python test workflow whose behaviour is chosen by payload["scenario"].

Each scenario exercises one item of the Python SDK; tests/e2e/python.rs
drives them. Step bodies print `EXEC <name>` so tests can count executions
outside the journal.
"""

import asyncio
import random
import time

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError


class PaymentDeclined(Exception):
    pass


class Scenarios(WorkflowEntrypoint):
    async def run(self, event, step):
        p = event["payload"]
        handler = getattr(self, "s_" + p["scenario"].replace("-", "_"))
        return await handler(event, step, p)

    async def s_noop(self, event, step, p):
        return None

    async def s_memory_bomb_body(self, event, step, p):
        hog = []
        while True:
            hog.append(bytearray(8 << 20))

    async def s_memory_bomb_step(self, event, step, p):
        @step.do("hog", config={"retries": {"limit": 0, "delay": 0}})
        async def hog():
            blocks = []
            while True:
                blocks.append(bytearray(8 << 20))

        try:
            await hog()
        except Exception as e:
            return {"caught": type(e).__name__, "message": str(e)}

    async def s_basic(self, event, step, p):
        @step.do("a")
        async def a():
            return 20

        @step.do("b")
        async def b():
            return 22

        @step.do("greet")
        async def greet():
            return "hello " + event["instanceId"]

        va = await a()
        vb = va + await b()
        return {"a": va, "b": vb, "greeting": await greet()}

    async def s_event_fields(self, event, step, p):
        return {
            "payload": event["payload"],
            "instanceId": event["instanceId"],
            "workflowName": event["workflowName"],
            "timestampIsUtc": event["timestamp"].tzinfo is not None,
        }

    async def s_dag(self, event, step, p):
        @step.do()
        async def fetch_user():
            print("EXEC fetch_user")
            await asyncio.sleep(0.3)
            return {"id": 7}

        @step.do()
        async def fetch_orders():
            print("EXEC fetch_orders")
            await asyncio.sleep(0.3)
            return [1, 2, 3]

        @step.do("summary", concurrent=True)
        async def summarize(fetch_user, fetch_orders, ctx):
            return {"user": fetch_user["id"], "orders": len(fetch_orders), "step": ctx.step_name}

        @step.do("explicit", depends=[fetch_user])
        async def explicit(fetch_user):
            return fetch_user["id"] * 2

        summary = await summarize()
        # fetch_user already ran as a dependency: its value is reused.
        doubled = await explicit()
        return {"summary": summary, "doubled": doubled}

    async def s_depends_modes(self, event, step, p):
        @step.do()
        async def dep_1():
            return "one"

        @step.do()
        async def dep_2():
            return "two"

        # Legacy mode (Cloudflare's DAG example): results by position,
        # whatever the parameters are called.
        @step.do("positional", depends=[dep_1, dep_2], concurrent=True)
        async def final_step(res1, res2):
            return f"{res1}+{res2}"

        @step.do("positional-ctx", depends=[dep_2])
        async def with_ctx(ctx, res):
            return f"{res}@{ctx.step_name}"

        @step.do("miscounted", depends=[dep_1])
        async def miscounted(a, b):
            return "never"

        @step.do("implicit")
        async def implicit(dep_2, dep_1):
            return f"{dep_1}|{dep_2}"

        @step.do("unexpected")
        async def unexpected(dep_1, other=1):
            return "never"

        errors = []
        for fn in (miscounted, unexpected):
            try:
                await fn()
            except TypeError as e:
                errors.append(str(e))
        return {
            "positional": await final_step(),
            "ctx": await with_ctx(),
            "implicit": await implicit(),
            "errors": errors,
        }

    async def s_bug_outside(self, event, step, p):
        @step.do()
        async def order():
            return {"items": {}}

        placed = await order()
        return price_of(placed["items"], p.get("sku", "missing sku"))

    async def s_retries(self, event, step, p):
        @step.do("flaky", config={"retries": {"limit": 4, "delay": 50, "backoff": "constant"}, "timeout": "30 seconds"})
        async def flaky(ctx):
            if ctx.attempt < 3:
                raise ValueError(f"failure {ctx.attempt}")
            return {"attempt": ctx.attempt, "config": ctx["config"]["retries"]["backoff"]}

        return await flaky()

    async def s_exhausted(self, event, step, p):
        @step.do("doomed", config={"retries": {"limit": 1, "delay": "10 milliseconds"}})
        async def doomed():
            raise ValueError("bad value")

        @step.do("declined", config={"retries": {"limit": 1, "delay": 10}})
        async def declined():
            raise PaymentDeclined("card 4242 declined")

        out = {}
        try:
            await doomed()
        except ValueError as e:
            out["builtin"] = [type(e).__name__, str(e)]
        try:
            await declined()
        except PaymentDeclined as e:
            out["custom"] = [type(e).__name__, str(e)]
        return out

    async def s_non_retryable(self, event, step, p):
        @step.do("card", config={"retries": {"limit": 5, "delay": 10}})
        async def card():
            raise NonRetryableError("card declined")

        try:
            await card()
        except NonRetryableError as e:
            return {"caught": type(e).__name__, "message": str(e)}

    async def s_bad_return(self, event, step, p):
        @step.do("tuple_set")
        async def tuple_set():
            return {1, 2}

        try:
            await tuple_set()
        except TypeError as e:
            return {"caught": "TypeError", "message": str(e)}

    async def s_sleep(self, event, step, p):
        @step.do()
        async def before():
            return 1

        b = await before()
        await step.sleep("nap", p.get("duration", "1 second"))
        await step.sleep_until("until", time.time() + 0.2)

        # Depends on `before`, which the replay answered from the journal.
        @step.do()
        async def after(before):
            return before + 1

        return {"before": b, "after": await after()}

    async def s_events(self, event, step, p):
        second = await step.wait_for_event("wait-second", "second")
        first = await step.wait_for_event("wait-first", "first", timeout="1 hour")
        return {
            "first": first["payload"]["by"],
            "second": second["payload"],
            "type": first["type"],
            "hasTimestamp": first["timestamp"].year >= 2024,
        }

    async def s_event_timeout(self, event, step, p):
        from workers.workflows import WaitTimeoutError

        try:
            await step.wait_for_event("approval", "approve", timeout="300 milliseconds")
        except WaitTimeoutError as e:
            return {"timedOut": True, "error": type(e).__name__}
        return {"timedOut": False}

    async def s_gather(self, event, step, p):
        @step.do()
        async def left():
            await asyncio.sleep(1)
            return "L"

        @step.do()
        async def right():
            await asyncio.sleep(1)
            return "R"

        a, b, _, ev = await asyncio.gather(
            left(),
            right(),
            step.sleep("pause", 1),
            step.wait_for_event("go", "go"),
        )
        return {"a": a, "b": b, "event": ev["payload"]}

    async def s_rollback(self, event, step, p):
        @step.with_rollback("reserve")
        async def reserve():
            print("EXEC reserve")
            return {"seat": "12A"}

        @reserve.undo
        async def release(error, value):
            print(f"UNDO reserve {value['seat']} because {error}")

        @step.with_rollback("charge")
        async def charge():
            print("EXEC charge")
            return {"amount": 100}

        @charge.undo
        async def refund(error, value):
            print(f"UNDO charge {value['amount']}")
            return {"refund": f"rf-{value['amount']}"}

        @step.do("ship", config={"retries": {"limit": 0}})
        async def ship():
            raise NonRetryableError("no courier")

        await reserve()
        await charge()
        try:
            await ship()
        except NonRetryableError as e:
            undone = await step.rollback_all(e)
            return {"rolledBack": True, "reason": str(e), "undone": undone}
        return {"rolledBack": False}

    async def s_nondet(self, event, step, p):
        now = time.time()
        r = random.random()
        await step.sleep(f"nap-{int(r * 1000)}", p.get("seconds", 1))
        return {"now": now, "random": r}

    async def s_long(self, event, step, p):
        print("BODY-START")
        acc = 17
        for i in range(p["n"]):

            @step.do(f"work-{i}")
            async def work():
                print(f"EXEC work-{i}")
                end = time.monotonic() + p["ms"] / 1000
                while time.monotonic() < end:
                    pass
                return (acc * 31 + i) % 1_000_000_007

            acc = await work()
        return {"acc": acc, "steps": p["n"]}

    async def s_parent(self, event, step, p):
        child = p.get("child", "scenarios")
        ok = await step.run_workflow(child, {"scenario": "basic"})
        try:
            await step.run_workflow(child, {"scenario": "fail"})
        except Exception as e:
            return {"child": ok, "error": [type(e).__name__, str(e)]}
        return {"child": ok, "error": None}

    async def s_fetch(self, event, step, p):
        from weft import FetchNotInStep, fetch

        url = p["url"]

        @step.do(config={"retries": {"limit": 0}})
        async def get_a():
            r = await fetch(url)
            return {"status": r.status, "body": await r.text()}

        @step.do(config={"retries": {"limit": 0}})
        async def get_b():
            r = await fetch(url, method="GET", headers={"x-test": "1"})
            return {"status": r.status, "body": await r.text()}

        a, b = await asyncio.gather(get_a(), get_b())
        outside = None
        try:
            await fetch(url)
        except FetchNotInStep as e:
            outside = type(e).__name__
        await step.sleep("after-fetch", p.get("seconds", 0))
        return {"a": a, "b": b, "outside": outside}

    async def s_step_cpu(self, event, step, p):
        # As the Rust scenario "step-cpu": one step waits on a slow server
        # past the CPU limit, one spins beside it.
        from weft import fetch

        url = p["url"]

        @step.do("wait-slow", config={"retries": {"limit": 0}})
        async def wait_slow():
            r = await fetch(url)
            return r.status

        @step.do("spin", config={"retries": {"limit": 1, "delay": 0.01}})
        async def spin():
            await asyncio.sleep(0.05)
            while True:
                pass

        async def caught():
            try:
                await spin()
            except Exception as e:
                return [type(e).__name__, str(e)]

        waited, (name, message) = await asyncio.gather(wait_slow(), caught())
        return {"waited": waited, "spun": name, "message": message}

    async def s_crash_sibling(self, event, step, p):
        # An interpreter crash (abort(): a trap, not an exception) in one
        # of two concurrent steps fails that step alone.
        import os

        @step.do("crash", config={"retries": {"limit": 1, "delay": 0.01}})
        async def crash():
            await asyncio.sleep(0.05)
            os.abort()

        @step.do("sibling", config={"retries": {"limit": 0}})
        async def sibling():
            await asyncio.sleep(0.3)
            return "fine"

        async def caught():
            try:
                await crash()
            except Exception as e:
                return [type(e).__name__, str(e)]

        fine, (name, message) = await asyncio.gather(sibling(), caught())
        return {"sibling": fine, "crash": name, "message": message}

    async def s_cluster(self, event, step, p):
        """For the multi-host test (see the Rust guest's `cluster`)."""
        from weft import fetch

        base = p["url"] + "/" + event["instanceId"] + "/"

        def hit(name):
            @step.do(name)
            async def count():
                r = await fetch(base + name)
                return int((await r.text()).strip() or 0)

            return count

        total = 0
        for i in range(p["n"]):
            total += i * i + min(await hit(f"s{i}")(), 1)
        await step.sleep("nap", p["ms"] / 1000)
        ev = await step.wait_for_event("go", "go")
        last = await hit("after")()
        return {"steps": p["n"], "sum": total, "event": ev["payload"], "after": min(last, 1)}

    async def s_secret(self, event, step, p):
        @step.do()
        async def use_secret():
            key = self.env.API_KEY
            print(f"the key is {key}")
            return f"key={key}"

        outside = None
        try:
            self.env.API_KEY
        except RuntimeError:
            outside = "NotInStep"
        return {"got": await use_secret(), "outside": outside}

    async def s_loop(self, event, step, p):
        out = []
        for i in range(p["n"]):

            @step.do("tick")
            async def tick():
                return i * 10

            out.append(await tick())
        return out

    async def s_steps_then_wait(self, event, step, p):
        done = await self.s_loop(event, step, p)
        ev = await step.wait_for_event("go", "go")

        @step.do()
        async def last():
            # When the step after the replay started, for the benchmark.
            return time.time_ns() // 1000

        return {"steps": len(done), "event": ev["payload"], "last": await last()}

    async def s_fail(self, event, step, p):
        raise ValueError("order 42 has no items")


def price_of(items, sku):
    # A bug outside any step: the traceback names this line.
    return items[sku]
