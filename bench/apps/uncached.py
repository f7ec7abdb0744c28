"""The plain FastAPI endpoint, uncached."""

from fastapi import FastAPI

from .common import Item, Limit, Page, make_items

app = FastAPI()


@app.get("/items", response_model=list[Item])
async def items(page: int = Page, limit: int = Limit) -> list[Item]:
    return make_items(page, limit)
