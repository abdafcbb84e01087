"""A Python workflow whose steps speak standard wasi:http through the
bindings componentize-py generates (not weft's `fetch`): a GET, a POST with
a secret in a header, a host off the allow-list, and a request outside any
step. The Rust twin is tests/guests/wasi-http."""

from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world.imports import outgoing_handler, streams
from wit_world.imports import wasi_http_types as http

from workers import WorkflowEntrypoint


def request(method: str, url: str, headers=(), body: bytes = b""):
    """Sends a request and reads the answer, blocking: [status, text], or
    the error code's name."""
    parts = urlsplit(url)
    req = http.OutgoingRequest(http.Fields.from_list([(k, v.encode()) for k, v in headers]))
    req.set_method(http.Method_Post() if method == "POST" else http.Method_Get())
    req.set_scheme(http.Scheme_Http())
    req.set_authority(parts.netloc)
    req.set_path_with_query(parts.path or "/")
    out = req.body()
    try:
        answer = outgoing_handler.handle(req, None)
    except Err as e:
        return type(e.value).__name__
    if body:
        with out.write() as stream:
            stream.blocking_write_and_flush(body)
    http.OutgoingBody.finish(out, None)
    with answer.subscribe() as ready:
        ready.block()
    got = answer.get()
    inner = got.value
    if isinstance(inner, Err):
        return type(inner.value).__name__
    res = inner.value
    text = b""
    incoming = res.consume()
    with incoming.stream() as s:
        while True:
            try:
                text += s.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise
    return [res.status(), text.decode()]


class WasiHttp(WorkflowEntrypoint):
    async def run(self, event, step):
        url = event["payload"]["url"]

        @step.do("get")
        async def get():
            return request("GET", url)

        @step.do("post")
        async def post():
            key = self.env.API_KEY
            return request("POST", url, [("authorization", f"Bearer {key}")], b"order 42")

        @step.do("denied", config={"retries": {"limit": 0}})
        async def denied():
            return request("GET", "http://example.invalid/")

        got = await get()
        posted = await post()
        refused = await denied()
        outside = request("GET", url)
        await step.sleep("after", event["payload"].get("ms", 0) / 1000)
        return {"get": got, "post": posted, "denied": refused, "outside": outside}
