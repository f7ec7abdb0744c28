"""What a write invalidates, expressed as generation counters.

Every stored entry records the values of the counters it depends on at the
moment its computation started; a lookup compares them with the current values
and treats any difference (or a missing counter) as a miss. Invalidating is
therefore a bounded number of counter changes (an increment, or a delete: a
deleted counter comes back with a new random value), whatever the number of
cached entries, and a response computed before a write can never be served
after it: its snapshot predates the change.

The counters of an entry for ``/spaces/1/items``::

    ~g:s:spaces          subtree of /spaces
    ~g:s:spaces:1        subtree of /spaces/1
    ~g:s:spaces:1:items  subtree of /spaces/1/items
    ~g:n:spaces:1:items  the node /spaces/1/items itself
    ~g:t:<tag>           one per tag of the route

A successful write to ``/spaces/1/items`` bumps ``~g:s:spaces:1:items`` (the
path and everything below it) and ``~g:n:spaces:1``, ``~g:n:spaces`` (each
ancestor below the root, exactly), leaving ``/spaces/2/...`` untouched.

The root is nobody's ancestor: a write to ``/`` invalidates ``GET /`` only
(its subtree would be the whole cache; use ``clear_all`` for that). Every
counter of a path therefore starts with its first segment, which lets the
Redis Cluster backend keep an entry and its counters in one hash slot.
"""

from collections.abc import Iterable

from .keys import counter_name, hierarchy, tag_counter_name

__all__ = ["generation_keys", "invalidation_keys", "tag_keys"]


def generation_keys(path: str, tags: Iterable[str] = ()) -> list[str]:
    """The counters an entry for ``path`` (with ``tags``) depends on."""
    segments = hierarchy(path)
    keys = [counter_name("s", segments[:depth]) for depth in range(1, len(segments) + 1)]
    keys.append(counter_name("n", segments))
    keys.extend(tag_keys(tags))
    return keys


def invalidation_keys(path: str) -> list[str]:
    """The counters a successful write to ``path`` bumps."""
    segments = hierarchy(path)
    if not segments:
        return [counter_name("n", segments)]
    keys = [counter_name("s", segments)]
    keys.extend(counter_name("n", segments[:depth]) for depth in range(len(segments) - 1, 0, -1))
    return keys


def tag_keys(tags: Iterable[str]) -> list[str]:
    """The counters of ``tags``."""
    return [tag_counter_name(tag) for tag in tags]
