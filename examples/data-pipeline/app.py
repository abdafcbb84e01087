"""A data pipeline in DAG style.

Ingests three sources concurrently (one of them flaky: it fails its first
attempts and is retried), validates and transforms the rows, and loads them
in batches. Each batch load can be undone; when publishing fails for good,
the pipeline rolls back the batches it loaded, newest first.

Steps are idempotent: a batch is keyed by its number, so re-running a load
after a crash writes the same rows again, not new ones.
"""

from workers import WorkflowEntrypoint
from workers.workflows import NonRetryableError

SOURCES = {
    "orders": [{"id": 1, "sku": "apple", "qty": 3}, {"id": 2, "sku": "pear", "qty": -1}, {"id": 3, "sku": "fig", "qty": 2}],
    "catalog": [{"sku": "apple", "price": 0.5}, {"sku": "pear", "price": 0.75}, {"sku": "fig", "price": 1.25}],
    "stock": [{"sku": "apple", "left": 10}, {"sku": "fig", "left": 1}],
}


class Pipeline(WorkflowEntrypoint):
    async def run(self, event, step):
        cfg = event["payload"] or {}
        fast = {"retries": {"limit": 3, "delay": cfg.get("retry_delay", "200 milliseconds"), "backoff": "exponential"}}

        @step.do(config=fast)
        async def ingest_orders():
            return SOURCES["orders"]

        @step.do(config=fast)
        async def ingest_catalog(ctx):
            # A flaky source: the first two attempts fail, then it answers.
            if ctx.attempt <= cfg.get("flaky_failures", 2):
                raise ConnectionError(f"catalog service unavailable (attempt {ctx.attempt})")
            return SOURCES["catalog"]

        @step.do(config=fast)
        async def ingest_stock():
            return SOURCES["stock"]

        @step.do(concurrent=True)
        async def validate(ingest_orders, ingest_catalog, ingest_stock):
            skus = {c["sku"] for c in ingest_catalog}
            good = [o for o in ingest_orders if o["qty"] > 0 and o["sku"] in skus]
            rejected = [o["id"] for o in ingest_orders if o not in good]
            return {"orders": good, "rejected": rejected}

        @step.do()
        async def transform(validate, ingest_catalog, ingest_stock):
            price = {c["sku"]: c["price"] for c in ingest_catalog}
            left = {s["sku"]: s["left"] for s in ingest_stock}
            return [
                {"order": o["id"], "sku": o["sku"], "total": round(o["qty"] * price[o["sku"]], 2),
                 "in_stock": left.get(o["sku"], 0) >= o["qty"]}
                for o in validate["orders"]
            ]

        checked = await validate()
        # transform depends on validate: its finished value is reused.
        rows = await transform()
        loaded = []
        for n in range(0, len(rows), 1):
            batch = rows[n:n + 1]

            @step.with_rollback(f"load batch {n}")
            async def load():
                print(f"LOAD batch {n}: {batch}")
                return {"batch": n, "rows": len(batch)}

            @load.undo
            async def unload(error, value):
                print(f"UNDO batch {value['batch']} because {error}")

            loaded.append(await load())

        @step.do("publish", config={"retries": {"limit": 1, "delay": 10}})
        async def publish():
            if cfg.get("fail_publish"):
                raise NonRetryableError("the report bucket refused the upload")
            return {"published": len(rows)}

        try:
            report = await publish()
        except NonRetryableError as e:
            await step.rollback_all(e)
            return {"status": "rolled back", "reason": str(e), "batches": len(loaded)}
        return {"status": "loaded", "rows": rows, "report": report, "rejected": checked["rejected"]}
