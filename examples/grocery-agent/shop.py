"""A tiny local "model" and shop for the grocery agent, so the example runs
offline. Standard library only.

    python3 shop.py [PORT]      # prints: listening on http://127.0.0.1:PORT

POST /model   {"request": "..."}  -> {"items": [...]}   (a keyword "model")
GET  /inventory?item=NAME          -> {"item", "in_stock", "price"}
POST /order   {"items": [...]}     -> {"order": N, "total": ...}
GET  /orders                       -> every order placed (for tests)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

CATALOG = {"milk": 1.2, "eggs": 2.5, "bread": 2.0, "apples": 3.0, "coffee": 6.5, "butter": 2.2}
OUT_OF_STOCK = {"butter"}
ORDERS: list[dict] = []


class Shop(BaseHTTPRequestHandler):
    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self):
        n = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/inventory":
            item = parse_qs(url.query).get("item", [""])[0]
            self._send(200, {"item": item, "in_stock": item in CATALOG and item not in OUT_OF_STOCK,
                             "price": CATALOG.get(item)})
        elif url.path == "/orders":
            self._send(200, ORDERS)
        else:
            self._send(404, {"error": "no such path"})

    def do_POST(self):
        url = urlparse(self.path)
        if url.path == "/model":
            words = self._body().get("request", "").lower().replace(",", " ").split()
            items = [w for w in dict.fromkeys(words) if w in CATALOG or w.rstrip("s") in CATALOG]
            self._send(200, {"items": items})
        elif url.path == "/order":
            items = self._body().get("items", [])
            order = {"order": len(ORDERS) + 1, "items": items,
                     "total": round(sum(CATALOG.get(i, 0) for i in items), 2)}
            ORDERS.append(order)
            self._send(200, order)
        else:
            self._send(404, {"error": "no such path"})

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    server = ThreadingHTTPServer(("127.0.0.1", port), Shop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
