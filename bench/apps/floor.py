"""FastAPI's floor: a constant Response, no parameters."""

from fastapi import FastAPI, Response

from .common import make_items

BODY = ("[" + ",".join(item.model_dump_json() for item in make_items(1, 20)) + "]").encode()

app = FastAPI()


@app.get("/items")
async def items() -> Response:
    return Response(BODY, media_type="application/json")
