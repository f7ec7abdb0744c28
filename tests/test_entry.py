"""The stored-entry codec: round trips, and every kind of foreign or damaged data read as CorruptEntryError."""

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelligent_cache import CachedResponse, CorruptEntryError, IntelligentCacheError
from intelligent_cache.entry import FORMAT_VERSION, decode, encode, encode_value, storable_headers


def sample_entry(**overrides) -> CachedResponse:
    fields = {
        "status": 200,
        "headers": ((b"content-type", b"application/json"), (b"x-custom", b"\xff\x00 value"), (b"x-custom", b"again")),
        "body": b'{"a": 1}\x00\xff',
        "stored_at": 1_700_000_000.25,
        "ttl": 60.0,
        "generations": (4_294_967_297, 2**61 + 5),
        "path": "/spaces/1/items",
        "route": "/spaces/{space_id}/items",
        "tags": ("space:1", "items"),
    }
    fields.update(overrides)
    return CachedResponse(**fields)


def pack(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


# Positions of the fields in the stored list (entry.py's documented layout; later versions may append more).
FIELDS = ("magic", "version", "status", "headers", "body", "stored_at", "ttl", "generations", "path", "route", "tags")

REFERENCE = CachedResponse(
    status=200,
    headers=((b"content-type", b"text/plain"),),
    body=b"hello",
    stored_at=1_700_000_000.0,
    ttl=60.0,
    generations=(1, 2),
    path="/items",
    route="/items",
    tags=("t",),
)


def raw_fields(**overrides) -> list:
    """The stored list of REFERENCE, with some fields replaced."""
    items = msgpack.unpackb(encode(REFERENCE), raw=False)
    for name, value in overrides.items():
        items[FIELDS.index(name)] = value
    return items


# -- round trips -------------------------------------------------------------------------------------------


def test_round_trip():
    entry = sample_entry()
    decoded = decode(encode(entry))
    assert isinstance(decoded, CachedResponse)
    assert decoded == entry
    assert decoded.headers == entry.headers  # order and duplicates kept


def test_round_trip_of_minimal_entry():
    entry = CachedResponse(status=200, headers=(), body=b"", stored_at=0.0, ttl=1.0)
    assert decode(encode(entry)) == entry


def test_the_reference_layout_decodes():
    # The corrupt-data tests below alter one field of this list: unaltered, it must decode.
    items = raw_fields()
    assert items[: len(FIELDS)] == [
        "icr",
        FORMAT_VERSION,
        200,
        [[b"content-type", b"text/plain"]],
        b"hello",
        1_700_000_000.0,
        60.0,
        [1, 2],
        "/items",
        "/items",
        ["t"],
    ]
    assert decode(msgpack.packb(items, use_bin_type=True)) == REFERENCE


@settings(max_examples=200, derandomize=True, database=None)
@given(
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=8).map(tuple),
    body=st.binary(max_size=2000),
    stored_at=st.floats(0, 2e9),
    ttl=st.floats(0.001, 1e7),
    generations=st.lists(st.integers(0, 2**63 - 1), max_size=20).map(tuple),
    path=st.text(max_size=40),
    tags=st.lists(st.text(max_size=10), max_size=5).map(tuple),
)
def test_round_trip_property(status, headers, body, stored_at, ttl, generations, path, tags):
    entry = CachedResponse(
        status=status,
        headers=headers,
        body=body,
        stored_at=stored_at,
        ttl=ttl,
        generations=generations,
        path=path,
        route=path,
        tags=tags,
    )
    assert decode(encode(entry)) == entry


@pytest.mark.parametrize(
    "value",
    [{"total": 3, "items": ["a", "b"]}, [1, 2, 3], "text", 42, 1.5, b"bytes", None, True, {"nested": {"deep": [None]}}],
)
def test_plain_value_round_trip(value):
    assert decode(encode_value(value)) == value


def test_unencodable_value_raises_type_error():
    with pytest.raises(TypeError):
        encode_value(object())


def test_storable_headers_drop_hop_by_hop_date_and_markers():
    headers = [
        (b"content-type", b"text/plain"),
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"x-cache", b"MISS"),
        (b"age", b"3"),
        (b"x-unknown-end-to-end", b"kept"),
        (b"proxy-authenticate", b"Basic"),
    ]
    assert storable_headers(headers) == ((b"content-type", b"text/plain"), (b"x-unknown-end-to-end", b"kept"))


def test_fresh_until_the_ttl():
    entry = sample_entry(stored_at=100.0, ttl=10.0)
    assert entry.is_fresh(100.0)
    assert entry.is_fresh(109.999)
    assert not entry.is_fresh(110.0)
    assert entry.age(105.5) == 5.5
    assert entry.age(50.0) == 0.0  # never negative


# -- corrupt data ------------------------------------------------------------------------------------------


def truncations():
    data = encode(sample_entry())
    return [data[:cut] for cut in (0, 1, 2, 5, len(data) // 2, len(data) - 1)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"garbage", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\xff" * 32, id="high-bytes"),
        pytest.param(b'{"status": 200}', id="json"),
        pytest.param(encode(sample_entry()) + b"\x00", id="trailing-byte"),
        pytest.param(encode(sample_entry()) * 2, id="two-entries"),
        *(pytest.param(data, id=f"truncated-{len(data)}") for data in truncations()),
    ],
)
def test_corrupt_bytes_raise(data):
    with pytest.raises(CorruptEntryError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(msgpack.packb({"status": 200, "body": b"x"}, use_bin_type=True), id="dict"),
        pytest.param(msgpack.packb(None), id="nil"),
        pytest.param(msgpack.packb(200), id="int"),
        pytest.param(msgpack.packb("icr"), id="string"),
        pytest.param(msgpack.packb(b"icr", use_bin_type=True), id="bin"),
        pytest.param(msgpack.packb([]), id="empty-list"),
        pytest.param(pack("icr"), id="magic-only"),
        pytest.param(pack("icr", FORMAT_VERSION), id="magic-and-version"),
        pytest.param(msgpack.packb(raw_fields(magic="xyz"), use_bin_type=True), id="other-magic"),
        pytest.param(msgpack.packb(raw_fields(magic=b"icr"), use_bin_type=True), id="binary-magic"),
        pytest.param(msgpack.packb(raw_fields(magic="icv"), use_bin_type=True), id="value-magic-on-entry"),
        pytest.param(msgpack.packb(raw_fields(version=2), use_bin_type=True), id="future-version"),
        pytest.param(msgpack.packb(raw_fields(version=0), use_bin_type=True), id="old-version"),
        pytest.param(msgpack.packb(raw_fields(version="1"), use_bin_type=True), id="version-as-string"),
        pytest.param(msgpack.packb([*raw_fields(), "extra"], use_bin_type=True), id="extra-field"),
        pytest.param(msgpack.packb(raw_fields()[:-1], use_bin_type=True), id="missing-field"),
        pytest.param(pack("icv", FORMAT_VERSION, 1, 2), id="value-with-extra"),
        pytest.param(pack("icv", 2, 1), id="value-future-version"),
        pytest.param(pack("other", FORMAT_VERSION, 1), id="foreign-three-items"),
        pytest.param(msgpack.packb(msgpack.ExtType(1, b"icr")), id="ext-type"),
    ],
)
def test_foreign_msgpack_raises(data):
    with pytest.raises(CorruptEntryError):
        decode(data)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"status": "200"}, id="status-string"),
        pytest.param({"status": 200.0}, id="status-float"),
        pytest.param({"status": True}, id="status-bool"),
        pytest.param({"status": None}, id="status-nil"),
        pytest.param({"status": 99}, id="status-too-small"),
        pytest.param({"status": 600}, id="status-too-large"),
        pytest.param({"status": -200}, id="status-negative"),
        pytest.param({"headers": "content-type"}, id="headers-string"),
        pytest.param({"headers": 5}, id="headers-int"),
        pytest.param({"headers": [[b"a"]]}, id="header-single"),
        pytest.param({"headers": [[b"a", b"b", b"c"]]}, id="header-triple"),
        pytest.param({"headers": [["content-type", "text/plain"]]}, id="header-strings"),
        pytest.param({"headers": [b"ab"]}, id="header-bytes-pair"),
        pytest.param({"headers": {b"a": b"b"}}, id="headers-map"),
        pytest.param({"body": "hello"}, id="body-string"),
        pytest.param({"body": None}, id="body-nil"),
        pytest.param({"body": [104, 105]}, id="body-list"),
        pytest.param({"stored_at": None}, id="stored-at-nil"),
        pytest.param({"stored_at": "yesterday"}, id="stored-at-word"),
        pytest.param({"stored_at": "1700000000"}, id="stored-at-numeric-string"),
        pytest.param({"stored_at": [1.0]}, id="stored-at-list"),
        pytest.param({"ttl": None}, id="ttl-nil"),
        pytest.param({"ttl": "60"}, id="ttl-numeric-string"),
        pytest.param({"ttl": True}, id="ttl-bool"),
        pytest.param({"generations": 5}, id="generations-int"),
        pytest.param({"generations": [1.5]}, id="generations-float"),
        pytest.param({"generations": ["1"]}, id="generations-string-item"),
        pytest.param({"generations": [True]}, id="generations-bool-item"),
        pytest.param({"generations": {1: 2}}, id="generations-map"),
        pytest.param({"path": 5}, id="path-int"),
        pytest.param({"path": None}, id="path-nil"),
        pytest.param({"route": [b"/"]}, id="route-list"),
        pytest.param({"tags": "ab"}, id="tags-string"),
        pytest.param({"tags": [1]}, id="tags-int-item"),
        pytest.param({"tags": None}, id="tags-nil"),
        pytest.param({"version": True}, id="version-bool"),
        pytest.param({"version": 1.0}, id="version-float"),
    ],
)
def test_wrong_types_raise(overrides):
    with pytest.raises(CorruptEntryError):
        decode(msgpack.packb(raw_fields(**overrides), use_bin_type=True))


def test_corrupt_entry_error_is_a_package_error():
    with pytest.raises(IntelligentCacheError):
        decode(b"garbage")


@settings(max_examples=300, derandomize=True, database=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_corrupt_entry_error(data):
    with contextlib.suppress(CorruptEntryError):
        decode(data)


@settings(max_examples=200, derandomize=True, database=None)
@given(st.data())
def test_any_truncation_of_an_entry_raises(data):
    encoded = encode(sample_entry())
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(CorruptEntryError):
        decode(encoded[:cut])
