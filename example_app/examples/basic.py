"""The two-line adoption: ``CacheManager().init_app(app)`` and ``@cache_config``.

A list and a detail endpoint are cached in the default in-process memory
backend; the writes invalidate exactly what they change (their own path, what
lies under it and its ancestors), with nothing to configure.

Run it::

    uvicorn example_app.examples.basic:app

    curl -si localhost:8000/books | grep -i x-cache        # MISS, then HIT
    curl -si -X POST 'localhost:8000/books?title=Solaris'  # 201: /books is invalidated
    curl -si localhost:8000/books | grep -i x-cache        # MISS, with the new book
"""

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from intelligent_cache import CacheBackend, CacheManager, cache_config


class Book(BaseModel):
    id: int
    title: str


def create_app(backend: CacheBackend | None = None) -> FastAPI:
    """The app; ``backend`` defaults to a bounded ``MemoryBackend``."""
    books = {1: Book(id=1, title="Dune"), 2: Book(id=2, title="Hyperion")}
    app = FastAPI(title="intelligent-cache: basic")
    CacheManager(backend, default_ttl=60).init_app(app)  # line 1, before the routes

    @app.get("/books")
    @cache_config(ttl_seconds=300)  # line 2, on each endpoint to cache
    async def list_books() -> list[Book]:
        return list(books.values())

    @app.get("/books/{book_id}")
    @cache_config(ttl_seconds=300)
    async def get_book(book_id: int) -> Book:
        if book_id not in books:
            raise HTTPException(status_code=404, detail="no such book")  # 404s are not stored
        return books[book_id]

    @app.post("/books", status_code=201)
    async def add_book(title: str) -> Book:
        # A successful write to /books invalidates /books and everything under it.
        book = Book(id=max(books) + 1, title=title)
        books[book.id] = book
        return book

    @app.put("/books/{book_id}")
    async def rename_book(book_id: int, title: str) -> Book:
        # Invalidates /books/{book_id} and its ancestor /books, not the other books.
        if book_id not in books:
            raise HTTPException(status_code=404, detail="no such book")  # a failed write invalidates nothing
        books[book_id] = Book(id=book_id, title=title)
        return books[book_id]

    return app


app = create_app()
