"""Version comparison for real-world version strings: one interface, a few small per-product schemes.

A scheme turns the version text a product shows (``8.9p1``, ``2.4.57``, ``1.1.1o``, ``15.0.4460.4``)
into a sort key and tells which release cycle a version belongs to. Distribution suffixes
(``Ubuntu-3ubuntu0.6``, ``(Debian)``) are split off *before* a scheme sees the text (see
`scanner.versiondata.identify`), because what they mean is not a version ordering question.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import total_ordering
from typing import ClassVar

_TOKEN = re.compile(r"\d+|[a-z]+")
_PRE_RELEASE = frozenset({"a", "alpha", "b", "beta", "rc", "pre", "preview", "dev", "m", "milestone"})
Part = int | str


class VersionParseError(ValueError):
    """The text is not a version in this scheme."""


@total_ordering
@dataclass(frozen=True)
class ParsedVersion:
    """A version in one scheme: `key` orders versions; `parts` are the numeric/alpha components."""

    text: str
    parts: tuple[Part, ...]
    key: tuple[tuple[int, Part], ...]
    head: str = ""  # the part of `text` the scheme read; the rest is a suffix (build, distribution revision)

    def __lt__(self, other: ParsedVersion) -> bool:
        return _padded(self.key, other.key)[0] < _padded(self.key, other.key)[1]

    def __eq__(self, other: object) -> bool:  # head/text do not take part: "8.9p1" == "8.9p1 (x)"
        if not isinstance(other, ParsedVersion):
            return NotImplemented
        a, b = _padded(self.key, other.key)
        return a == b

    def __hash__(self) -> int:
        key = list(self.key)
        while key and key[-1] == (1, 0):
            key.pop()
        return hash(tuple(key))


def _padded(
    a: tuple[tuple[int, Part], ...], b: tuple[tuple[int, Part], ...]
) -> tuple[tuple[tuple[int, Part], ...], tuple[tuple[int, Part], ...]]:
    n = max(len(a), len(b))
    zero: tuple[int, Part] = (1, 0)
    return a + (zero,) * (n - len(a)), b + (zero,) * (n - len(b))


def _rank(part: Part) -> tuple[int, Part]:
    # Pre-release tags sort before the release ("1.0rc1" < "1.0"); other letters are patch levels
    # and sort after it ("8.9p1" > "8.9", "1.0.2k" > "1.0.2"). Numbers compare as numbers.
    if isinstance(part, int):
        return (1, part)
    return (0, part) if part in _PRE_RELEASE else (2, part)


class VersionScheme(ABC):
    """How one product numbers its releases."""

    name: ClassVar[str]

    @abstractmethod
    def parse(self, text: str) -> ParsedVersion:
        """Parse the product's own version text; raise VersionParseError if it is not one."""

    def compare(self, a: str, b: str) -> int:
        """-1, 0 or 1 as a is older than, equal to or newer than b."""
        pa, pb = self.parse(a), self.parse(b)
        return -1 if pa < pb else (1 if pb < pa else 0)

    def cycle_of(self, version: str, cycles: Iterable[str]) -> str | None:
        """The release cycle a version belongs to: the longest cycle whose parts prefix the version's."""
        parts = self.parse(version).parts
        best: tuple[int, str] | None = None
        for cycle in cycles:
            try:
                cparts = self.cycle_parts(cycle)
            except VersionParseError:
                continue
            if cparts and parts[: len(cparts)] == cparts and (best is None or len(cparts) > best[0]):
                best = (len(cparts), cycle)
        return best[1] if best else None

    def cycle_parts(self, cycle: str) -> tuple[Part, ...]:
        return self.parse(cycle).parts


class DottedScheme(VersionScheme):
    """`MAJOR.MINOR.PATCH` with optional letters (nginx, Apache httpd, PHP, PostgreSQL, MySQL, Samba …).

    A leading "v" and an epoch ("1:") are dropped; anything after the first space, "+", "~" or "-"
    that follows the numeric head (build metadata, distribution revision) is ignored.
    """

    name: ClassVar[str] = "dotted"
    _HEAD: ClassVar[re.Pattern[str]] = re.compile(
        r"^(?:\d+:)?v?(\d+(?:[._]\d+)*[a-z]*\d*(?:[._-]?(?:rc|beta|alpha|b|a|m)\d*(?![a-z]))?)"
    )

    def parse(self, text: str) -> ParsedVersion:
        cleaned = text.strip().lower()
        m = self._HEAD.match(cleaned)
        if not m:
            raise VersionParseError(f"not a {self.name} version: {text!r}")
        parts = tuple(int(t) if t.isdigit() else t for t in _TOKEN.findall(m.group(1)))
        return ParsedVersion(text=text, parts=parts, key=tuple(_rank(p) for p in parts), head=m.group(0))


class OpenSSHScheme(VersionScheme):
    """OpenSSH portable: `9.6p1`, `7.4`, `8.9p1`. Cycles are major versions ("9")."""

    name: ClassVar[str] = "openssh"
    _RE: ClassVar[re.Pattern[str]] = re.compile(r"^(?:\d+:)?(\d+)\.(\d+)(?:\.(\d+))?(?:p(\d+))?", re.IGNORECASE)

    def parse(self, text: str) -> ParsedVersion:
        m = self._RE.match(text.strip())
        if not m:
            raise VersionParseError(f"not an OpenSSH version: {text!r}")
        major, minor, micro, portable = (int(g) if g is not None else 0 for g in m.groups())
        parts: tuple[Part, ...] = (major, minor, micro, portable)
        return ParsedVersion(text=text, parts=parts, key=tuple(_rank(p) for p in parts), head=m.group(0))

    def cycle_parts(self, cycle: str) -> tuple[Part, ...]:
        if not re.fullmatch(r"\d+(\.\d+)?", cycle):
            raise VersionParseError(cycle)
        return tuple(int(p) for p in cycle.split("."))


class OpenSSLScheme(VersionScheme):
    """OpenSSL: letter releases before 3.0 (`1.1.1w` > `1.1.1k` > `1.1.1`), plain MAJOR.MINOR.PATCH after."""

    name: ClassVar[str] = "openssl"
    _RE: ClassVar[re.Pattern[str]] = re.compile(r"^(\d+)\.(\d+)\.(\d+)([a-z]{0,2})(?:-(?:pre|alpha|beta)\d*)?", re.I)

    def parse(self, text: str) -> ParsedVersion:
        m = self._RE.match(text.strip())
        if not m:
            raise VersionParseError(f"not an OpenSSL version: {text!r}")
        letters = m.group(4).lower()
        # "za" follows "z" in OpenSSL's letter sequence; a numeric letter index keeps that ordering right.
        letter_index = 0
        for ch in letters:
            letter_index = letter_index * 27 + (ord(ch) - ord("a") + 1)
        parts: tuple[Part, ...] = (int(m.group(1)), int(m.group(2)), int(m.group(3)), letter_index)
        return ParsedVersion(text=text, parts=parts, key=tuple(_rank(p) for p in parts), head=m.group(0))

    def cycle_parts(self, cycle: str) -> tuple[Part, ...]:
        if not re.fullmatch(r"\d+(\.\d+){1,2}", cycle):
            raise VersionParseError(cycle)
        return tuple(int(p) for p in cycle.split("."))


class BuildScheme(VersionScheme):
    """Microsoft build numbers: `15.0.4460.4` (SQL Server), `10.0.20348` (Windows Server)."""

    name: ClassVar[str] = "build"
    _RE: ClassVar[re.Pattern[str]] = re.compile(r"^(\d+)(?:\.(\d+))+")

    def parse(self, text: str) -> ParsedVersion:
        m = self._RE.match(text.strip())
        if not m:
            raise VersionParseError(f"not a build number: {text!r}")
        parts = tuple(int(p) for p in m.group(0).split("."))
        return ParsedVersion(text=text, parts=parts, key=tuple(_rank(p) for p in parts), head=m.group(0))


class JavaScheme(VersionScheme):
    """Java / OpenJDK, in every spelling a JVM, a package or a CPE uses.

    Versions read as (feature, interim, update, patch), so the old and the new numbering meet:

    - before JEP 223 (Java 8 and older): ``1.8.0_392``, ``1.8.0_392-b08``, RPM ``1.8.0.392``, ``8u392-b08``,
      ``1.7.0_80`` → (8, 0, 392, 0), (7, 0, 80, 0): "1.8" is feature 8;
    - JEP 223/322 (Java 9 and later): ``11.0.21+9``, ``17.0.9``, ``21.0.1+12-LTS``, ``11.0.32.1+1`` (a
      security-only patch on top of update 32) → (11, 0, 21, 0), (11, 0, 32, 1); ``25`` and ``27+35`` are
      the feature release itself.

    The build ("+9", "-b08") and vendor or distribution text ("-LTS", "-1~deb12u1") are not part of the
    version. A release cycle is a feature release ("8", "21"; "1.8" names cycle 8 as well).
    """

    name: ClassVar[str] = "java"
    _EPOCH: ClassVar[re.Pattern[str]] = re.compile(r"^\d+:(?=\d)")
    _UPDATE: ClassVar[re.Pattern[str]] = re.compile(r"^(\d+)u(\d+)(?![0-9a-z])", re.IGNORECASE)  # 8u392
    # 1.8.0_392, 1.8.0.392, 1.7.0_80, 1.8 (feature 5 and later only: "1.4.2_42" is not feature 4)
    _LEGACY: ClassVar[re.Pattern[str]] = re.compile(r"^1\.([5-9])(?:\.(\d+)(?:[._](\d+))?)?(?![0-9])")
    _MODERN: ClassVar[re.Pattern[str]] = re.compile(r"^([1-9]\d*)(?:\.(\d+))?(?:\.(\d+))?(?:\.(\d+))?(?![0-9])")

    def parse(self, text: str) -> ParsedVersion:
        stripped = text.strip()
        epoch = self._EPOCH.match(stripped)
        offset = epoch.end() if epoch else 0
        body = stripped[offset:]
        parts: tuple[int, int, int, int]
        m = self._UPDATE.match(body)
        if m:
            parts = (int(m.group(1)), 0, int(m.group(2)), 0)
        elif (m := self._LEGACY.match(body)) is not None:
            parts = (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0), 0)
        elif (m := self._MODERN.match(body)) is not None:
            parts = (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0), int(m.group(4) or 0))
        else:
            raise VersionParseError(f"not a Java version: {text!r}")
        key = tuple(_rank(p) for p in parts)
        return ParsedVersion(text=text, parts=parts, key=key, head=stripped[: offset + m.end()])

    def cycle_parts(self, cycle: str) -> tuple[Part, ...]:
        m = re.fullmatch(r"(?:1\.)?([1-9]\d*)", cycle.strip())
        if not m:
            raise VersionParseError(f"not a Java release cycle: {cycle!r}")
        return (int(m.group(1)),)


class DcmtkScheme(DottedScheme):
    """DCMTK: `3.6.9` as released, or the digits of its DICOM implementation version name (`OFFIS_DCMTK_369`)."""

    name: ClassVar[str] = "dcmtk"

    def parse(self, text: str) -> ParsedVersion:
        digits = text.strip()
        if re.fullmatch(r"\d{3}", digits):  # 369 → 3.6.9 (the implementation version name drops the dots)
            return super().parse(".".join(digits))
        return super().parse(text)


class NamedCycleScheme(VersionScheme):
    """Products whose cycles are names or release numbers (Debian 12, Ubuntu 22.04, Windows Server 2019).

    A version is a cycle name itself, a point release of it ("12.5" → "12", "22.04.4" → "22.04"), or an
    alias listed in the data (a Windows build number).
    """

    name: ClassVar[str] = "named"
    _RE: ClassVar[re.Pattern[str]] = re.compile(r"^[0-9a-z][0-9a-z.\-]*", re.I)

    def parse(self, text: str) -> ParsedVersion:
        m = self._RE.match(text.strip().lower())
        if not m:
            raise VersionParseError(f"not a release name: {text!r}")
        parts = tuple(int(t) if t.isdigit() else t for t in _TOKEN.findall(m.group(0)))
        return ParsedVersion(text=text, parts=parts, key=tuple(_rank(p) for p in parts), head=m.group(0))


SCHEMES: Mapping[str, VersionScheme] = {
    s.name: s
    for s in (
        DottedScheme(),
        OpenSSHScheme(),
        OpenSSLScheme(),
        BuildScheme(),
        JavaScheme(),
        NamedCycleScheme(),
        DcmtkScheme(),
    )
}


def scheme_for(name: str) -> VersionScheme:
    """The scheme of that name; KeyError lists the known ones."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown version scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None
