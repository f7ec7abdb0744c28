"""Cache keys are injective at every length: same key if and only if the request is the same for the endpoint.

"The same for the endpoint" is the canonical input: method, prefix, decoded path, the query as
``canonical_query`` gives it (``parse_qsl`` decoding, stable sort by name) and the vary pairs in order.
Inputs are drawn from separator-heavy alphabets (so that near-collisions are frequent) and padded so that
keys cross the 64-character part limit and the 448/512-character key limits.
"""

from urllib.parse import parse_qsl, quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelligent_cache.keys import MAX_KEY_LENGTH, build_key, canonical_query, extend_key

PROPERTIES = settings(
    max_examples=200,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

BASE_KEY_LENGTH = MAX_KEY_LENGTH - 64
GLOB_AND_HASH_TAG_CHARS = frozenset("*?[]{}")
METHODS = ("GET", "HEAD")

# Separators of keys, queries, paths and globs, escapes, digest look-alikes, unicode, controls, lone surrogates.
SEPARATORS = ":=@~%/&?#*[]\\{}+; "
TRICKY = [
    *SEPARATORS,
    "a",
    "b",
    "é",
    "\u2603",
    "\U0001f600",
    "\x00",
    "\n",
    "\x7f",
    "\ud800",
    "\udfff",
    "%3A",
    "%3D",
    "%26",
    "%2F",
    "%7E",
    "%40",
    "%25",
    "%ZZ",
    "%C3%A9",
    "%ED%A0%80",
    "~r",
    "~v",
    "~h",
    "~n",
    "h~",
    "v.",
    "@v.",
    "~" + "0" * 32,
    "~r" + "0" * 32,
    "h~" + "0" * 32,
]
atoms = st.lists(st.sampled_from(TRICKY) | st.characters(), max_size=6).map("".join)
# Texts whose escaped form lies around the 64-character part limit.
near_limit = st.builds(lambda n, tail: "s" * n + tail, st.integers(50, 70), st.sampled_from(["", ":", "~", "/", "%"]))
texts = atoms | near_limit

segments = texts.map(lambda text: text.replace("/", "%2F"))
paths = st.lists(segments, max_size=5).map(lambda parts: "/" + "/".join(parts)) | st.sampled_from(
    ["", "/", "//", "a", "a/b", "*", "~n/a", "http://host/x"]
)
pairs = st.tuples(texts, texts)
raw_queries = st.lists(st.sampled_from([*TRICKY, "&", "=", "&&", "=="]) | st.characters(), max_size=12).map("".join)
encoded_queries = st.lists(pairs, max_size=5).map(
    lambda items: "&".join(
        f"{quote(name, safe='', errors='surrogatepass')}={quote(value, safe='', errors='surrogatepass')}"
        for name, value in items
    )
)
queries = raw_queries | encoded_queries
labels = st.sampled_from(["user_id", "header.x-tenant", "cookie.s", "v.x", "v", "@", "a=b", "~", ""]) | texts
vary_lists = st.lists(st.tuples(labels, st.none() | texts), max_size=3)
prefixes = (
    st.none()
    | st.sampled_from(["catalog", "a:GET", "x~", "~", "", "GET2"])
    | texts.filter(lambda text: text not in METHODS)
)

# Shared paddings: with one of them, keys of the same batch are long together and collide only in their tails.
LONG_QUERY = "&".join(f"p{i}=v{i}" for i in range(60))
LONG_PATH = "/" + "/".join(f"{i}" * 40 for i in range(1, 13))
# A path of eight 50-character segments, of which the long form keeps seven.
WIDE_PATH = "/" + "/".join(f"{i}" * 50 for i in range(1, 9))
long_paddings = st.sampled_from([("", LONG_QUERY), (LONG_PATH, ""), (LONG_PATH, LONG_QUERY), (WIDE_PATH, "")])
paddings = st.just(("", "")) | long_paddings


@st.composite
def requests(draw):
    """``(method, path, query_string, vary, prefix)``, possibly padded to a long key."""
    path_padding, query_padding = draw(paddings)
    path = path_padding + draw(paths) if path_padding else draw(paths)
    query = draw(queries)
    if query_padding:
        query = f"{query}&{query_padding}" if draw(st.booleans()) else f"{query_padding}&{query}"
    return draw(st.sampled_from(METHODS)), path, query, draw(vary_lists), draw(prefixes)


def key_of(request) -> str:
    method, path, query, vary, prefix = request
    return build_key(method, path, query, vary, prefix)


def canonical(request):
    method, path, query, vary, prefix = request
    return method, prefix, path, tuple(canonical_query(query)), tuple(vary)


def assert_injective(batch, make_key=key_of, identity=canonical) -> None:
    """Keys and canonical inputs map one-to-one over the batch."""
    by_key: dict[str, object] = {}
    by_identity: dict[object, str] = {}
    for request in batch:
        built = make_key(request)
        assert by_key.setdefault(built, identity(request)) == identity(request), built
        assert by_identity.setdefault(identity(request), built) == built, request


# -- the reported collision ----------------------------------------------------------------------------------

PADDING = "&".join(f"name{i}=value{i}" for i in range(40))


def test_slash_moved_across_parameters_of_a_long_query_changes_the_key():
    first = build_key("GET", "/search", f"a=1/b&c=2&{PADDING}")
    second = build_key("GET", "/search", f"a=1&b/c=2&{PADDING}")
    assert canonical_query(f"a=1/b&c=2&{PADDING}") != canonical_query(f"a=1&b/c=2&{PADDING}")
    assert ":~r" in first  # the long form, where the tail is hashed
    assert first != second


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("/x", "a=1/b&c=2"), ("/x", "a=1&b/c=2"), id="slash-in-query"),
        pytest.param(("/x/a", "b=1"), ("/x", "a/b=1"), id="slash-between-segment-and-query"),
        pytest.param(("/x", "", [("u", "1/@w")]), ("/x", "", [("u", "1"), ("w", None)]), id="slash-in-vary"),
        pytest.param(("/x/~0123", ""), ("/x/%7E0123", ""), id="tilde-in-segment"),
        pytest.param(("/x", "a=%7E" + "0" * 32), ("/x", "a=" + "0" * 70), id="digest-look-alike-value"),
        pytest.param(("/x", "", [("u", None)]), ("/x", "", [("u", "")]), id="absent-vs-empty-vary"),
        pytest.param(("/x", "", [("v.x", "1")]), ("/x", "", [("v%2Ex", "1")]), id="v-dot-label"),
    ],
)
@pytest.mark.parametrize("padding", ["", PADDING], ids=["short", "long"])
def test_confusable_requests_differ_at_every_length(first, second, padding):
    def build(request):
        path, query, *vary = request
        return build_key("GET", path, f"{query}&{padding}" if padding else query, vary[0] if vary else ())

    assert build(first) != build(second)


def test_a_segment_that_looks_like_a_digest_differs_from_the_digest():
    long_segment = "s" * 65
    hashed = build_key("GET", f"/{long_segment}").split(":")[1]
    assert build_key("GET", f"/{hashed}") != build_key("GET", f"/{long_segment}")


def test_prefix_and_method_never_start_a_key_with_a_tilde():
    # "~" starts the cache's own counters and locks.
    for method, prefix in [("~g", None), ("G" * 100, None), ("GET", "~g"), ("GET", "p" * 100)]:
        built = build_key(method, "/x", prefix=prefix)
        assert not built.startswith("~")
        assert len(built) <= BASE_KEY_LENGTH


def test_a_path_without_leading_slash_differs_from_its_rooted_tail():
    assert build_key("GET", "a/b") != build_key("GET", "/b")
    assert build_key("GET", "a/b") != build_key("GET", "/a/b")
    assert build_key("GET", "") != build_key("GET", "/")


# -- properties ----------------------------------------------------------------------------------------------


@PROPERTIES
@given(st.lists(requests(), min_size=2, max_size=6))
def test_keys_are_equal_exactly_when_canonical_inputs_are(batch):
    assert_injective(batch)


def respell(text: str) -> str:
    """Another spelling of a query name or value: ASCII punctuation percent-encoded, the rest as is."""
    return "".join(char if not char.isascii() or char.isalnum() else f"%{ord(char):02X}" for char in text)


@PROPERTIES
@given(requests(), st.data())
def test_equivalent_spellings_of_a_request_share_its_key(request_, data):
    # Reordering names (keeping per-name order) and re-encoding the query keep the canonical input, and the key.
    method, path, query, vary, prefix = request_
    items = canonical_query(query)
    shuffled = data.draw(st.permutations(items))
    per_name: dict[str, list[str]] = {}
    for name, value in items:
        per_name.setdefault(name, []).append(value)
    items = [(name, per_name[name].pop(0)) for name, _ in shuffled]
    spelled = "&".join(f"{respell(name)}={respell(value)}" for name, value in items)
    same = (method, path, spelled, vary, prefix)
    assert canonical(same) == canonical(request_)
    assert key_of(same) == key_of(request_)


GAPS = ["/", "&", "=", "?", "", ":", "@", "~", "%2F", "%26", "%3D", "%3A"]


@st.composite
def shifted_pairs(draw):
    """Two requests made of the same atoms with the separators between them moved (the reported bug's shape).

    ``a=1/b&c=2`` and ``a=1&b/c=2`` are one such pair; so are ``/x/a?b=1`` and ``/x?a/b=1``.
    """
    atom = st.sampled_from(["a", "b", "1", "c=2"]) | st.sampled_from(["~", "%", "é", "\ud800", "s" * 62])
    parts = draw(st.lists(atom, min_size=2, max_size=6))
    gap = st.sampled_from(GAPS[:4]) | st.sampled_from(GAPS)
    first_gaps = draw(st.lists(gap, min_size=len(parts) - 1, max_size=len(parts) - 1))
    # Near-misses are where collisions hide: the same gaps in another order, or a few of them changed.
    second_gaps = draw(st.permutations(first_gaps) | st.tuples(*(st.sampled_from([g, g, *GAPS]) for g in first_gaps)))
    where = draw(st.sampled_from(["query", "url", "vary"]))
    # Short keys are covered above: these are long, where the tail of the key is hashed.
    path_padding, query_padding = draw(long_paddings)

    def request(gaps):
        text = parts[0] + "".join(gap + part for gap, part in zip(gaps, parts[1:], strict=True))
        if where != "vary":
            path, _, query = f"/{text}".partition("?") if where == "url" else ("/q", "", text)
            return "GET", path_padding + path, f"{query}&{query_padding}" if query_padding else query, [], None
        # "&" separates vary values here, so moving it moves the boundary between two of them.
        return "GET", path_padding or "/v", query_padding, [("u", chunk) for chunk in text.split("&")], None

    return request(first_gaps), request(second_gaps)


@settings(PROPERTIES, max_examples=100)
@given(shifted_pairs())
def test_moving_separators_between_parts_changes_the_key_unless_the_request_is_the_same(pair):
    assert_injective(pair)


def encode_pairs(items) -> str:
    return "&".join(f"{respell(name)}={respell(value)}" for name, value in items)


@st.composite
def moved_boundaries(draw):
    """Two requests where text moves from one part to the next across a separator, in a long key.

    ``?a=1/b&c=2`` and ``?a=1&b/c=2`` (the reported collision) are one such pair.
    """
    sep = draw(st.sampled_from(["/", ":", "=", "&", "@", "~", "?", "%2F", "\\", "\x00", "\ud800"]))
    before, moved, after = (draw(st.sampled_from(["", "a", "1", "b=", "~", "é", "s" * 60]) | atoms) for _ in range(3))
    where = draw(st.sampled_from(["query", "path-to-query", "vary", "path"]))
    path_padding, query_padding = draw(long_paddings)

    def url(path, query):
        full = f"{query}&{query_padding}" if query_padding else query
        return "GET", path_padding + path, full, [], None

    if where == "query":
        first = url("/q", encode_pairs([("a", before + sep + moved), (after, "2")]))
        second = url("/q", encode_pairs([("a", before), (moved + sep + after, "2")]))
    elif where == "path-to-query":
        segment = (before + sep + moved).replace("/", "%2F")
        first = url(f"/x/{segment}", encode_pairs([(after, "2")]))
        second = url(f"/x/{before.replace('/', '%2F')}", encode_pairs([(moved + sep + after, "2")]))
    elif where == "path":
        first = url(f"/{before}{sep}{moved}/{after}", "")
        second = url(f"/{before}/{moved}{sep}{after}", "")
    else:
        first = ("GET", path_padding or "/v", query_padding, [("u", before + sep + moved), (after, "1")], None)
        second = ("GET", path_padding or "/v", query_padding, [("u", before), (moved + sep + after, "1")], None)
    return first, second


@PROPERTIES
@given(moved_boundaries())
def test_text_moved_across_a_part_boundary_changes_the_key_unless_the_request_is_the_same(pair):
    assert_injective(pair)


@PROPERTIES
@given(requests())
def test_keys_are_bounded_and_well_formed(request_):
    built = key_of(request_)
    assert len(built) <= BASE_KEY_LENGTH
    assert not built.startswith("~")
    assert not GLOB_AND_HASH_TAG_CHARS & set(built)


# -- extend_key ----------------------------------------------------------------------------------------------

header_names = st.sampled_from(["accept-language", "accept", "x", "v.x", "", ":", "=", "@"]) | texts
vary_pairs = st.lists(st.tuples(header_names, st.none() | texts), min_size=1, max_size=3)
long_values = st.builds(lambda n: "l" * n, st.integers(100, 500))
extensions = vary_pairs | st.lists(st.tuples(header_names, long_values), min_size=1, max_size=3)


@settings(PROPERTIES, max_examples=100)
@given(st.lists(st.tuples(requests(), extensions), min_size=2, max_size=5), st.lists(requests(), max_size=3))
def test_extended_keys_are_injective_and_never_equal_a_base_key(batch, bases):
    def make(item):
        request, pairs_ = item
        return extend_key(key_of(request), pairs_)

    def identity(item):
        request, pairs_ = item
        return canonical(request), tuple(pairs_)

    assert_injective(batch, make, identity)
    base_keys = {key_of(request) for request in [*bases, *(request for request, _ in batch)]}
    for item in batch:
        extended = make(item)
        assert extended not in base_keys
        assert len(extended) <= MAX_KEY_LENGTH
        assert not extended.startswith("~")
        assert not GLOB_AND_HASH_TAG_CHARS & set(extended)


def test_extending_with_a_vary_label_spelled_like_an_extension_does_not_collide():
    # A route varying on request.state "v.x" and a response with "Vary: x" must not share a key.
    assert build_key("GET", "/r", vary=[("v.x", "1")]) != extend_key(build_key("GET", "/r"), [("x", "1")])
    assert build_key("GET", "/r", vary=[("a", "1"), ("v.x", None)]) != extend_key(
        build_key("GET", "/r", vary=[("a", "1")]), [("x", None)]
    )


def test_extend_key_keeps_the_documented_shape():
    assert extend_key("GET:r", [("accept-language", "fr")]) == "GET:r:@v.accept-language=fr"
    assert extend_key("GET:r", [("accept-language", None)]) == "GET:r:@v.accept-language"


def test_long_extensions_are_hashed_and_distinct():
    base = build_key("GET", LONG_PATH)
    others = [(f"x-{i}", "b" * 300) for i in range(4)]
    first = extend_key(base, [("accept", "a" * 300), *others])
    second = extend_key(base, [("accept", "a" * 299 + "d"), *others])
    assert first != second
    assert first.startswith(base + ":~v")
    assert len(first) <= MAX_KEY_LENGTH


@PROPERTIES
@given(st.lists(st.sampled_from([*TRICKY, "&", "=", "&&", "==", "a=", "=b"]), max_size=30).map("".join))
def test_canonical_query_is_parse_qsl_sorted_by_name(query):
    # Its shortcut for queries without escapes must agree with parse_qsl everywhere.
    expected = sorted(parse_qsl(query, keep_blank_values=True), key=lambda pair: pair[0])
    assert canonical_query(query) == expected
    assert canonical_query(query.encode("utf-8", "surrogatepass").decode("latin-1")) == sorted(
        parse_qsl(query.encode("utf-8", "surrogatepass").decode("latin-1"), keep_blank_values=True),
        key=lambda pair: pair[0],
    )
