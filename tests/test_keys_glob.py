"""Glob matching: Redis ``stringmatchlen`` semantics, in polynomial time whatever the pattern."""

import re
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from intelligent_cache.globs import GlobPattern, compile_glob, glob_to_regex

DIFFERENTIAL = settings(
    max_examples=1500, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _reference_class_char(char: str) -> str:
    return "\\" + char if char in "\\]^-[" else char


def reference_regex(pattern: str) -> re.Pattern[str]:
    """The former translation of a glob to a backtracking regex: right, but exponential on ``*a*a*a...b``."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif char == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            members: list[str] = []
            while i < n and pattern[i] != "]":
                if pattern[i] == "\\" and i + 1 < n:
                    members.append(_reference_class_char(pattern[i + 1]))
                    i += 2
                elif i + 2 < n and pattern[i + 1] == "-":
                    low, high = sorted((pattern[i], pattern[i + 2]))
                    members.append(f"{_reference_class_char(low)}-{_reference_class_char(high)}")
                    i += 3
                else:
                    members.append(_reference_class_char(pattern[i]))
                    i += 1
            if members:
                out.append(f"[{'^' if negate else ''}{''.join(members)}]")
            else:
                out.append("." if negate else "(?!)")
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# Small alphabets, so that patterns and texts interact; "&", "|" and "~" are left out of the reference's
# reach because its classes would warn about set operations (the new matcher escapes them).
PATTERN_CHARS = "ab*?[]^-\\:"
TEXT_CHARS = "ab-]^\\[*?:"
patterns = st.text(alphabet=PATTERN_CHARS, max_size=10)
texts = st.text(alphabet=TEXT_CHARS, max_size=10)


@DIFFERENTIAL
@given(patterns, texts)
@example("*a*b", "aab")
@example("[a-", "-")
@example("[^", "x")
@example("[]", "")
@example("a\\", "a\\")
@example("[\\", "\\")
@example("[a-]", "]")
@example("**", "")
@example("*?*?", "a")
def test_matches_like_the_reference(pattern, text):
    assert compile_glob(pattern).fullmatch(text) == bool(reference_regex(pattern).fullmatch(text))


@DIFFERENTIAL
@given(patterns, st.lists(st.sampled_from(["a", "b", "ab", "ba", ":", "]"]), max_size=8).map("".join))
def test_matches_like_the_reference_on_texts_built_from_pattern_pieces(pattern, text):
    assert compile_glob(pattern).fullmatch(text) == bool(reference_regex(pattern).fullmatch(text))


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(st.text(max_size=40), st.text(max_size=80))
def test_never_raises(pattern, text):
    # Any text, lone surrogates included (admin patterns arrive decoded).
    assert isinstance(compile_glob(pattern).fullmatch(text), bool)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("[&&]", "&", True),
        ("[||]", "|", True),
        ("[~~]", "~", True),
        ("[--]", "-", True),
        ("[a&&b]", "b", True),
        ("[é-ü]", "ö", True),
        ("[\ud800]", "\ud800", True),
        ("a\nb", "a\nb", True),
        ("?", "\n", True),
    ],
)
def test_classes_with_set_operation_look_alikes_match_literally(pattern, text, expected):
    # Python reads "&&", "||", "~~" and "--" in a class as future set operations (and warns, an error here).
    assert compile_glob(pattern).fullmatch(text) is expected


def test_the_old_name_and_the_new_one_agree():
    assert isinstance(glob_to_regex("GET:items:*"), GlobPattern)
    assert glob_to_regex("GET:items:*").fullmatch("GET:items:page=1")
    assert not glob_to_regex("GET:items:*").fullmatch("GET:itemsx")
    assert repr(compile_glob("a*")) == "GlobPattern('a*')"


# -- worst cases -------------------------------------------------------------------------------------------

# Admin patterns are up to 1024 characters, keys up to 4096.
PATHOLOGICAL = [
    ("*a*a*a*a*a*a*a*a*b", "a" * 4096),
    ("*a" * 511 + "b", "a" * 4096),
    ("*?" * 511 + "b", "a" * 4096),
    ("*" + "[a-z]" * 200 + "b*", "a" * 4096),
    ("*" + "a" * 1000 + "b*", "a" * 4096),
    ("a*" * 511 + "*b", "a" * 4096),
]


class CountingRegex:
    """A compiled regex that counts the calls made on it."""

    def __init__(self, regex: re.Pattern[str]) -> None:
        self.regex = regex
        self.calls = 0

    def search(self, *args):
        self.calls += 1
        return self.regex.search(*args)

    def match(self, *args):
        self.calls += 1
        return self.regex.match(*args)

    def fullmatch(self, *args):
        self.calls += 1
        return self.regex.fullmatch(*args)


@pytest.mark.parametrize(("pattern", "text"), PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_each_segment_is_tried_at_most_once(pattern, text):
    # The work is deterministic: one anchored match per end and one search per segment between stars, each a
    # fixed-length regex without repetition, so at most len(pattern) * len(text) steps overall.
    glob = GlobPattern(pattern)  # not the cached instance: it gets instrumented
    counted = []
    for name in ("_head", "_tail"):
        regex, length = getattr(glob, name)
        counter = CountingRegex(regex)
        counted.append(counter)
        setattr(glob, name, (counter, length))
    middle = [(CountingRegex(regex), length) for regex, length in glob._middle]
    setattr(glob, "_middle", middle)  # noqa: B010 (mypy: the counters stand in for regexes)
    counted.extend(counter for counter, _ in middle)

    assert glob.fullmatch(text) is False
    assert all(counter.calls <= 1 for counter in counted)
    assert sum(counter.calls for counter in counted) <= pattern.count("*") + 2
    for counter in counted:
        assert not re.search(r"(?<!\\)[*+{]|(?<![\\(])\?", counter.regex.pattern), counter.regex.pattern


def test_pathological_patterns_do_not_hang():
    # A hang detector with a bound no healthy run comes near: the former regex took hours on these.
    script = textwrap.dedent(
        f"""
        from intelligent_cache.globs import glob_to_regex
        for pattern, text in {PATHOLOGICAL!r}:
            assert not glob_to_regex(pattern).fullmatch(text)
            assert glob_to_regex(pattern).fullmatch(text + "b")
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
