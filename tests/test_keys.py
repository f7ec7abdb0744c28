"""Cache keys: ``build_key`` (readable, deterministic, collision-free, bounded) and ``glob_to_regex``."""

import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from intelligent_cache.globs import glob_to_regex
from intelligent_cache.keys import MAX_KEY_LENGTH, build_key

# Characters that would turn a key into a glob (or a Redis hash tag) if left unescaped.
GLOB_CHARS = frozenset("*?[]")
HASH_TAG_CHARS = frozenset("{}")

HYPOTHESIS = settings(
    max_examples=300, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def key(path: str, query: str = "", vary=(), prefix=None) -> str:
    return build_key("GET", path, query, vary, prefix)


# -- shape -------------------------------------------------------------------------------------------------


def test_documented_example():
    assert key("/items", "sort=name&page=1") == "GET:items:page=1:sort=name"


def test_query_string_may_be_bytes_or_str():
    assert build_key("GET", "/items", b"sort=name&page=1") == build_key("GET", "/items", "sort=name&page=1")


def test_path_parameters_become_segments():
    assert key("/spaces/1/items", "tag=a&tag=b") == "GET:spaces:1:items:tag=a:tag=b"


def test_order_of_different_names_does_not_matter():
    assert key("/items", "a=1&b=2&c=3") == key("/items", "c=3&a=1&b=2") == key("/items", "b=2&c=3&a=1")


def test_different_values_give_different_keys():
    assert key("/items", "page=1") != key("/items", "page=2")
    assert key("/items") != key("/items", "page=1")
    assert key("/items") != key("/users")


def test_repeated_parameters_do_not_collapse():
    assert key("/items", "tag=a&tag=b") != key("/items", "tag=a")
    assert key("/items", "tag=a&tag=a") != key("/items", "tag=a")


def test_repeated_parameters_keep_their_relative_order():
    # Documented choice: FastAPI hands repeated parameters to the endpoint as an ordered list,
    # so ?tag=a&tag=b and ?tag=b&tag=a may produce different responses.
    assert key("/items", "tag=a&tag=b") != key("/items", "tag=b&tag=a")
    # ...while interleaving with other names does not matter.
    assert key("/items", "tag=a&x=1&tag=b") == key("/items", "x=1&tag=a&tag=b") == key("/items", "tag=a&tag=b&x=1")


def test_blank_values_are_kept():
    assert key("/items", "q=") != key("/items")
    assert key("/items", "q=") != key("/items", "q=0")


def test_method_goes_first():
    assert build_key("HEAD", "/items").startswith("HEAD:")
    assert build_key("GET", "/items") != build_key("HEAD", "/items")


def test_key_prefix_goes_first():
    prefixed = key("/items", "page=1", prefix="catalog")
    assert prefixed == "catalog:GET:items:page=1"
    assert prefixed != key("/items", "page=1")
    assert key("/items", prefix="catalog") != key("/items", prefix="other")


def test_key_prefix_is_escaped():
    assert key("/items", prefix="a:GET") != key("/GET/items", prefix="a")
    assert not GLOB_CHARS & set(key("/items", prefix="we*ird?[x]"))


# -- vary --------------------------------------------------------------------------------------------------


def test_vary_values_are_part_of_the_key():
    assert key("/me", vary=[("user_id", "1")]) != key("/me", vary=[("user_id", "2")])
    assert key("/me", vary=[("user_id", "1")]) != key("/me")


def test_absent_vary_value_differs_from_empty_string():
    assert key("/me", vary=[("user_id", None)]) != key("/me", vary=[("user_id", "")])


def test_vary_value_differs_from_query_parameter_of_the_same_name():
    assert key("/me", vary=[("user_id", "1")]) != key("/me", "user_id=1")
    assert key("/me", vary=[("user_id", "1")]) != key("/me", "%40user_id=1")


def test_vary_label_is_part_of_the_key():
    assert key("/me", vary=[("user_id", "1")]) != key("/me", vary=[("header.x-tenant", "1")])


def test_vary_values_cannot_spoof_other_vary_parts():
    assert key("/me", vary=[("a", "1:@b=2")]) != key("/me", vary=[("a", "1"), ("b", "2")])
    assert key("/me", vary=[("a", None), ("b", "2")]) != key("/me", vary=[("a", "@b=2")])


# -- escaping ----------------------------------------------------------------------------------------------

# Pairs of (path, query, vary) inputs that differ but would collide if a separator were not escaped.
# Paths are decoded paths (scope["path"]), so "/a:b" and "/a%3Ab" are different requests.
CONFUSABLE = [
    pytest.param(("/a:b", ""), ("/a/b", ""), id="colon-in-segment"),
    pytest.param(("/a%3Ab", ""), ("/a:b", ""), id="literal-percent-escape-in-segment"),
    pytest.param(("/x", "a=1:b=2"), ("/x", "a=1&b=2"), id="colon-in-value"),
    pytest.param(("/x", "a=1%3Ab%3D2"), ("/x", "a=1&b=2"), id="encoded-colon-and-equals-in-value"),
    pytest.param(("/x", "a%3Db=c"), ("/x", "a=b%3Dc"), id="equals-in-name-vs-value"),
    pytest.param(("/x", "a=b"), ("/x/a=b", ""), id="query-vs-segment-with-equals"),
    pytest.param(("/x/@u=1", ""), ("/x", "", [("u", "1")]), id="at-in-segment-vs-vary"),
    pytest.param(("/x/@u", ""), ("/x", "", [("u", None)]), id="at-in-segment-vs-absent-vary"),
    pytest.param(("/x", "%40u=1"), ("/x", "", [("u", "1")]), id="at-in-name-vs-vary"),
    pytest.param(("/x/*", ""), ("/x/%2A", ""), id="star"),
    pytest.param(("/x/a?b=1", ""), ("/x/a", "b=1"), id="question-mark-in-segment-vs-query"),
    pytest.param(("/x/[a]", ""), ("/x/%5Ba%5D", ""), id="brackets"),
    pytest.param(("/x/{a}", ""), ("/x/%7Ba%7D", ""), id="braces"),
    pytest.param(("/x/~r", ""), ("/x/%7Er", ""), id="tilde"),
    pytest.param(("/x/a%", ""), ("/x/a%25", ""), id="percent"),
    pytest.param(("/x/a b", ""), ("/x/a%20b", ""), id="space"),
    pytest.param(("/x/a\\b", ""), ("/x/a%5Cb", ""), id="backslash"),
    pytest.param(("/x/", ""), ("/x", ""), id="trailing-slash"),
    pytest.param(("/x//y", ""), ("/x/y", ""), id="empty-segment"),
    pytest.param(("/x", "a"), ("/x/a", ""), id="bare-name-vs-segment"),
]


@pytest.mark.parametrize(("first", "second"), CONFUSABLE)
def test_separators_are_escaped(first, second):
    first_key = key(*first)
    second_key = key(*second)
    assert first_key != second_key
    for built in (first_key, second_key):
        assert not GLOB_CHARS & set(built), built
        assert not HASH_TAG_CHARS & set(built), built


@pytest.mark.parametrize("char", ["*", "?", "[", "]", "{", "}", "\\", " ", "\n", "\x00", "\x7f"])
def test_special_characters_never_appear_raw(char):
    built = key(f"/a{char}b", f"{quote(char)}={quote(char)}", [(f"v{char}", char)])
    assert char not in built


# -- length ------------------------------------------------------------------------------------------------


def test_part_of_64_characters_is_kept_verbatim():
    segment = "s" * 64
    assert key(f"/{segment}") == f"GET:{segment}"


def test_long_parts_are_hashed():
    long_segment = "s" * 65
    built = key(f"/{long_segment}")
    assert long_segment not in built
    hashed = built.split(":")[1]
    assert re.fullmatch(r"~[0-9a-f]{32}", hashed)
    assert key(f"/{'s' * 64}t") != key(f"/{'s' * 64}u")


def test_long_query_values_are_hashed_and_distinct():
    first = key("/search", "q=" + "a" * 200)
    second = key("/search", "q=" + "a" * 199 + "b")
    assert first != second
    assert "a" * 65 not in first
    assert first.startswith("GET:search:q=~")


def test_escaping_counts_towards_the_part_length():
    # 30 colons escape to 90 characters: too long, hashed.
    built = key("/" + ":" * 30)
    assert re.fullmatch(r"GET:~[0-9a-f]{32}", built)


def test_key_with_many_short_segments_is_bounded():
    path = "/" + "/".join(f"s{i}" for i in range(400))
    built = key(path)
    assert len(built) <= MAX_KEY_LENGTH
    assert built != key(path + "/s400")


def test_key_with_long_query_is_bounded_and_distinct():
    query = "&".join(f"name{i}=value{i}" for i in range(100))
    built = key("/items", query)
    assert len(built) <= MAX_KEY_LENGTH
    assert built != key("/items", query + "&extra=1")
    assert built.startswith("GET:items:")


def test_key_with_long_segments_is_bounded():
    # Eight kept path segments of 64 characters already exceed the bound on their own.
    path = "/" + "/".join(f"{i}" * 64 for i in range(1, 10))
    assert len(key(path)) <= MAX_KEY_LENGTH


def test_key_with_long_prefix_and_segments_is_bounded():
    path = "/" + "/".join("p" * 60 for _ in range(12))
    assert len(key(path, "q=1", prefix="x" * 64)) <= MAX_KEY_LENGTH


def test_truncated_keys_still_distinguish_a_trailing_slash():
    # Short paths distinguish "/x" and "/x/" (see CONFUSABLE); long ones must too.
    path = "/" + "/".join(f"{i}" * 64 for i in range(1, 9))
    assert key(path) != key(path + "/")


# -- percent-encoding --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        ("q=a%3Ab", "q=a:b"),
        ("q=caf%C3%A9", "q=café"),
        ("q=a%20b", "q=a+b"),
        ("%71=1", "q=1"),
        ("q=%2A%3F%5B", "q=*?["),
        ("q=%40", "q=@"),
    ],
)
def test_encoded_and_decoded_forms_of_the_same_value_share_a_key(encoded, decoded):
    # The endpoint sees the same value for both (Starlette decodes the query the same way).
    assert QueryParams(encoded).multi_items() == QueryParams(decoded).multi_items()
    assert key("/search", encoded) == key("/search", decoded)


def test_encoded_separator_differs_from_the_separator():
    # "%26" is a literal ampersand inside a value, "&" separates parameters.
    assert key("/search", "q=a%26b=c") != key("/search", "q=a&b=c")


# -- properties --------------------------------------------------------------------------------------------

# Requests carry text, never lone surrogates (paths and queries are decoded from UTF-8 with replacement).
CHARS = st.characters(exclude_categories=("Cs",))
TRICKY = ":=@~%*?[]\\{}&+#; ab\u00e9\x00\n"
segment_text = st.text(alphabet=st.sampled_from(TRICKY + "/") | CHARS, max_size=8).map(
    lambda text: text.replace("/", "")
)
paths = st.lists(segment_text, max_size=4).map(lambda segments: "/" + "/".join(segments))
names = st.text(alphabet=st.sampled_from(TRICKY) | CHARS, max_size=4)
values = st.text(alphabet=st.sampled_from(TRICKY) | CHARS, max_size=6)
queries = st.lists(st.tuples(st.sampled_from(["a", "b", "a:b", "a=b", "@a"]) | names, values), max_size=5)
vary_lists = st.lists(
    st.tuples(st.sampled_from(["user_id", "header.x-tenant", "cookie.s"]), st.none() | values),
    max_size=2,
    unique_by=lambda item: item[0],
)
requests = st.tuples(paths, queries, vary_lists)


def encode_query(pairs) -> str:
    return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" for name, value in pairs)


def canonical(path, pairs, vary):
    """What the endpoint can observe: the path, the query multiset ordered per name, the vary values."""
    return path, tuple(sorted(pairs, key=lambda pair: pair[0])), tuple(vary)


@HYPOTHESIS
@given(st.lists(requests, min_size=2, max_size=12))
def test_distinct_requests_never_share_a_key(batch):
    seen: dict[str, tuple] = {}
    for path, pairs, vary in batch:
        built = key(path, encode_query(pairs), vary)
        identity = canonical(path, pairs, vary)
        assert seen.setdefault(built, identity) == identity, built


@HYPOTHESIS
@given(requests, requests)
def test_two_arbitrary_requests_share_a_key_only_if_equivalent(first, second):
    first_key = key(first[0], encode_query(first[1]), first[2])
    second_key = key(second[0], encode_query(second[1]), second[2])
    assert (first_key == second_key) == (canonical(*first) == canonical(*second))


@HYPOTHESIS
@given(requests, st.data())
def test_permutations_keeping_per_name_order_share_a_key(request_, data):
    path, pairs, vary = request_
    shuffled_names = [name for name, _ in data.draw(st.permutations(pairs))]
    per_name: dict[str, list[str]] = {}
    for name, value in pairs:
        per_name.setdefault(name, []).append(value)
    reordered = [(name, per_name[name].pop(0)) for name in shuffled_names]
    assert key(path, encode_query(reordered), vary) == key(path, encode_query(pairs), vary)


# Runs of segments just below, at and above the 64-character hashing threshold, around arbitrary ones.
near_threshold = st.lists(st.integers(56, 66).map(lambda n: "s" * n), max_size=12)
tricky_segments = st.lists(st.text(alphabet=st.sampled_from(TRICKY + "xyz"), max_size=90), max_size=12)
long_paths = st.tuples(tricky_segments, near_threshold, tricky_segments).map(
    lambda parts: "/" + "/".join(s.replace("/", "") for s in [*parts[0], *parts[1], *parts[2]])
)


@HYPOTHESIS
@given(
    long_paths,
    st.lists(st.tuples(names, st.text(alphabet=CHARS, max_size=100)), max_size=4),
    vary_lists,
    st.none() | st.text(alphabet="abc:*", min_size=1, max_size=64),
)
def test_keys_never_exceed_the_bound(path, pairs, vary, prefix):
    built = key(path, encode_query(pairs), vary, prefix)
    assert len(built) <= MAX_KEY_LENGTH
    assert not GLOB_CHARS & set(built)


@HYPOTHESIS
@given(requests)
def test_keys_are_deterministic(request_):
    path, pairs, vary = request_
    assert key(path, encode_query(pairs), vary) == key(path, encode_query(pairs), list(vary))


# -- glob_to_regex (Redis glob semantics) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        (
            "GET:items:*",
            ["GET:items:page=1", "GET:items:", "GET:items:a:b"],
            ["GET:items", "GET:itemsx", "xGET:items:"],
        ),
        ("*", ["", "anything:at:all"], []),
        ("a*b", ["ab", "axxb", "a:b"], ["abc", "ba"]),
        ("h?llo", ["hello", "hallo", "h:llo"], ["hllo", "heello"]),
        ("h[ae]llo", ["hello", "hallo"], ["hillo", "hllo"]),
        ("h[^e]llo", ["hallo", "hbllo"], ["hello", "hllo"]),
        ("h[a-b]llo", ["hallo", "hbllo"], ["hcllo", "hello"]),
        ("[0-9]*", ["1", "9abc"], ["a1", ""]),
        ("a\\*b", ["a*b"], ["ab", "axb"]),
        ("a\\?b", ["a?b"], ["axb"]),
        ("a\\[b", ["a[b"], ["ab"]),
        ("a.c", ["a.c"], ["abc"]),
        ("a+(b)|c$^", ["a+(b)|c$^"], ["aab", "c"]),
        ("key", ["key"], ["keys", "ke", "Key"]),
    ],
)
def test_glob_to_regex_follows_redis_semantics(pattern, matching, not_matching):
    regex = glob_to_regex(pattern)
    for text in matching:
        assert regex.fullmatch(text), (pattern, text)
    for text in not_matching:
        assert not regex.fullmatch(text), (pattern, text)


def test_glob_reversed_range_matches_like_redis():
    # Redis swaps the bounds of a reversed range: [z-a] is [a-z].
    regex = glob_to_regex("h[z-a]llo")
    assert regex.fullmatch("hello")
    assert not regex.fullmatch("h0llo")


def test_glob_escaped_bracket_inside_a_class_matches_like_redis():
    # In Redis, a backslash inside a class escapes the next character: [\]] matches "]".
    regex = glob_to_regex("a[\\]]b")
    assert regex.fullmatch("a]b")
    assert not regex.fullmatch("a\\]b")


def test_escaped_keys_match_patterns_of_their_prefix():
    built = key("/items", "q=*")
    assert glob_to_regex("GET:items:*").fullmatch(built)
    assert not glob_to_regex("GET:items:q=\\*").fullmatch(built)  # the star was escaped, so it is not a star
