"""The RFC 9111 building blocks of HTTP mode, case by case against the http-tests/cache-tests suite.

A param id names the cache-tests test a case mirrors (``suite id`` in a comment
when the id is taken by something else); cases without one follow RFC 9110/9111/9213.
In the suite, ``Date: 0`` means "now" and a relative number is seconds from now;
here "now" is ``NOW`` and :func:`date` writes the IMF-fixdate of ``NOW + offset``.
"""

import calendar
import math
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intelligent_cache import policy
from intelligent_cache.fields import (
    ALREADY_EXPIRED,
    UNREADABLE_AGE,
    expires_at,
    last_modified,
    parse_age,
    parse_http_date,
    response_date,
    targeted_directives,
)
from intelligent_cache.rfc9111 import (
    content_range,
    current_age,
    freshness_lifetime,
    initial_age,
    parse_range,
    stored_headers,
    unsatisfied_content_range,
    updated_headers,
)

NOW = 1_750_000_000.0  # 2025-06-15: the RFC 850 century rule depends on it
PAUSE = 3.0  # the suite's pause_after between the two requests of a test

PROPERTIES = settings(max_examples=300, derandomize=True, database=None, deadline=None)


def date(offset: float = 0) -> str:
    return formatdate(NOW + offset, usegmt=True)


def raw(*fields: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in fields]


def gmt(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second)))


# -- parse_http_date ---------------------------------------------------------------------------------------

SUN_06_NOV_1994 = gmt(1994, 11, 6, 8, 49, 37)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # RFC 9110 section 5.6.7's three examples
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", SUN_06_NOV_1994, id="imf-fixdate"),
        pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", SUN_06_NOV_1994, id="rfc850"),
        pytest.param("Sun Nov  6 08:49:37 1994", SUN_06_NOV_1994, id="asctime"),
        pytest.param("Sun Nov 06 08:49:37 1994", SUN_06_NOV_1994, id="asctime-2digit-day"),
        # expires-parse (kind optimal: a cache should accept these)
        pytest.param("Tue, 19 Jan 2038 14:14:08 GMT", gmt(2038, 1, 19, 14, 14, 8), id="freshness-expires-32bit"),
        pytest.param("Sun, 21 Nov 2286 04:46:39 GMT", gmt(2286, 11, 21, 4, 46, 39), id="freshness-expires-far-future"),
        pytest.param("Thursday, 18-Aug-50 02:01:18 GMT", gmt(2050, 8, 18, 2, 1, 18), id="freshness-expires-rfc850"),
        pytest.param("Thu Aug  8 02:01:18 2050", gmt(2050, 8, 8, 2, 1, 18), id="freshness-expires-ansi-c"),
        pytest.param(
            "THU, 18 Aug 2050 02:01:18 GMT", gmt(2050, 8, 18, 2, 1, 18), id="freshness-expires-wrong-case-weekday"
        ),
        pytest.param(
            "Thu, 18 AUG 2050 02:01:18 GMT", gmt(2050, 8, 18, 2, 1, 18), id="freshness-expires-wrong-case-month"
        ),
        pytest.param("Thu, 18 Aug 2050 02:01:18 gMT", gmt(2050, 8, 18, 2, 1, 18), id="freshness-expires-wrong-case-tz"),
        pytest.param("thursday, 18-aug-50 02:01:18 gmt", gmt(2050, 8, 18, 2, 1, 18), id="rfc850-lower-case"),
        pytest.param("thu aug 18 02:01:18 2050", gmt(2050, 8, 18, 2, 1, 18), id="asctime-lower-case"),
        # expires-parse / expires-freshness (required: an invalid Expires is already expired)
        pytest.param("Thu, 18 Aug 2050 02:01:18 UTC", None, id="freshness-expires-invalid-utc"),
        pytest.param("Thu, 18 Aug 2050 02:01:18 AEST", None, id="freshness-expires-invalid-aest"),
        pytest.param("Thu, 18 Aug 50 02:01:18 GMT", None, id="freshness-expires-invalid-2-digit-year"),
        pytest.param("Thu 18 Aug 2050 02:01:18 GMT", None, id="freshness-expires-invalid-no-comma"),
        pytest.param("Thu, 18  Aug  2050 02:01:18 GMT", None, id="freshness-expires-invalid-multiple-spaces"),
        pytest.param("Thu, 18-Aug-2050 02:01:18 GMT", None, id="freshness-expires-invalid-date-dashes"),
        pytest.param("Thu, 18 Aug 2050 02.01.18 GMT", None, id="freshness-expires-invalid-time-periods"),
        pytest.param("Thu, 18 Aug 2050 2:01:18 GMT", None, id="freshness-expires-invalid-1-digit-hour"),
        pytest.param("0", None, id="freshness-expires-invalid"),
        # other zones and forms the grammar excludes
        pytest.param("Thu, 18 Aug 2050 02:01:18 +0000", None, id="plus-zero-zone"),
        pytest.param("Thu, 18 Aug 2050 02:01:18 -0000", None, id="minus-zero-zone"),
        pytest.param("Thu, 18 Aug 2050 02:01:18", None, id="no-zone"),
        pytest.param("Thu, 18 Aug 2050 02:01 GMT", None, id="no-seconds"),
        pytest.param("Thu, 8 Aug 2050 02:01:18 GMT", None, id="1-digit-day"),
        pytest.param("Thursday, 18 Aug 2050 02:01:18 GMT", None, id="imf-long-day-name"),
        pytest.param("Thu, 18-Aug-50 02:01:18 GMT", None, id="rfc850-short-day-name"),
        pytest.param("Thursday, 18-Aug-2050 02:01:18 GMT", None, id="rfc850-4-digit-year"),
        pytest.param("Thu Aug 8 02:01:18 2050", None, id="asctime-single-space-day"),
        pytest.param("Thu Aug  8 02:01:18 2050 GMT", None, id="asctime-with-zone"),
        pytest.param("Thu Aug  8 02:01:18 50", None, id="asctime-2-digit-year"),
        pytest.param("Thu, 18 August 2050 02:01:18 GMT", None, id="long-month"),
        pytest.param("Xyz, 18 Aug 2050 02:01:18 GMT", None, id="unknown-day-name"),
        pytest.param("Thu, 18 Aug 2050 02:01:18 GMT junk", None, id="trailing-junk"),
        pytest.param("Thu, 18 Aug 2050 02:01:18 GMT,", None, id="trailing-comma"),
        pytest.param("2050-08-18T02:01:18Z", None, id="iso-8601"),
        pytest.param("1439323278", None, id="epoch-seconds"),
        pytest.param("", None, id="empty"),
        pytest.param("Thu, \u0661\u0668 Aug 2050 02:01:18 GMT", None, id="non-ascii-digits"),
        pytest.param("Thu, 18 Aug 2050 02:01:18 GMT" + " " * 10_000 + "x", None, id="long-junk"),
        # field values exclude leading and trailing OWS (RFC 9110 section 5.5)
        pytest.param(" \tSun, 06 Nov 1994 08:49:37 GMT\t ", SUN_06_NOV_1994, id="surrounding-ows"),
        # impossible dates and times
        pytest.param("Thu, 31 Apr 2050 02:01:18 GMT", None, id="31-april"),
        pytest.param("Wed, 29 Feb 2023 00:00:00 GMT", None, id="29-february-common-year"),
        pytest.param("Thu, 29 Feb 2024 00:00:00 GMT", gmt(2024, 2, 29), id="29-february-leap-year"),
        pytest.param("Tue, 29 Feb 2000 00:00:00 GMT", gmt(2000, 2, 29), id="29-february-2000"),
        pytest.param("Fri, 29 Feb 2100 00:00:00 GMT", None, id="29-february-2100"),
        pytest.param("Thu, 00 Aug 2050 02:01:18 GMT", None, id="day-0"),
        pytest.param("Mon, 99 Jan 2000 00:00:00 GMT", None, id="day-99"),
        pytest.param("Thu, 18 Aug 2050 24:00:00 GMT", None, id="hour-24"),
        pytest.param("Thu, 18 Aug 2050 02:60:00 GMT", None, id="minute-60"),
        pytest.param("Thu, 18 Aug 2050 02:01:61 GMT", None, id="second-61"),
        # a leap second reads as the second before (RFC 9111 section 4.2: never later than the value)
        pytest.param("Sat, 31 Dec 2016 23:59:60 GMT", gmt(2016, 12, 31, 23, 59, 59), id="leap-second"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 0.0, id="epoch"),
        pytest.param("Wed, 31 Dec 1969 23:59:59 GMT", -1.0, id="before-epoch"),
        pytest.param("Mon, 01 Jan 0001 00:00:00 GMT", gmt(1, 1, 1), id="year-1"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", gmt(9999, 12, 31, 23, 59, 59), id="year-9999"),
    ],
)
def test_parse_http_date(value, expected):
    assert parse_http_date(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("two_digits", "now_year", "year"),
    [
        pytest.param("50", 2025, 2050, id="25-years-ahead"),
        pytest.param("75", 2025, 2075, id="50-years-ahead"),
        pytest.param("76", 2025, 1976, id="51-years-ahead-is-last-century"),
        pytest.param("99", 2025, 1999, id="99"),
        pytest.param("25", 2025, 2025, id="this-year"),
        pytest.param("00", 2025, 2000, id="00"),
        pytest.param("05", 2095, 2105, id="next-century"),
        pytest.param("45", 2095, 2145, id="next-century-50-years-ahead"),
        pytest.param("46", 2095, 2046, id="next-century-too-far"),
    ],
)
def test_rfc850_two_digit_year(two_digits, now_year, year):
    # RFC 9110 section 5.6.7: more than 50 years in the future is the most recent past year with those digits.
    now = gmt(now_year, 6, 1)
    expected = gmt(year, 8, 18, 2, 1, 18)
    assert parse_http_date(f"Monday, 18-Aug-{two_digits} 02:01:18 GMT", now=now) == expected


def test_rfc850_year_defaults_to_the_current_time():
    this_year = time.gmtime().tm_year
    assert parse_http_date(f"Monday, 01-Jan-{this_year % 100:02d} 00:00:00 GMT") == gmt(this_year, 1, 1)


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


def test_dates_do_not_depend_on_the_local_time_zone(far_from_utc):
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == SUN_06_NOV_1994
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == SUN_06_NOV_1994
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == SUN_06_NOV_1994  # asctime has no zone: GMT


def test_the_app_mode_ttl_reads_dates_with_the_strict_parser():
    base = [(b"date", b"Sun, 06 Nov 1994 08:49:37 GMT")]
    assert policy.response_ttl([*base, (b"expires", b"Sun, 06 Nov 1994 08:50:37 GMT")]) == 60.0
    assert policy.response_ttl([*base, (b"expires", b"Sun, 06 Nov 1994 08:50:37 -0000")]) == 0.0
    assert policy.response_ttl([*base, (b"expires", b"6 Nov 1994 08:50:37 GMT")]) == 0.0


SECONDS = st.integers(min_value=-62_135_596_800, max_value=253_402_300_798)  # years 1 to 9999


@PROPERTIES
@given(SECONDS, st.one_of(st.just(0.0), st.floats(min_value=0.001, max_value=0.999)))
def test_formatdate_round_trips(seconds, fraction):
    # formatdate drops the fraction of a second: the date parses back to the second it is in
    assert parse_http_date(formatdate(seconds + fraction, usegmt=True)) == seconds


@PROPERTIES
@given(st.integers(min_value=-30_610_224_000, max_value=253_402_300_799))  # years 1000 to 9999
def test_asctime_round_trips(timestamp):
    assert parse_http_date(time.asctime(time.gmtime(timestamp))) == timestamp


@PROPERTIES
@given(st.text(max_size=60))
def test_parse_http_date_never_raises(value):
    result = parse_http_date(value)
    assert result is None or (isinstance(result, float) and math.isfinite(result))


# -- Date, Expires, Last-Modified --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([("Date", date())], NOW, id="valid"),
        pytest.param([], None, id="absent"),
        pytest.param([("Date", "foo")], None, id="freshness-expires-invalid-date"),
        pytest.param([("Date", date()), ("Date", date())], None, id="two-lines"),
        pytest.param([("Date", date() + ", " + date())], None, id="a-list"),
    ],
)
def test_response_date(fields, expected):
    assert response_date(raw(*fields)) == expected


def test_last_modified():
    assert last_modified(raw(("Last-Modified", date(-60)))) == NOW - 60
    assert last_modified(raw(("Last-Modified", date(-60)), ("Last-Modified", date(-30)))) is None
    assert last_modified(raw(("Last-Modified", "yesterday"))) is None
    assert last_modified([]) is None


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param([("Expires", date(3600))], NOW + 3600, id="valid"),
        pytest.param([("Expires", "0")], ALREADY_EXPIRED, id="freshness-expires-invalid"),
        pytest.param([("Expires", "")], ALREADY_EXPIRED, id="empty"),
        pytest.param(
            [("Expires", "Thu, 18 Aug 2050 02:01:18 UTC")], ALREADY_EXPIRED, id="freshness-expires-invalid-utc"
        ),
        pytest.param(
            [("Expires", "Thu, 18 Aug 2050 2:01:18 GMT"), ("Expires", "Thu, 18 Aug 2050 2:01:19 GMT")],
            ALREADY_EXPIRED,
            id="freshness-expires-invalid-multiple-lines",
        ),
        # RFC 9111 section 5.3: several Expires lines are invalid, even valid and equal ones
        pytest.param([("Expires", date(60)), ("Expires", date(60))], ALREADY_EXPIRED, id="two-valid-lines"),
    ],
)
def test_expires_at(fields, expected):
    assert expires_at(raw(*fields)) == expected


def test_already_expired_is_before_any_time():
    assert ALREADY_EXPIRED < -1e300
    assert math.isinf(ALREADY_EXPIRED)


# -- Age -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ages", "expected"),
    [
        pytest.param([], None, id="absent"),
        pytest.param(["7200"], 7200, id="freshness-max-age-age"),
        # Unreadable: counted as the oldest age there is, so the response is stale.
        pytest.param(["abc"], UNREADABLE_AGE, id="age-parse-nonnumeric"),
        pytest.param(["-7200"], UNREADABLE_AGE, id="age-parse-negative"),
        pytest.param(["7200.0"], UNREADABLE_AGE, id="age-parse-float"),
        pytest.param(["2147483647"], 2147483647, id="age-parse-large-minus-one"),
        pytest.param(["2147483648"], 2**31, id="age-parse-large"),
        pytest.param(["2147483649"], 2**31, id="age-parse-larger"),
        pytest.param(["9" * 10_000], 2**31, id="thousands-of-digits"),
        # A list on one line: its first member (RFC 9111 section 5.1).
        pytest.param(["7200,0"], 7200, id="age-parse-suffix"),
        pytest.param(["0,7200"], 0, id="age-parse-prefix"),
        pytest.param(["0, 0"], 0, id="age-parse-dup-0"),
        pytest.param(["3600, 3600"], 3600, id="age-parse-dup-old"),
        # Several lines: hops that disagree, unreadable.
        pytest.param(["7200", "0"], UNREADABLE_AGE, id="age-parse-suffix-twoline"),
        pytest.param(["0", "7200"], UNREADABLE_AGE, id="age-parse-prefix-twoline"),
        pytest.param(["0", "0"], UNREADABLE_AGE, id="age-parse-dup-0-twoline"),
        # kind "check" in the suite: parameters ignored, the number kept (never makes a response fresher)
        pytest.param(["7200;foo=bar"], 7200, id="age-parse-parameter"),
        pytest.param(["7200;foo=111"], 7200, id="age-parse-numeric-parameter"),
        pytest.param(["003600"], 3600, id="leading-zeros"),
        pytest.param([" 60 "], 60, id="surrounding-ows"),
        pytest.param(["+60"], UNREADABLE_AGE, id="plus-sign"),
        pytest.param(["6 0"], UNREADABLE_AGE, id="inner-space"),
        pytest.param(["\xb2"], UNREADABLE_AGE, id="superscript-digit"),
        pytest.param(["", "60"], 60, id="empty-line-skipped"),
        pytest.param([", 60"], 60, id="empty-first-member-skipped"),
        pytest.param([","], UNREADABLE_AGE, id="only-commas"),
    ],
)
def test_parse_age(ages, expected):
    assert parse_age(raw(*(("Age", age) for age in ages))) == expected


# -- targeted fields (RFC 9213) and Cache-Control ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([("CDN-Cache-Control", "max-age=3600")], ({"max-age": "3600"}, True), id="cdn-max-age"),
        pytest.param(
            [("CDN-Cache-Control", "max-age=99999999999")],
            ({"max-age": "99999999999"}, True),
            id="cdn-max-age-max-plus",
        ),
        pytest.param(
            [("CDN-Cache-Control", "foobar, max-age=3600")],
            ({"foobar": None, "max-age": "3600"}, True),
            id="cdn-max-age-extension",
        ),
        pytest.param(
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")],
            ({"max-age": "10000"}, True),
            id="cdn-fresh-cc-nostore",
        ),
        pytest.param(
            [("Cache-Control", "max-age=10000"), ("CDN-Cache-Control", "no-store")],
            ({"no-store": None}, True),
            id="cdn-no-store-cc-fresh",
        ),
        pytest.param(
            [("CDN-Cache-Control", "private"), ("Cache-Control", "max-age=10000")],
            ({"private": None}, True),
            id="cdn-private",
        ),
        pytest.param(
            [("CDN-Cache-Control", "no-cache"), ("Cache-Control", "max-age=10000")],
            ({"no-cache": None}, True),
            id="cdn-no-cache",
        ),
        pytest.param([("CDN-Cache-Control", "foo")], ({"foo": None}, True), id="cdn-remove-header"),
        # invalid Structured Fields are ignored: Cache-Control governs
        pytest.param(
            [("CDN-Cache-Control", "max-age=10000, &&&&&"), ("Cache-Control", "no-store")],
            ({"no-store": None}, False),
            id="cdn-cc-invalid-sh-type-unknown",
        ),
        pytest.param(
            [("CDN-Cache-Control", 'max-age="10000"'), ("Cache-Control", "no-store")],
            ({"no-store": None}, False),
            id="cdn-cc-invalid-sh-type-wrong",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age =100")],
            ({"max-age": "1"}, False),
            id="cdn-max-age-space-before-equals",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age= 100")],
            ({"max-age": "1"}, False),
            id="cdn-max-age-space-after-equals",
        ),
        # suite kind "check" expects reuse; Structured Field keys are lower-case, so the field is invalid
        pytest.param([("CDN-Cache-Control", "MaX-aGe=3600")], ({}, False), id="cdn-max-age-case-insensitive"),
        pytest.param([("CDN-Cache-Control", "")], ({}, False), id="empty"),
        pytest.param([("CDN-Cache-Control", "   ")], ({}, False), id="blank"),
        pytest.param([("CDN-Cache-Control", "max-age=5,")], ({}, False), id="trailing-comma"),
        pytest.param([("CDN-Cache-Control", "max-age=1.5")], ({}, False), id="decimal-max-age"),
        pytest.param([("CDN-Cache-Control", "max-age=-1")], ({}, False), id="negative-max-age"),
        pytest.param([("CDN-Cache-Control", "max-age")], ({}, False), id="max-age-without-value"),
        pytest.param([("CDN-Cache-Control", "no-store=5")], ({}, False), id="flag-with-value"),
        pytest.param([("CDN-Cache-Control", "no-store=?0")], ({}, False), id="flag-false"),
        pytest.param([("CDN-Cache-Control", "no-cache=5")], ({}, False), id="no-cache-integer"),
        pytest.param([("CDN-Cache-Control", "max-age=1234567890123456")], ({}, False), id="16-digit-integer"),
        pytest.param([("CDN-Cache-Control", "max-age=5 s-maxage=6")], ({}, False), id="missing-comma"),
        pytest.param([("CDN-Cache-Control", "max-age=\xb2")], ({}, False), id="non-ascii"),
        pytest.param([("CDN-Cache-Control", 'x="unterminated')], ({}, False), id="unterminated-string"),
        pytest.param([("CDN-Cache-Control", "x=(a b")], ({}, False), id="unterminated-inner-list"),
        pytest.param([("CDN-Cache-Control", "x=@12")], ({}, False), id="date-type"),
        # valid forms
        pytest.param(
            [("CDN-Cache-Control", 'no-cache="set-cookie", private="x"')],
            ({"no-cache": '"set-cookie', "private": '"x'}, True),
            id="field-name-strings",
        ),
        pytest.param(
            [("CDN-Cache-Control", "max-age=60;a=1;b, public;x")],
            ({"max-age": "60", "public": None}, True),
            id="parameters-ignored",
        ),
        pytest.param([("CDN-Cache-Control", "max-age=1, max-age=60")], ({"max-age": "60"}, True), id="last-key-wins"),
        pytest.param(
            [("CDN-Cache-Control", "max-age=60"), ("CDN-Cache-Control", "public")],
            ({"max-age": "60", "public": None}, True),
            id="lines-combined",
        ),
        pytest.param(
            [("CDN-Cache-Control", "  max-age=60 ,\tpublic")],
            ({"max-age": "60", "public": None}, True),
            id="leading-sp-and-ows-around-commas",
        ),
        pytest.param(
            [("CDN-Cache-Control", 'ext=(a "b" 1;p), other=:aGk=:, t=?0, d=1.25, tok=a/b')],
            ({"ext": '(a "b" 1;p)', "other": ":aGk=:", "t": "?0", "d": "1.25", "tok": "a/b"}, True),
            id="extension-values",
        ),
    ],
)
def test_targeted_directives(fields, expected):
    assert targeted_directives(raw(*fields)) == expected


def test_target_order_wins_over_field_order():
    headers = raw(("CDN-Cache-Control", "max-age=10"), ("Intelligent-Cache-Control", "max-age=20"))
    assert targeted_directives(headers) == ({"max-age": "20"}, True)
    assert targeted_directives(headers, (b"cdn-cache-control", b"intelligent-cache-control")) == (
        {"max-age": "10"},
        True,
    )


def test_an_invalid_first_target_falls_through_to_the_next():
    headers = raw(("Intelligent-Cache-Control", "max-age=&"), ("CDN-Cache-Control", "max-age=10"))
    assert targeted_directives(headers) == ({"max-age": "10"}, True)


def test_no_targets_means_cache_control():
    headers = raw(("CDN-Cache-Control", "max-age=10"), ("Cache-Control", "max-age=5"))
    assert targeted_directives(headers, ()) == ({"max-age": "5"}, False)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(["max-age=3600"], {"max-age": "3600"}, id="freshness-max-age"),
        pytest.param(["MaX-aGe=3600"], {"max-age": "3600"}, id="freshness-max-age-case-insenstive"),
        pytest.param(["max-age=1800, max-age=1"], {"max-age": "1800"}, id="freshness-max-age-two-fresh-stale-sameline"),
        pytest.param(
            ["max-age=1800", "max-age=1"], {"max-age": "1800"}, id="freshness-max-age-two-fresh-stale-sepline"
        ),
        pytest.param(['max-age="3600"'], {"max-age": '"3600'}, id="freshness-max-age-quoted"),
        pytest.param(
            ['extension="max-age=3600", max-age=1'],
            {"extension": '"max-age=3600', "max-age": "1"},
            id="freshness-max-age-ignore-quoted",
        ),
        pytest.param(
            ['max-age=1, extension="max-age=3600"'],
            {"max-age": "1", "extension": '"max-age=3600'},
            id="freshness-max-age-ignore-quoted-rev",
        ),
        # a single-quoted value is a token, and no delta-seconds
        pytest.param(["max-age='3600'"], {"max-age": "'3600'"}, id="freshness-max-age-single-quoted"),
        # malformed elements keep their name without an argument
        pytest.param(["max-age =3600"], {"max-age": None}, id="freshness-max-age-space-before-equals"),
        pytest.param(["max-age= 3600"], {"max-age": None}, id="freshness-max-age-space-after-equals"),
        pytest.param(["no-store x, max-age=5"], {"no-store": None, "max-age": "5"}, id="junk-after-a-flag"),
        pytest.param(['a="x\\", max-age=9", b'], {"a": '"x", max-age=9', "b": None}, id="escaped-quote"),
        pytest.param([", ,max-age=5,,"], {"max-age": "5"}, id="empty-elements"),
        pytest.param(['a="unterminated, max-age=5'], {"a": None}, id="unterminated-quote"),
        pytest.param(["=5, (x), max-age=5"], {"max-age": "5"}, id="no-name"),
    ],
)
def test_cache_control_fallback_is_strict(values, expected):
    assert targeted_directives(raw(*(("Cache-Control", value) for value in values))) == (expected, False)


@PROPERTIES
@given(st.lists(st.text(max_size=80), max_size=3), st.lists(st.text(max_size=80), max_size=3))
def test_targeted_directives_never_raise(cdn, cache_control):
    fields = [("CDN-Cache-Control", value) for value in cdn] + [("Cache-Control", value) for value in cache_control]
    headers = [(name.lower().encode(), value.encode("utf-8")) for name, value in fields]
    directives, targeted = targeted_directives(headers)
    assert isinstance(targeted, bool)
    assert all(
        isinstance(name, str) and (value is None or isinstance(value, str)) for name, value in directives.items()
    )


# -- freshness_lifetime ------------------------------------------------------------------------------------------


def lifetime(fields, **options):
    options.setdefault("received", NOW)
    return freshness_lifetime(raw(*fields), **options)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param([], None, id="freshness-none"),
        pytest.param([("Cache-Control", "max-age=3600")], 3600, id="freshness-max-age"),
        pytest.param([("Cache-Control", "max-age=0")], 0, id="freshness-max-age-0"),
        pytest.param([("Cache-Control", "max-age=2147483648")], 2**31, id="freshness-max-age-max"),
        pytest.param([("Cache-Control", "max-age=99999999999")], 2**31, id="freshness-max-age-max-plus"),
        pytest.param([("Cache-Control", "max-age=-3600")], 0, id="freshness-max-age-negative"),
        pytest.param([("Cache-Control", "foobar, max-age=3600")], 3600, id="freshness-max-age-extension"),
        pytest.param([("Cache-Control", "MaX-aGe=3600")], 3600, id="freshness-max-age-case-insenstive"),
        pytest.param([("Cache-Control", "max-age=003600")], 3600, id="freshness-max-age-leading-zero"),
        pytest.param(
            [("Cache-Control", 'extension="max-age=3600", max-age=1')], 1, id="freshness-max-age-ignore-quoted"
        ),
        pytest.param(
            [("Cache-Control", 'max-age=1, extension="max-age=3600"')], 1, id="freshness-max-age-ignore-quoted-rev"
        ),
        pytest.param([("Cache-Control", "max-age='3600'")], 0, id="freshness-max-age-single-quoted"),
        # suite kind "check": RFC 9111 section 5.2 has recipients accept the quoted form
        pytest.param([("Cache-Control", 'max-age="3600"')], 3600, id="freshness-max-age-quoted"),
        # suite kind "check" (reuse expected); RFC 9111 section 4.2.1 encourages invalid = stale
        pytest.param([("Cache-Control", "max-age=3600.0")], 0, id="freshness-max-age-decimal-zero"),
        pytest.param([("Cache-Control", "max-age=3600.5")], 0, id="freshness-max-age-decimal-five"),
        pytest.param([("Cache-Control", "max-age=a3600")], 0, id="freshness-max-age-a100"),
        pytest.param([("Cache-Control", "max-age=3600a")], 0, id="freshness-max-age-100a"),
        pytest.param([("Cache-Control", "max-age =3600")], 0, id="freshness-max-age-space-before-equals"),
        pytest.param([("Cache-Control", "max-age= 3600")], 0, id="freshness-max-age-space-after-equals"),
        pytest.param([("Cache-Control", "max-age")], 0, id="max-age-without-argument"),
        # suite kind "check": RFC 9111 section 4.2.1 lets the first occurrence count
        pytest.param(
            [("Cache-Control", "max-age=1800, max-age=1")], 1800, id="freshness-max-age-two-fresh-stale-sameline"
        ),
        pytest.param(
            [("Cache-Control", "max-age=1, max-age=1800")], 1, id="freshness-max-age-two-stale-fresh-sameline"
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("Cache-Control", "max-age=1800")],
            1,
            id="freshness-max-age-two-stale-fresh-sepline",
        ),
        # s-maxage in a shared cache
        pytest.param([("Cache-Control", "s-maxage=3600")], 3600, id="freshness-s-maxage-shared"),
        pytest.param([("Cache-Control", "max-age=3600, s-maxage=1")], 1, id="freshness-max-age-s-maxage-shared-longer"),
        pytest.param(
            [("Cache-Control", "s-maxage=1, max-age=3600")], 1, id="freshness-max-age-s-maxage-shared-longer-reversed"
        ),
        pytest.param(
            [("Cache-Control", "max-age=3600"), ("Cache-Control", "s-maxage=1")],
            1,
            id="freshness-max-age-s-maxage-shared-longer-multiple",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1, s-maxage=3600")], 3600, id="freshness-max-age-s-maxage-shared-shorter"
        ),
        pytest.param(
            [("Expires", date(-10)), ("Cache-Control", "max-age=0, s-maxage=3600")],
            3600,
            id="freshness-max-age-s-maxage-shared-shorter-expires",
        ),
        pytest.param([("Cache-Control", "s-maxage=abc, max-age=3600")], 0, id="invalid-s-maxage-is-stale"),
        # max-age over Expires
        pytest.param(
            [("Cache-Control", "max-age=3600"), ("Expires", date(-7200)), ("Date", date())],
            3600,
            id="freshness-max-age-expires",
        ),
        pytest.param(
            [("Cache-Control", "max-age=3600"), ("Expires", "0"), ("Date", date())],
            3600,
            id="freshness-max-age-expires-invalid",
        ),
        pytest.param(
            [("Expires", date(3600)), ("Cache-Control", "max-age=0"), ("Date", date())],
            0,
            id="freshness-max-age-0-expires",
        ),
        # Expires - Date
        pytest.param(
            [("Expires", date(30 * 24 * 3600)), ("Date", date())], 30 * 24 * 3600, id="freshness-expires-future"
        ),
        pytest.param([("Expires", date(-30 * 24 * 3600)), ("Date", date())], 0, id="freshness-expires-past"),
        pytest.param([("Expires", date()), ("Date", date())], 0, id="freshness-expires-present"),
        pytest.param([("Expires", date(300)), ("Date", date(400))], 0, id="freshness-expires-old-date"),
        pytest.param([("Expires", "0"), ("Date", date())], 0, id="freshness-expires-invalid"),
        pytest.param([("Date", "foo"), ("Expires", date(10))], 10, id="freshness-expires-invalid-date"),
        pytest.param([("Expires", date(10))], 10, id="expires-without-date"),
        pytest.param(
            [("Date", date(-10)), ("Expires", date(10)), ("Age", "25")], 20, id="freshness-expires-age-slow-date"
        ),
        pytest.param(
            [("Date", date(10)), ("Expires", date(20)), ("Age", "15")], 10, id="freshness-expires-age-fast-date"
        ),
        pytest.param(
            [("Expires", "Thu, 18 Aug 2050 02:01:18 UTC"), ("Date", date())], 0, id="freshness-expires-invalid-utc"
        ),
        pytest.param(
            [("Expires", "Thu, 18 Aug 2050 02:01:18 GMT"), ("Expires", "Thu, 18 Aug 2050 02:01:18 GMT")],
            0,
            id="freshness-expires-invalid-multiple-lines",
        ),
        pytest.param(
            [("Expires", "Tue, 19 Jan 2038 14:14:08 GMT"), ("Date", date())],
            gmt(2038, 1, 19, 14, 14, 8) - NOW,
            id="freshness-expires-32bit",
        ),
        pytest.param(
            [("Expires", "Sun, 21 Nov 2286 04:46:39 GMT"), ("Date", date())],
            gmt(2286, 11, 21, 4, 46, 39) - NOW,
            id="freshness-expires-far-future",
        ),
        # CDN-Cache-Control: it and nothing else
        pytest.param([("CDN-Cache-Control", "max-age=3600")], 3600, id="cdn-max-age"),
        pytest.param([("CDN-Cache-Control", "max-age=2147483648")], 2**31, id="cdn-max-age-max"),
        pytest.param([("CDN-Cache-Control", "max-age=99999999999")], 2**31, id="cdn-max-age-max-plus"),
        pytest.param([("CDN-Cache-Control", "max-age=0")], 0, id="cdn-max-age-0"),
        pytest.param([("CDN-Cache-Control", "foobar, max-age=3600")], 3600, id="cdn-max-age-extension"),
        pytest.param(
            [("CDN-Cache-Control", "max-age=3600"), ("Expires", date(-10000)), ("Date", date())],
            3600,
            id="cdn-max-age-expires",
        ),
        pytest.param(
            [("CDN-Cache-Control", "max-age=3600"), ("Expires", "0"), ("Date", date())],
            3600,
            id="cdn-max-age-cc-max-age-invalid-expires",
        ),
        pytest.param(
            [("CDN-Cache-Control", "max-age=0"), ("Expires", date(10000)), ("Date", date())],
            0,
            id="cdn-max-age-0-expires",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=3600")],
            3600,
            id="cdn-max-age-short-cc-max-age",
        ),
        pytest.param(
            [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1")], 1, id="cdn-max-age-long-cc-max-age"
        ),
        pytest.param(
            [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=10000")], 10000, id="cdn-fresh-cc-nostore"
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age=10000"), ("Date", date())],
            10000,
            id="cdn-remove-age-exceed",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age =100")],
            1,
            id="cdn-max-age-space-before-equals",
        ),
        pytest.param([("CDN-Cache-Control", "s-maxage=5, max-age=3600")], 5, id="cdn-s-maxage-first-in-a-shared-cache"),
        pytest.param([("CDN-Cache-Control", "public"), ("Expires", date(3600))], None, id="cdn-ignores-expires"),
        pytest.param(
            [("CDN-Cache-Control", 'max-age="10000"'), ("Expires", date(60))], 60, id="invalid-cdn-uses-expires"
        ),
    ],
)
def test_freshness_lifetime(fields, expected):
    assert lifetime(fields) == expected


def test_s_maxage_is_for_shared_caches_only():
    # freshness-max-age-s-maxage-private (browser_only in the suite): a private cache ignores s-maxage
    assert lifetime([("Cache-Control", "s-maxage=3600, max-age=1")], shared=False) == 1
    assert lifetime([("Cache-Control", "s-maxage=3600")], shared=False) is None


def test_freshness_lifetime_takes_precomputed_directives():
    headers = raw(("Cache-Control", "max-age=5"), ("Expires", date(60)))
    assert freshness_lifetime(headers, received=NOW, directives=({}, True)) is None  # targeted: no Expires
    assert freshness_lifetime(headers, received=NOW, directives=({}, False)) == 60
    assert freshness_lifetime(headers, received=NOW, directives=({"max-age": "7"}, False)) == 7


HEURISTIC = 0.1
DAY = 24 * 3600
LAST_MODIFIED_DAY = [("Last-Modified", date(-24 * 3600)), ("Date", date())]


@pytest.mark.parametrize(
    ("status", "extra", "expected"),
    [
        # heuristic-<status>-cached is kind optimal; heuristic-<status>-not_cached is required
        pytest.param(200, [], HEURISTIC * DAY, id="heuristic-200-cached"),
        pytest.param(201, [], None, id="heuristic-201-not_cached"),
        pytest.param(202, [], None, id="heuristic-202-not_cached"),
        pytest.param(203, [], HEURISTIC * DAY, id="heuristic-203-cached"),
        pytest.param(204, [], HEURISTIC * DAY, id="heuristic-204-cached"),
        pytest.param(403, [], None, id="heuristic-403-not_cached"),
        pytest.param(404, [], HEURISTIC * DAY, id="heuristic-404-cached"),
        pytest.param(405, [], HEURISTIC * DAY, id="heuristic-405-cached"),
        pytest.param(410, [], HEURISTIC * DAY, id="heuristic-410-cached"),
        pytest.param(414, [], HEURISTIC * DAY, id="heuristic-414-cached"),
        pytest.param(501, [], HEURISTIC * DAY, id="heuristic-501-cached"),
        pytest.param(502, [], None, id="heuristic-502-not_cached"),
        pytest.param(503, [], None, id="heuristic-503-not_cached"),
        pytest.param(504, [], None, id="heuristic-504-not_cached"),
        pytest.param(599, [], None, id="heuristic-599-not_cached"),
        pytest.param(599, [("Cache-Control", "public")], HEURISTIC * DAY, id="heuristic-599-cached"),
        pytest.param(599, [("CDN-Cache-Control", "public")], HEURISTIC * DAY, id="targeted-public"),
        pytest.param(200, [("Cache-Control", "no-cache")], HEURISTIC * DAY, id="no-cache-is-not-freshness"),
        # explicit freshness wins, even an expired one (RFC 9111 section 4.2.2)
        pytest.param(200, [("Expires", "0")], 0, id="invalid-expires-is-explicit"),
        pytest.param(200, [("Cache-Control", "max-age=0")], 0, id="max-age-0-is-explicit"),
    ],
)
def test_heuristic_freshness(status, extra, expected):
    assert lifetime(LAST_MODIFIED_DAY + extra, status=status, heuristic_fraction=HEURISTIC) == expected


@pytest.mark.parametrize(
    ("fields", "options", "expected"),
    [
        pytest.param(LAST_MODIFIED_DAY, {}, None, id="no-heuristic-by-default"),
        pytest.param(LAST_MODIFIED_DAY, {"heuristic_fraction": -1.0}, None, id="negative-fraction"),
        pytest.param(LAST_MODIFIED_DAY, {"heuristic_fraction": math.nan}, None, id="nan-fraction"),
        pytest.param([("Date", date())], {"heuristic_fraction": 0.1}, None, id="no-last-modified"),
        pytest.param(
            [("Last-Modified", "yesterday"), ("Date", date())],
            {"heuristic_fraction": 0.1},
            None,
            id="bad-last-modified",
        ),
        pytest.param(
            [("Last-Modified", date(10)), ("Date", date())], {"heuristic_fraction": 0.1}, None, id="modified-after-date"
        ),
        pytest.param(
            [("Last-Modified", date()), ("Date", date())], {"heuristic_fraction": 0.1}, None, id="modified-at-date"
        ),
        pytest.param(
            [("Last-Modified", date(-1000))], {"heuristic_fraction": 0.1}, 100, id="no-date-counts-from-received"
        ),
        pytest.param(
            [("Last-Modified", date(-1000)), ("Date", "foo")],
            {"heuristic_fraction": 0.1},
            100,
            id="invalid-date-counts-from-received",
        ),
        pytest.param(
            [("Last-Modified", date(-600)), ("Date", date(-100))],
            {"heuristic_fraction": 0.5},
            250,
            id="date-minus-last-modified",
        ),
    ],
)
def test_heuristic_conditions(fields, options, expected):
    assert lifetime(fields, **options) == expected


# -- ages ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "request_time", "response_time", "expected"),
    [
        pytest.param([], NOW, NOW, 0, id="nothing"),
        pytest.param([("Date", date())], NOW, NOW, 0, id="date-now"),
        pytest.param([("Date", date(-7200))], NOW, NOW, 7200, id="freshness-max-age-date"),
        pytest.param([("Date", date(60))], NOW, NOW, 0, id="date-in-the-future"),
        pytest.param([("Date", date()), ("Age", "7200")], NOW, NOW, 7200, id="freshness-max-age-age"),
        pytest.param([("Date", date()), ("Age", "30")], NOW - 2, NOW, 32, id="age-plus-response-delay"),
        pytest.param([("Date", date(-100)), ("Age", "30")], NOW - 2, NOW, 100, id="apparent-age-larger"),
        pytest.param([("Date", date(-10)), ("Age", "25")], NOW, NOW, 25, id="freshness-expires-age-slow-date"),
        pytest.param([("Date", date(10)), ("Age", "15")], NOW, NOW, 15, id="freshness-expires-age-fast-date"),
        pytest.param([("Date", date()), ("Age", "abc")], NOW, NOW, UNREADABLE_AGE, id="age-parse-nonnumeric"),
        pytest.param([("Date", "foo"), ("Age", "5")], NOW - 1, NOW, 6, id="invalid-date"),
        pytest.param([("Age", "2147483649")], NOW, NOW, 2**31, id="age-parse-larger"),
        pytest.param([("Age", "5")], NOW + 1, NOW, 5, id="clock-went-backwards"),
    ],
)
def test_initial_age(fields, request_time, response_time, expected):
    assert initial_age(raw(*fields), request_time, response_time) == expected


def test_current_age_adds_resident_time():
    headers = raw(("Date", date(-10)), ("Age", "30"))
    stored = initial_age(headers, NOW - 1, NOW)
    assert stored == 31
    assert current_age(headers, request_time=NOW - 1, response_time=NOW, now=NOW + 100) == stored + 100
    assert current_age(headers, request_time=NOW - 1, response_time=NOW, now=NOW) == stored
    assert current_age(headers, request_time=NOW - 1, response_time=NOW, now=NOW - 5) == stored  # clock skew


def fresh(fields, *, pause=PAUSE, response_delay=0.0):
    """Whether the suite's second request would be answered from the cache: lifetime > current age."""
    headers = raw(*fields)
    ttl = freshness_lifetime(headers, received=NOW)
    age = current_age(headers, request_time=NOW - response_delay, response_time=NOW, now=NOW + pause)
    return ttl is not None and ttl > age


@pytest.mark.parametrize(
    ("fields", "cached"),
    [
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "7200")], False, id="freshness-max-age-age"
        ),
        pytest.param([("Date", date(-7200)), ("Cache-Control", "max-age=3600")], False, id="freshness-max-age-date"),
        pytest.param([("Cache-Control", "max-age=2"), ("Date", date())], False, id="freshness-max-age-stale"),
        pytest.param(
            [("Date", date(-10)), ("Expires", date(10)), ("Age", "25")], False, id="freshness-expires-age-slow-date"
        ),
        pytest.param(
            [("Date", date(10)), ("Expires", date(20)), ("Age", "15")], False, id="freshness-expires-age-fast-date"
        ),
        pytest.param(
            [("Date", date()), ("CDN-Cache-Control", "max-age=3600"), ("Age", "7200")], False, id="cdn-max-age-age"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "abc")], False, id="age-parse-nonnumeric"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "-7200")], False, id="age-parse-negative"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "7200.0")], False, id="age-parse-float"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "2147483647")],
            False,
            id="age-parse-large-minus-one",
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "2147483648")], False, id="age-parse-large"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "2147483649")], False, id="age-parse-larger"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "7200, 0")], False, id="age-parse-suffix"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "0, 7200")], True, id="age-parse-prefix"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "7200"), ("Age", "0")],
            False,
            id="age-parse-suffix-twoline",
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "0"), ("Age", "7200")],
            False,
            id="age-parse-prefix-twoline",
        ),
        # The suite wants this stale, but also "0, 7200" fresh (age-parse-prefix): one list, one first member.
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "0, 0")], True, id="age-parse-dup-0"
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "0"), ("Age", "0")],
            False,
            id="age-parse-dup-0-twoline",
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=10000"), ("Age", "3600"), ("Age", "3600")],
            False,
            id="age-parse-dup-old",
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "7200;foo=bar")],
            False,
            id="age-parse-parameter",
        ),
        pytest.param(
            [("Cache-Control", "max-age=1"), ("CDN-Cache-Control", "max-age= 100")],
            False,
            id="cdn-max-age-space-after-equals",
        ),
        pytest.param(
            [("Cache-Control", "max-age=3600"), ("CDN-Cache-Control", "max-age=1")],
            False,
            id="cdn-max-age-long-cc-max-age",
        ),
        pytest.param(
            [("Date", date()), ("Cache-Control", "max-age=3600"), ("Age", "30")], True, id="other-age-update-max-age"
        ),
        pytest.param([], False, id="freshness-none"),
    ],
)
def test_reuse_decisions(fields, cached):
    assert fresh(fields) is cached


# -- header storage and 304 updates ---------------------------------------------------------------------------

NOT_STORED = [
    "Connection",
    "Keep-Alive",
    "Proxy-Authenticate",
    "Proxy-Authentication-Info",
    "Proxy-Authorization",
    "Proxy-Connection",
    "TE",
    "Transfer-Encoding",
    "Upgrade",
]
STORED = [
    "Test-Header",
    "X-Test-Header",
    "Content-Foo",
    "X-Content-Foo",
    "Cache-Control",
    "Content-Encoding",
    "Content-Length",
    "Content-Location",
    "Content-MD5",
    "Content-Range",
    "Content-Security-Policy",
    "Content-Type",
    "Clear-Site-Data",
    "ETag",
    "Expires",
    "Public-Key-Pins",
    "Set-Cookie",
    "Set-Cookie2",
    "X-Frame-Options",
    "X-XSS-Protection",
]


@pytest.mark.parametrize("name", NOT_STORED, ids=[f"headers-store-{name}" for name in NOT_STORED])
def test_connection_specific_fields_are_not_stored(name):
    headers = raw(("Date", date()), (name, "value"), ("Cache-Control", "max-age=3600"))
    assert stored_headers(headers) == raw(("Date", date()), ("Cache-Control", "max-age=3600"))


@pytest.mark.parametrize("name", STORED, ids=[f"headers-store-{name}" for name in STORED])
def test_other_fields_are_stored(name):
    headers = raw(("Date", date()), (name, "value"), ("Cache-Control", "max-age=3600"))
    assert stored_headers(headers) == headers


def test_fields_listed_in_connection_are_not_stored():
    # headers-omit-headers-listed-in-Connection
    headers = raw(
        ("Cache-Control", "max-age=100000"),
        ("Date", date()),
        ("Connection", "a, B"),
        ("a", "1"),
        ("b", "2"),
        ("c", "3"),
    )
    assert stored_headers(headers) == raw(("Cache-Control", "max-age=100000"), ("Date", date()), ("c", "3"))


def test_the_caches_own_fields_are_not_stored():
    headers = raw(("Age", "5"), ("X-Cache", "HIT"), ("Cache-Status", "upstream; hit"), ("Date", date()))
    assert stored_headers(headers) == raw(("Date", date()))


def test_stored_headers_keep_order_and_repeats():
    headers = raw(("Set-Cookie", "a=1"), ("Vary", "Accept"), ("Set-Cookie", "b=2"))
    assert stored_headers(headers) == headers


def stored_then_304(name, value_a, value_b):
    """The update304 setup: a stored response and a 304, both with ``name`` (values A and B)."""
    validator = [] if name == "ETag" else [("ETag", '"etag-1"')]
    stored = raw(
        ("Date", date(-10)),
        (name, value_a),
        *([] if name == "Cache-Control" else [("Cache-Control", "max-age=2")]),
        *validator,
    )
    not_modified = raw(
        ("Date", date()),
        (name, value_b),
        *([] if name == "Cache-Control" else [("Cache-Control", "max-age=2")]),
        *validator,
    )
    return stored, not_modified


UPDATED = {
    # required
    "Test-Header": ("value-A", "value-B"),
    "X-Test-Header": ("value-A", "value-B"),
    "Content-Foo": ("value-A", "value-B"),
    "X-Content-Foo": ("value-A", "value-B"),
    "Cache-Control": ("max-age=1", "max-age=3600"),
    # updated as RFC 9111 section 3.2 asks of a cache that stores raw responses
    "Content-Location": ("/foo", "/bar"),
    "Content-Security-Policy": ("default-src 'self'", "default-src 'self' cdn.example.com"),
    "Content-Type": ("text/plain", "text/plain;charset=utf-8"),
    "Clear-Site-Data": ("cache", "cookies"),
    "Expires": ("Fri, 01 Jan 2038 01:01:01 GMT", "Mon, 11 Jan 2038 11:11:11 GMT"),
    "Public-Key-Pins": ("a", "b"),
    "Set-Cookie": ("a=b", "a=c"),
    "Set-Cookie2": ("a=b", "a=c"),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": ("1", "1; mode=block"),
}


# What describes the stored bytes, and the validator that selected them: http-cache-tests 0.4.5 says
# "must not update" (header-list.mjs, noUpdate), and RFC 9111 section 4.3.4 selects by that ETag.
NOT_UPDATED = {
    "Content-Encoding": ("gzip", "br"),
    "Content-MD5": ("rL0Y20zC+Fzt72VPzMSk2A==", "N7UdGUp1E+RbVvZSTy1R8g=="),
    "Content-Range": ("bytes 0-1/2", "bytes 0-1/3"),
    "ETag": ('"abcdef"', '"ghijkl"'),
}


@pytest.mark.parametrize("name", list(NOT_UPDATED), ids=[f"304-etag-update-response-{name}" for name in NOT_UPDATED])
def test_304_keeps_what_describes_the_stored_bytes(name):
    old, new = NOT_UPDATED[name]
    stored = raw(("Date", date()), (name, old), ("Test-Header", "a"))
    not_modified = raw(("Date", date()), (name, new), ("Test-Header", "b"))
    updated = updated_headers(stored, not_modified)
    assert [value for key, value in updated if key == name.lower().encode()] == [old.encode()]
    assert (b"test-header", b"b") in updated


@pytest.mark.parametrize("name", list(UPDATED), ids=[f"304-etag-update-response-{name}" for name in UPDATED])
def test_304_updates_stored_fields(name):
    value_a, value_b = UPDATED[name]
    stored, not_modified = stored_then_304(name, value_a, value_b)
    updated = updated_headers(stored, not_modified)
    field = name.lower().encode()
    assert [value for key, value in updated if key == field] == [value_b.encode()]
    assert [value for key, value in updated if key == b"date"] == [date().encode()]


def test_304_does_not_update_content_length():
    # 304-etag-update-response-Content-Length (required: must not update)
    stored, not_modified = stored_then_304("Content-Length", "36", "10")
    updated = updated_headers(stored, not_modified)
    assert [value for key, value in updated if key == b"content-length"] == [b"36"]


def test_304_keeps_fields_it_omits():
    # 304-lm-use-stored-Test-Header
    stored = raw(
        ("Cache-Control", "max-age=2"),
        ("Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
        ("Date", date(-5)),
        ("Test-Header", "A"),
    )
    not_modified = raw(("Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"), ("Date", date()))
    assert updated_headers(stored, not_modified) == raw(
        ("Cache-Control", "max-age=2"),
        ("Last-Modified", "Wed, 01 Jan 2020 00:00:00 GMT"),
        ("Date", date()),
        ("Test-Header", "A"),
    )


def test_304_replaces_every_line_of_a_field_in_place_and_appends_new_ones():
    stored = raw(("Set-Cookie", "a=1"), ("Vary", "Accept"), ("Set-Cookie", "b=2"), ("X-Old", "1"))
    not_modified = raw(("X-New", "n"), ("Set-Cookie", "c=3"), ("Set-Cookie", "d=4"))
    assert updated_headers(stored, not_modified) == raw(
        ("Set-Cookie", "c=3"), ("Set-Cookie", "d=4"), ("Vary", "Accept"), ("X-Old", "1"), ("X-New", "n")
    )


def test_304_never_brings_in_fields_that_are_not_stored():
    stored = raw(("Date", date(-5)), ("Content-Length", "3"), ("A", "1"))
    not_modified = raw(
        ("Date", date()),
        ("Connection", "close, A"),
        ("A", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Age", "9"),
        ("X-Cache", "MISS"),
        ("Cache-Status", "x"),
        ("Content-Length", "0"),
    )
    assert updated_headers(stored, not_modified) == raw(("Date", date()), ("Content-Length", "3"), ("A", "1"))


def test_304_update_also_cleans_the_stored_fields():
    stored = raw(("Age", "3"), ("Connection", "x"), ("X", "1"), ("Y", "2"))
    assert updated_headers(stored, []) == raw(("Y", "2"))


# -- Range --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        pytest.param("bytes=0-1", 11, (0, 1), id="partial-store-complete-reuse-partial"),
        pytest.param("bytes=1-", 11, (1, 10), id="partial-store-complete-reuse-partial-no-last"),
        pytest.param("bytes=-1", 11, (10, 10), id="partial-store-complete-reuse-partial-suffix"),
        pytest.param("bytes=-5", 10, (5, 9), id="suffix"),
        pytest.param("bytes=0-0", 10, (0, 0), id="first-byte"),
        pytest.param("bytes=9-9", 10, (9, 9), id="last-byte"),
        pytest.param("bytes=0-", 10, (0, 9), id="everything"),
        pytest.param("bytes=5-100", 10, (5, 9), id="last-past-the-end"),
        pytest.param("bytes=-100", 10, (0, 9), id="suffix-longer-than-the-representation"),
        pytest.param("bytes=0-" + "9" * 5000, 10, (0, 9), id="huge-last"),
        pytest.param("bytes=-" + "9" * 5000, 10, (0, 9), id="huge-suffix"),
        pytest.param("bytes=0003-0004", 10, (3, 4), id="leading-zeros"),
        pytest.param("Bytes=0-1", 10, (0, 1), id="unit-case-insensitive"),
        pytest.param(" bytes=0-1 ", 10, (0, 1), id="surrounding-ows"),
        pytest.param("bytes=0-1,", 10, (0, 1), id="empty-list-element"),
        pytest.param("bytes=, 0-1 ,", 10, (0, 1), id="empty-list-elements"),
        # unsatisfiable: 416
        pytest.param("bytes=10-", 10, "unsatisfiable", id="first-at-the-end"),
        pytest.param("bytes=10-20", 10, "unsatisfiable", id="range-past-the-end"),
        pytest.param("bytes=" + "9" * 5000 + "-", 10, "unsatisfiable", id="huge-first"),
        pytest.param("bytes=-0", 10, "unsatisfiable", id="empty-suffix"),
        pytest.param("bytes=-000", 10, "unsatisfiable", id="empty-suffix-zeros"),
        pytest.param("bytes=0-0", 0, "unsatisfiable", id="empty-representation"),
        pytest.param("bytes=-0", 0, "unsatisfiable", id="empty-suffix-of-empty-representation"),
        # ignored: 200
        pytest.param("bytes=-5", 0, None, id="suffix-of-empty-representation"),
        pytest.param("bytes=0-1,3-4", 10, None, id="two-ranges"),
        pytest.param("bytes=0-1, 0-1", 10, None, id="two-equal-ranges"),
        pytest.param("bytes=5-4", 10, None, id="last-before-first"),
        pytest.param("bytes=" + "9" * 5000 + "-" + "9" * 4999, 10, None, id="huge-last-before-first"),
        pytest.param("bytes=-", 10, None, id="no-positions"),
        pytest.param("bytes=", 10, None, id="empty-set"),
        pytest.param("bytes=,", 10, None, id="only-commas"),
        pytest.param("bytes=a-b", 10, None, id="letters"),
        pytest.param("bytes=1", 10, None, id="no-dash"),
        pytest.param("bytes=0 - 1", 10, None, id="spaces-inside"),
        pytest.param("bytes = 0-1", 10, None, id="spaces-around-equals"),
        pytest.param("bytes=+1-2", 10, None, id="plus-sign"),
        pytest.param("bytes=--1", 10, None, id="double-dash"),
        pytest.param("bytes=\u0661-\u0662", 10, None, id="non-ascii-digits"),
        pytest.param("items=0-1", 10, None, id="other-unit"),
        pytest.param("bytes0-1", 10, None, id="no-equals"),
        pytest.param("", 10, None, id="empty"),
    ],
)
def test_parse_range(value, length, expected):
    assert parse_range(value, length) == expected


def model_range(first: int | None, last: int | None, length: int):
    """RFC 9110 section 14.1.2 for one range-spec, written out the obvious way."""
    if first is None:
        assert last is not None
        if last == 0:
            return "unsatisfiable"
        return None if length == 0 else (max(0, length - last), length - 1)
    if last is not None and last < first:
        return None
    if first >= length:
        return "unsatisfiable"
    return first, length - 1 if last is None else min(last, length - 1)


POSITIONS = st.one_of(st.integers(min_value=0, max_value=100), st.integers(min_value=0, max_value=10**30))


@PROPERTIES
@given(
    st.integers(min_value=0, max_value=200),
    st.one_of(st.none(), POSITIONS),
    st.one_of(st.none(), POSITIONS),
    st.integers(min_value=0, max_value=3),
)
def test_parse_range_matches_the_model(length, first, last, zeros):
    if first is None and last is None:
        return
    pad = "0" * zeros
    spec = ("" if first is None else pad + str(first)) + "-" + ("" if last is None else pad + str(last))
    result = parse_range("bytes=" + spec, length)
    assert result == model_range(first, last, length)
    if isinstance(result, tuple):
        start, end = result
        assert 0 <= start <= end < length
        body = bytes(range(256))[:length]
        assert len(body[start : end + 1]) == end - start + 1


@PROPERTIES
@given(st.text(max_size=40), st.integers(min_value=0, max_value=10**6))
def test_parse_range_never_raises(value, length):
    result = parse_range(value, length)
    if isinstance(result, tuple):
        assert 0 <= result[0] <= result[1] < length
    else:
        assert result in (None, "unsatisfiable")


def test_content_range():
    assert content_range(0, 1, 11) == b"bytes 0-1/11"
    assert content_range(10, 10, 11) == b"bytes 10-10/11"
    assert unsatisfied_content_range(10) == b"bytes */10"
