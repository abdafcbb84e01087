"""A grocery agent: turns a request into a shopping list with a "model",
checks the inventory of every item concurrently, asks a human to approve,
and places the order. All calls go to the local shop (shop.py) from steps,
so a crash never places an order twice.
"""

import asyncio
import json

from weft import fetch
from workers import WorkflowEntrypoint


class GroceryAgent(WorkflowEntrypoint):
    async def run(self, event, step):
        shop = event["payload"]["shop"].rstrip("/")
        request = event["payload"]["request"]

        @step.do("plan shopping list")
        async def plan():
            r = await fetch(f"{shop}/model", method="POST", body=json.dumps({"request": request}),
                            headers={"content-type": "application/json"})
            return (await r.json())["items"]

        items = await plan()

        def checker(item):
            @step.do(f"check {item}")
            async def check():
                r = await fetch(f"{shop}/inventory?item={item}")
                return await r.json()

            return check

        stock = await asyncio.gather(*(checker(i)() for i in items))
        available = [s["item"] for s in stock if s["in_stock"]]
        missing = [s["item"] for s in stock if not s["in_stock"]]
        total = round(sum(s["price"] for s in stock if s["in_stock"]), 2)

        @step.do("ask for approval")
        async def ask():
            print(f"about to order {available} for {total} (missing: {missing}); "
                  f"send `approval` with {{\"approved\": true}} or false")
            return True

        await ask()
        answer = await step.wait_for_event("approval", "approval", timeout=event["payload"].get("timeout", "1 day"))
        if not (answer["payload"] or {}).get("approved"):
            return {"status": "cancelled", "items": available, "missing": missing}

        @step.do("place order")
        async def order():
            r = await fetch(f"{shop}/order", method="POST", body=json.dumps({"items": available}),
                            headers={"content-type": "application/json"})
            return await r.json()

        placed = await order()
        return {"status": "ordered", "order": placed["order"], "items": available, "missing": missing,
                "total": placed["total"]}
