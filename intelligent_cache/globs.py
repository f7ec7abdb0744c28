"""Redis-style globs, matched as Redis matches them and in polynomial time.

What selects keys where no Redis does it for us: the memory backend's scans
and clears, and the Redis Cluster backend's filter over the keys of every
primary. :func:`compile_glob` follows ``stringmatchlen`` exactly.
"""

import functools
import re

__all__ = ["GlobPattern", "compile_glob", "glob_to_regex"]


def _class_char(char: str) -> str:
    # Escape all but ASCII letters and digits: also "&&", "||", "~~" and "--", which Python may
    # one day read as set operations (and warns about today).
    return char if char.isascii() and char.isalnum() else "\\" + char


def _glob_tokens(pattern: str) -> list[str | None]:
    """The pattern as ``None`` (a star) or the regex of one character, following ``stringmatchlen``."""
    tokens: list[str | None] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            tokens.append(None)
        elif char == "?":
            tokens.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            tokens.append(re.escape(pattern[i]))
        elif char == "[":
            i += 1
            negate = i < n and pattern[i] == "^"
            if negate:
                i += 1
            members: list[str] = []
            while i < n and pattern[i] != "]":
                if pattern[i] == "\\" and i + 1 < n:
                    members.append(_class_char(pattern[i + 1]))
                    i += 2
                elif i + 2 < n and pattern[i + 1] == "-":
                    low, high = sorted((pattern[i], pattern[i + 2]))
                    members.append(f"{_class_char(low)}-{_class_char(high)}")
                    i += 3
                else:
                    members.append(_class_char(pattern[i]))
                    i += 1
            if members:
                tokens.append(f"[{'^' if negate else ''}{''.join(members)}]")
            else:
                tokens.append("." if negate else "(?!)")  # "[^]" is any character, "[]" none
        else:
            tokens.append(re.escape(char))
        i += 1
    return tokens


def _segment(tokens: list[str]) -> tuple[re.Pattern[str], int]:
    # One character per token, no quantifier: a match attempt is at most len(tokens) steps.
    return re.compile("".join(tokens), re.DOTALL), len(tokens)


class GlobPattern:
    """A Redis-style glob compiled for matching in polynomial time.

    The pattern is cut at its stars into segments of one-character tokens
    (literal, ``?``, class), each a fixed length: the first must match at the
    start, the last at the end, and the ones between are found leftmost-first
    in order, which is optimal since a star absorbs any gap. ``fullmatch``
    therefore costs at most ``len(pattern) * len(text)`` steps, where a
    backtracking regex for ``*a*a*a*a*b`` is exponential.
    """

    __slots__ = ("_exact", "_head", "_middle", "_min_length", "_tail", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        segments: list[list[str]] = [[]]
        for token in _glob_tokens(pattern):
            if token is None:
                segments.append([])
            else:
                segments[-1].append(token)
        self._min_length = sum(len(segment) for segment in segments)
        self._head = _segment(segments[0])
        self._exact = self._head[0] if len(segments) == 1 else None
        self._tail = self._head if len(segments) == 1 else _segment(segments[-1])
        self._middle = [_segment(segment) for segment in segments[1:-1] if segment]

    def fullmatch(self, text: str) -> bool:
        """Whether the whole of ``text`` matches the glob."""
        if len(text) < self._min_length:
            return False
        if self._exact is not None:
            return self._exact.fullmatch(text) is not None
        (head, head_length), (tail, tail_length) = self._head, self._tail
        end = len(text) - tail_length
        if head_length and head.match(text) is None:
            return False
        if tail_length and tail.match(text, end) is None:
            return False
        start = head_length
        for regex, _length in self._middle:
            found = regex.search(text, start, end)
            if found is None:
                return False
            start = found.end()
        return True

    def __repr__(self) -> str:
        return f"GlobPattern({self.pattern!r})"


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> GlobPattern:
    """Compile a Redis-style glob exactly as Redis matches it (``stringmatchlen``).

    ``*`` and ``?``; ``[abc]``, ``[^abc]``, ``[a-z]`` (reversed ranges swap,
    ``\\x`` escapes inside a class, an unterminated class ends with the
    pattern); ``\\x`` outside a class is a literal ``x``. Never raises, and
    matching takes polynomial time whatever the pattern (see :class:`GlobPattern`).
    """
    return GlobPattern(pattern)


def glob_to_regex(pattern: str) -> GlobPattern:
    """:func:`compile_glob` under its former name: the result has ``fullmatch(text)``, like a regex."""
    return compile_glob(pattern)
