"""One ASGI app per benchmarked variant, all serving the same ~1.1 KB JSON page."""
