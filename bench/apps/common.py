"""The shared endpoint: /items?page=&limit= returning 20 validated pydantic items (~1.1 KB)."""

from fastapi import Query
from pydantic import BaseModel


class Item(BaseModel):
    id: int
    name: str
    price: float
    tags: list[str]


def make_items(page: int, limit: int) -> list[Item]:
    start = (page - 1) * limit
    return [Item(id=i, name=f"item number {i}", price=i * 1.25, tags=["a", "b"]) for i in range(start, start + limit)]


Page = Query(1, ge=1, le=10_000)
Limit = Query(20, ge=1, le=100)
