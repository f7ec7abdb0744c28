"""Header parsing never raises and stays well-typed, whatever a client (or an endpoint) sends."""

import math
import time
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from intelligent_cache.policy import (
    RequestDirectives,
    compute_etag,
    etag_matches,
    forbids_stale,
    must_revalidate,
    parse_cache_control,
    response_ttl,
    response_vary,
    shareable_with_credentials,
    store_refusal,
)

FUZZ = settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

latin1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=200)
NAMES = [
    b"cache-control",
    b"pragma",
    b"authorization",
    b"cookie",
    b"if-none-match",
    b"vary",
    b"expires",
    b"date",
    b"set-cookie",
    b"etag",
    b"content-type",
]
# Pieces of real header grammar, so that fuzzing reaches past the first check of each parser.
PIECES = [
    "max-age=",
    "s-maxage=",
    "no-cache",
    "no-store",
    "private",
    "public",
    "must-revalidate",
    "only-if-cached",
    "=",
    ",",
    '"',
    "\\",
    " ",
    "\t",
    "W/",
    "*",
    "0",
    "9" * 12,
    "\xb2",
    "\xb3",
    "\xb9",
    "-1",
    "+5",
    "Thu, 01 Jan 2099 00:00:00 GMT",
    "-0000",
    "+9999",
    "10000",
]
grammar_text = st.lists(st.sampled_from(PIECES) | latin1.map(lambda text: text[:5]), max_size=12).map("".join)
values = (latin1 | grammar_text).map(lambda text: text.encode("latin-1")) | st.binary(max_size=200)
headers = st.lists(st.tuples(st.sampled_from(NAMES) | st.binary(max_size=16), values), max_size=8)


def check_directives(directives: dict) -> None:
    assert isinstance(directives, dict)
    for name, argument in directives.items():
        assert isinstance(name, str)
        assert name == name.strip().lower()
        assert argument is None or isinstance(argument, str)


@FUZZ
@given(st.lists(latin1 | grammar_text, max_size=4))
def test_parse_cache_control_never_raises(lines):
    check_directives(parse_cache_control(lines))


@FUZZ
@given(st.lists(st.text(max_size=100), max_size=4))
def test_parse_cache_control_takes_any_text(lines):
    check_directives(parse_cache_control(lines))


@FUZZ
@given(headers)
@example([(b"cache-control", b"max-age=\xb2")])
@example([(b"cache-control", b"max-age=" + b"9" * 5000)])
@example([(b"if-none-match", b'"a"')] * 50)
def test_request_directives_never_raise(raw):
    directives = RequestDirectives.parse(raw)
    assert isinstance(directives.no_store, bool)
    assert isinstance(directives.revalidate, bool)
    assert isinstance(directives.only_if_cached, bool)
    assert isinstance(directives.authorization, bool)
    assert isinstance(directives.cookie, bool)
    assert directives.max_age is None or (type(directives.max_age) is int and 0 <= directives.max_age <= 2**31)
    assert directives.if_none_match is None or isinstance(directives.if_none_match, str)
    if directives.if_none_match is not None:
        assert isinstance(etag_matches(directives.if_none_match, b'"abc"'), bool | None)


@FUZZ
@given(headers)
@example([(b"cache-control", b"s-maxage=\xb2")])
@example([(b"cache-control", b"max-age=" + b"9" * 5000)])
@example([(b"expires", b"Mon, 01 Jan 9999 23:59:59 +9999")])
@example([(b"expires", b"1 Jan 10000 00:00:00"), (b"date", b"0")])
@example([(b"expires", b"Thu, 01 Jan 2099 00:00:00 GMT"), (b"date", b"1 Jan " + b"9" * 5000)])
def test_response_parsers_never_raise(raw):
    vary = response_vary(raw)
    assert vary is None or (isinstance(vary, tuple) and all(isinstance(name, str) and name for name in vary))
    if vary is not None:
        assert list(vary) == sorted(set(vary))
    ttl = response_ttl(raw)
    assert ttl is None or (isinstance(ttl, float) and math.isfinite(ttl) and ttl >= 0)
    for check in (shareable_with_credentials, forbids_stale, must_revalidate):
        assert isinstance(check(raw), bool)
    refusal = store_refusal(200, raw, 10, max_size=100, statuses=frozenset({200}), credentials=True)
    assert refusal is None or isinstance(refusal, str)
    etag = compute_etag(200, raw, b"body")
    assert etag.startswith(b'"') and etag.endswith(b'"')


@FUZZ
@given(latin1 | grammar_text, st.binary(max_size=40))
@example('"a", W/"b"', b'W/"b"')
@example('"' + "a" * 10_000, b'"a"')
def test_etag_matches_never_raises(if_none_match, etag):
    assert etag_matches(if_none_match, etag) in (True, False, None)


# -- delta-seconds regressions -----------------------------------------------------------------------------


def cache_control(value: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"cache-control", value)]


def test_max_age_past_the_int_digit_limit_is_two_to_the_31():
    # int() refuses strings of 4,301 digits and more: that was a 500 on every cached route.
    huge = b"max-age=" + b"9" * 4301
    assert RequestDirectives.parse(cache_control(huge)).max_age == 2**31
    assert response_ttl(cache_control(huge)) == float(2**31)
    assert response_ttl(cache_control(b"s-maxage=" + b"9" * 100_000)) == float(2**31)


@pytest.mark.parametrize(
    ("argument", "seconds"),
    [
        (b"0", 0),
        (b"5", 5),
        (b"0005", 5),
        (b"0" * 5000 + b"7", 7),
        (b"2147483647", 2**31 - 1),
        (b"2147483648", 2**31),
        (b"2147483649", 2**31),
        (b"99999999999", 2**31),
        (b"1" + b"0" * 10, 2**31),
    ],
)
def test_delta_seconds_saturate_at_two_to_the_31(argument, seconds):
    assert RequestDirectives.parse(cache_control(b"max-age=" + argument)).max_age == seconds


@pytest.mark.parametrize(
    "argument",
    [b"\xb2", b"\xb3", b"\xb9", b"1\xb2", b"-1", b"+5", b"5.0", b"1e3", b" ", b"", b'"5"', b"0x10", b"\xd9\xa3"],
)
def test_non_ascii_digit_delta_seconds_are_invalid(argument):
    # "\xb2" (superscript two) passes str.isdigit() but not int(): it is simply invalid.
    directives = RequestDirectives.parse(cache_control(b"max-age=" + argument))
    assert directives.max_age is None
    assert response_ttl(cache_control(b"max-age=" + argument)) == 0.0


def test_unicode_digits_in_cache_control_text_are_invalid():
    # parse_cache_control takes text: digits of other scripts are not delta-seconds either.
    assert parse_cache_control(["max-age=\u0663"]) == {"max-age": "\u0663"}
    assert response_ttl(cache_control("max-age=\u0663".encode())) == 0.0


# -- If-None-Match regressions -----------------------------------------------------------------------------


def test_many_if_none_match_lines_join_in_order():
    lines = [(b"if-none-match", f'"v{i}"'.encode()) for i in range(5000)]
    directives = RequestDirectives.parse(lines)
    assert directives.if_none_match == ", ".join(f'"v{i}"' for i in range(5000))
    assert etag_matches(directives.if_none_match, b'"v4999"') is True
    assert etag_matches(directives.if_none_match, b'"nope"') is False


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param('"' + "a" * 100_000 + '"', False, id="one-huge-tag"),
        pytest.param('"' + "a" * 100_000, None, id="huge-unterminated-tag"),
        pytest.param('"a"' + " " * 100_000 + "x", None, id="huge-gap-then-garbage"),
        pytest.param(", ".join(['"a"'] * 20_000), False, id="many-tags"),
        pytest.param(", ".join(['W/"a"'] * 20_000 + ['"etag"']), True, id="match-at-the-end-of-many"),
        pytest.param("W/" * 50_000, None, id="many-weak-prefixes"),
        pytest.param('"' * 100_001, None, id="odd-number-of-quotes"),
        pytest.param("*" * 100_000, None, id="many-stars"),
        pytest.param("\x00\xff\x85\xa0", None, id="controls-and-latin-1"),
        pytest.param('"a,b", "etag"', True, id="comma-inside-a-tag"),
        pytest.param('  "etag"  ', True, id="surrounding-whitespace"),
    ],
)
def test_odd_if_none_match_values(value, expected):
    assert etag_matches(value, b'"etag"') is expected


# -- Expires and Date --------------------------------------------------------------------------------------

DATE = "Thu, 01 Jan 2099 00:00:00 GMT"


@pytest.mark.parametrize(
    "expires",
    [
        "0",
        "",
        "Mon, 01 Jan 9999 23:59:59 +9999",  # offset beyond a day
        "1 Jan 10000 00:00:00 GMT",  # year beyond datetime
        "Mon, 99 Jan 2000 00:00:00 GMT",
        "1 Jan " + "9" * 5000 + " 00:00:00 GMT",
        "\xff" * 10_000,
    ],
)
def test_invalid_expires_is_already_expired(expires):
    assert response_ttl([(b"date", DATE.encode()), (b"expires", expires.encode("latin-1"))]) == 0.0
    assert response_ttl([(b"expires", expires.encode("latin-1"))]) == 0.0


def test_invalid_date_does_not_raise():
    headers = [(b"date", b"1 Jan 10000 00:00:00"), (b"expires", DATE.encode())]
    assert response_ttl(headers) == 0.0


@pytest.fixture
def far_from_utc(monkeypatch):
    """The process's local time zone set hours off UTC (restored afterwards)."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX-only")
    monkeypatch.setenv("TZ", "Pacific/Honolulu")
    time.tzset()
    if time.timezone == 0:
        pytest.skip("no time zone database")
    yield
    monkeypatch.undo()
    time.tzset()


def test_dates_are_read_as_gmt_whatever_the_local_zone(far_from_utc):
    headers = [(b"date", DATE.encode()), (b"expires", b"Thu, 01 Jan 2099 00:01:00 GMT")]
    assert response_ttl(headers) == 60.0


def test_a_numeric_zone_is_not_an_http_date_so_expires_means_expired(far_from_utc):
    # RFC 9110 section 5.6.7 allows only GMT; RFC 9111 section 5.3: an invalid Expires is in the past.
    headers = [(b"date", DATE.encode()), (b"expires", b"Thu, 01 Jan 2099 00:01:00 -0000")]
    assert response_ttl(headers) == 0.0


def test_expires_without_date_counts_from_now():
    expires = datetime.fromtimestamp(time.time() + 3600, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    ttl = response_ttl([(b"expires", expires.encode())])
    assert ttl is not None and 0 < ttl <= 3600
