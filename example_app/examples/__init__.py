"""Small runnable examples of intelligent-cache, one module per topic.

Each module has an ``app`` (serve it with ``uvicorn example_app.examples.<name>:app``)
and a ``create_app(...)`` factory taking the backend or the Redis URL:

- ``basic``: the two-line adoption, memory backend, a write that invalidates.
- ``redis_backend``: ``RedisBackend`` from ``IC_REDIS_URL``, shutdown, health.
- ``secured_admin``: the admin API behind a bearer token or an API key.
- ``per_user``: per-user entries (``vary_by``) and a dependency that runs on every HIT.
- ``custom_backend``: a complete backend of your own.
- ``tags``: tag invalidation, by a write and by a background worker.
- ``multi_worker``: several uvicorn workers sharing Redis, and their shared stats.

``tests/test_examples.py`` runs every one of them.
"""
