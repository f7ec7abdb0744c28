"""Type aliases shared by the modules of the request path."""

from collections.abc import Sequence

__all__ = ["Header", "Headers"]

#: One raw header field as ASGI carries it: lower-case name, value.
Header = tuple[bytes, bytes]
#: A response's or request's raw header fields, in order.
Headers = Sequence[Header]
