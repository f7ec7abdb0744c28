"""The proxy as ``bench.conformance`` serves it: ``uvicorn bench.conformance_app:create --factory``.

``example_app.examples.http_proxy`` unchanged, except that every upstream request gets a
connection of its own. The suite deliberately sends responses whose ``Content-Length`` is
shorter than their body (``headers-store-Content-Length``, ``304-etag-update-response-Content-Length``);
httpcore then returns the connection to its pool with the extra bytes still buffered, and
whichever request of another test reuses it fails with "illegal status line". Without
keep-alive those two tests fail alone, and a run's score does not depend on timing.
"""

import httpx
from fastapi import FastAPI

from example_app.examples.http_proxy import create_app


def create() -> FastAPI:
    """The proxy in front of ``UPSTREAM_URL``, without upstream keep-alive."""
    return create_app(
        transport=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=256, max_keepalive_connections=0))
    )
