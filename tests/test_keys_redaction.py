"""Credentials never appear in keys: sensitive values become ``~h`` and an HMAC under the cache's secret."""

import hashlib
import hmac
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intelligent_cache import keys
from intelligent_cache.exceptions import ConfigurationError
from intelligent_cache.keys import (
    CREDENTIAL_HEADERS,
    MAX_KEY_LENGTH,
    build_key,
    extend_key,
    looks_secret,
)
from tests.test_keys_properties import PROPERTIES, assert_injective, encode_pairs, requests, texts

SECRET = b"s3cret-key-of-the-cache"
SENSITIVE = frozenset({"api_key", "header.authorization", "cookie.session", "user_id"})
DIGEST = re.compile(r"~h[0-9a-f]{32}")


def expected_digest(value: str, secret: bytes = SECRET) -> str:
    return "~h" + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]


def secret_key(path="/me", query="", vary=(), **options) -> str:
    options.setdefault("secret", SECRET)
    options.setdefault("sensitive", SENSITIVE)
    return build_key("GET", path, query, vary, **options)


# -- build_key ---------------------------------------------------------------------------------------------


def test_a_sensitive_query_value_becomes_a_keyed_digest():
    built = secret_key("/items", "api_key=abc123&page=2")
    assert built == f"GET:items:api_key={expected_digest('abc123')}:page=2"
    assert "abc123" not in built


def test_a_sensitive_vary_value_becomes_a_keyed_digest():
    built = secret_key(vary=[("header.authorization", "Bearer alice"), ("header.accept", "text/html")])
    assert built == f"GET:me:@header.authorization={expected_digest('Bearer alice')}:@header.accept=text/html"


def test_an_absent_sensitive_input_stays_absent():
    assert secret_key(vary=[("cookie.session", None)]) == "GET:me:@cookie.session"
    assert secret_key(vary=[("cookie.session", None)]) != secret_key(vary=[("cookie.session", "")])


def test_an_empty_sensitive_value_is_digested_too():
    assert secret_key(vary=[("cookie.session", "")]) == f"GET:me:@cookie.session={expected_digest('')}"


def test_sensitive_names_are_case_insensitive():
    assert "abc" not in secret_key("/x", "API_KEY=abc")
    assert "Bearer" not in secret_key(vary=[("Header.Authorization", "Bearer x")])


def test_same_secret_and_value_give_the_same_key():
    assert secret_key(vary=[("user_id", "42")]) == secret_key(vary=[("user_id", "42")])


def test_different_values_give_different_keys():
    assert secret_key(vary=[("user_id", "42")]) != secret_key(vary=[("user_id", "43")])


def test_different_secrets_give_different_keys():
    first = secret_key("/x", "api_key=abc", secret=b"one")
    second = secret_key("/x", "api_key=abc", secret=b"two")
    assert first != second


@pytest.mark.parametrize(
    "literal",
    [
        pytest.param(expected_digest("abc"), id="the-digest-itself"),
        pytest.param("~habc", id="tilde-h"),
        pytest.param("%7Eh" + "0" * 32, id="escaped-tilde"),
    ],
)
def test_a_digest_never_equals_a_literal_value(literal):
    # A literal value escapes "~", so a value spelled like a digest stays apart from the digest.
    assert secret_key("/x", "api_key=abc") != build_key("GET", "/x", "api_key=" + quote(literal, safe=""))
    assert secret_key(vary=[("user_id", "abc")]) != build_key("GET", "/me", vary=[("user_id", literal)])


def test_digest_and_literal_keys_differ_for_the_same_value():
    # With and without redaction, one input gives two keys: never one key for two inputs.
    assert secret_key("/x", "api_key=abc") != build_key("GET", "/x", "api_key=abc")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x" * 100_000, id="huge"),
        pytest.param("a:b=c@d~e%f/g&h?i#j*k[l]m\\n{o}p q", id="separators"),
        pytest.param("é\u2603\U0001f600\x00\n\ud800", id="unicode-and-controls"),
        pytest.param("tok" * 30, id="over-the-part-limit"),
    ],
)
def test_a_digest_key_never_contains_the_value(value):
    for built in (
        secret_key("/x", f"api_key={quote(value, safe='', errors='surrogatepass')}"),
        secret_key(vary=[("header.authorization", value)]),
        extend_key(build_key("GET", "/r"), [("authorization", value)], secret=SECRET, sensitive={"authorization"}),
    ):
        assert DIGEST.search(built), built
        assert len(built) <= MAX_KEY_LENGTH
        for form in (value, keys.escape(value)):
            assert form[:16] not in built


def test_a_long_key_carries_no_plaintext_either():
    padding = "&".join(f"p{i}=v{i}" for i in range(80))
    built = secret_key("/x", f"api_key=hunter2hunter2&{padding}")
    assert "hunter2" not in built
    assert built != secret_key("/x", f"api_key=hunter3hunter3&{padding}")


def test_sensitive_names_need_a_secret():
    with pytest.raises(ValueError, match="secret"):
        build_key("GET", "/x", "api_key=1", sensitive={"api_key"})
    with pytest.raises(ConfigurationError):
        extend_key("GET:x", [("authorization", "x")], sensitive={"authorization"})


def test_a_single_string_is_not_a_collection_of_names():
    # "authorization" as a string would be a set of letters.
    with pytest.raises(ValueError, match="single string"):
        build_key("GET", "/x", secret=SECRET, sensitive="authorization")


class LooksSecret:
    """A collection holding more than it lists, as a route's set of sensitive names may."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names or looks_secret(name.rpartition(".")[2]))

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return max(1, len(self.names))


def test_the_collection_decides_what_is_sensitive():
    built = build_key(
        "GET",
        "/x",
        "access_token=tok1&page=2&Listed=abc",
        [("header.x-api-key", "k1"), ("lang", "fr")],
        secret=SECRET,
        sensitive=LooksSecret("listed"),
    )
    for value in ("tok1", "k1", "abc"):
        assert value not in built
    assert ":page=2:" in built
    assert built.endswith(":@lang=fr")
    extended = extend_key("GET:x", [("x-auth-token", "t2"), ("accept", "a")], secret=SECRET, sensitive=LooksSecret())
    assert "t2" not in extended
    assert extended.endswith(":@v.accept=a")
    with pytest.raises(ValueError, match="secret"):
        build_key("GET", "/x", sensitive=LooksSecret())


def test_a_secret_without_sensitive_names_changes_nothing():
    assert build_key("GET", "/x", "api_key=1", secret=SECRET) == build_key("GET", "/x", "api_key=1")


# -- extend_key --------------------------------------------------------------------------------------------


def test_extend_key_digests_sensitive_headers():
    extended = extend_key(
        "GET:r",
        [("authorization", "Bearer x"), ("accept-language", "fr"), ("cookie", None)],
        secret=SECRET,
        sensitive=CREDENTIAL_HEADERS,
    )
    assert extended == f"GET:r:@v.authorization={expected_digest('Bearer x')}:@v.accept-language=fr:@v.cookie"


def test_extend_key_with_different_secrets_differs():
    pairs = [("cookie", "session=abc")]
    first = extend_key("GET:r", pairs, secret=b"one", sensitive={"cookie"})
    second = extend_key("GET:r", pairs, secret=b"two", sensitive={"cookie"})
    assert first != second
    assert "abc" not in first


def test_long_extensions_hash_the_digests_not_the_values():
    base = build_key("GET", "/" + "/".join(f"{i}" * 40 for i in range(1, 13)))
    pairs = [(f"x-{i}", "plain" * 20) for i in range(4)] + [("authorization", "Bearer topsecret")]
    extended = extend_key(base, pairs, secret=SECRET, sensitive={"authorization"})
    assert re.fullmatch(re.escape(base) + r":~v[0-9a-f]{32}", extended)
    assert extended != extend_key(
        base, [*pairs[:-1], ("authorization", "Bearer other")], secret=SECRET, sensitive={"authorization"}
    )


# -- properties --------------------------------------------------------------------------------------------

# Sensitive values carry a marker, so that finding it in a key can only mean a leak.
marked = texts.map(lambda text: "SECRET-" + text)
sensitive_query = st.tuples(st.sampled_from(["api_key", "API_KEY"]), marked) | st.tuples(st.just("page"), texts)
sensitive_vary = st.tuples(st.sampled_from(sorted(SENSITIVE - {"api_key"})), st.none() | marked) | st.tuples(
    st.just("lang"), st.none() | texts
)


@st.composite
def sensitive_requests(draw):
    method, path, query, vary, prefix = draw(requests())
    extra = encode_pairs(draw(st.lists(sensitive_query, max_size=3)))
    query = f"{query}&{extra}" if query and extra else query or extra
    return method, path, query, [*vary, *draw(st.lists(sensitive_vary, max_size=3))], prefix


def redacted_key(request) -> str:
    method, path, query, vary, prefix = request
    return build_key(method, path, query, vary, prefix, secret=SECRET, sensitive=SENSITIVE)


@PROPERTIES
@given(st.lists(sensitive_requests(), min_size=2, max_size=6))
def test_keys_stay_injective_with_sensitive_names(batch):
    assert_injective(batch, redacted_key)


@PROPERTIES
@given(sensitive_requests())
def test_sensitive_values_never_appear_in_keys(request_):
    built = redacted_key(request_)
    assert "SECRET" not in built
    assert len(built) <= MAX_KEY_LENGTH - 64


# -- looks_secret ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "Proxy-Authorization",
        "Cookie",
        "api_key",
        "apiKey",
        "X-API-Key",
        "access_token",
        "X-Auth-Token",
        "id_token",
        "refresh_token",
        "client_secret",
        "session",
        "sessionid",
        "PHPSESSID",
        "JSESSIONID",
        "connect.sid",
        "sid",
        "password",
        "passwd",
        "pwd",
        "X-Amz-Signature",
        "sig",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "jwt",
        "csrftoken",
        "X-CSRF-Token",
        "XSRF-TOKEN",
        "oauth_verifier",
        "code",
        "otp",
        "private_key",
        "\uff34\uff2f\uff2b\uff25\uff2e",  # fullwidth TOKEN folds to "token"
    ],
)
def test_credential_names_look_secret(name):
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["page", "sort", "lang", "q", "limit", "offset", "order", "fields", "format", "tag"])
def test_ordinary_names_do_not_look_secret(name):
    assert not looks_secret(name)


def test_credential_headers():
    assert frozenset({"authorization", "proxy-authorization", "cookie"}) == CREDENTIAL_HEADERS
    assert all(looks_secret(name) for name in CREDENTIAL_HEADERS)


@settings(
    max_examples=200, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.text())
def test_looks_secret_never_raises(name):
    assert isinstance(looks_secret(name), bool)
