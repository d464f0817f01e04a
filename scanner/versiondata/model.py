"""The version-knowledge file: product release cycles, how to recognise products, known-exploited CVEs.

Loaded with `scanner.yamlio`, so a bad file names file:line. Pure data plus lookups; no network.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scanner.errors import InputError
from scanner.saferegex import UnsafePatternError, compile_safe
from scanner.strictmodel import StrictModel
from scanner.versiondata.schemes import SCHEMES, VersionParseError, VersionScheme, scheme_for
from scanner.yamlio import load_yaml, validate_model

SCHEMA_VERSION = 1
Support = Literal["dated", "newest-line", "unknown"]
_PACKAGE_DATA = Path(__file__).resolve().parent / "data" / "versions.yaml"


class _Strict(StrictModel):
    """Unknown keys are errors, values are immutable, numbers are numbers."""


def _date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


class Source(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    url: str
    retrieved: dt.date = Field(description="When the source was read.")
    note: str = ""

    _d = field_validator("retrieved", mode="before")(_date)


class Cycle(_Strict):
    cycle: str
    released: dt.date | None = None
    eol: dt.date | bool | None = Field(
        None, description="End of security support: a date, true (ended, date unknown), false/null (none announced)."
    )
    latest: str | None = Field(None, description="Newest release of the cycle as of the product's `as_of` date.")
    latest_date: dt.date | None = None
    aliases: list[str] = Field(default_factory=list, description="Other names/build prefixes of this cycle.")

    @field_validator("released", "latest_date", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return _date(value)

    @field_validator("eol", mode="before")
    @classmethod
    def _eol(cls, value: Any) -> Any:
        return _date(value)

    def eol_date(self) -> dt.date | None:
        return self.eol if isinstance(self.eol, dt.date) else None

    def ended(self, today: dt.date) -> bool | None:
        """True if support has ended by `today`; False if not; None if unknown."""
        if self.eol is True:
            return True
        if isinstance(self.eol, dt.date):
            return self.eol <= today
        return False if self.eol is False else None


# Headers a version endpoint may ask to be sent: content negotiation and the "this is an API call" marker some
# products require. Never credentials, cookies or anything that changes what the server does.
VERSION_ENDPOINT_HEADERS = frozenset({"accept", "x-requested-with"})
_HEADER_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/+*;=,-]{0,99}$")
_ENDPOINT_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*(\?[A-Za-z0-9._~=&-]*)?$")
_SECRET_WORDS = re.compile(r"token|key|secret|pass|auth|session|sig|cred|login|user", re.IGNORECASE)


class VersionEndpoint(_Strict):
    """Where a product shows its version without a login: one GET of a documented path, read with a pattern.

    hcscan sends it only when nmap -sV and the banner do not show the version, never to a fragile system, and
    follows no redirect; the path and headers are fixed here, so nothing from the inventory or a target is sent.
    """

    path: str = Field(description="absolute path, e.g. /api/server/version (no '..', no credentials in a query)")
    headers: dict[str, str] = Field(
        default_factory=dict, description="extra request headers, from a small safe set (Accept, X-Requested-With)"
    )
    pattern: str = Field(description="RE2 pattern with a (?P<version>...) group, searched in the answer's body")
    note: str = Field("", description="where the endpoint is documented")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _ENDPOINT_PATH.match(value):
            raise ValueError(
                f"version endpoint path {value!r} must start with '/' and hold only letters, digits and . _ ~ / - "
                "(and an optional plain query)"
            )
        if ".." in value.split("?", 1)[0].split("/") or "//" in value:
            raise ValueError(f"version endpoint path {value!r} must not climb ('..') or hold empty segments")
        _, _, query = value.partition("?")
        for part in filter(None, query.split("&")):
            name = part.partition("=")[0]
            if _SECRET_WORDS.search(name):
                raise ValueError(
                    f"version endpoint path {value!r}: query parameter {name!r} looks like a credential; a version "
                    "endpoint is read without one"
                )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name.lower() not in VERSION_ENDPOINT_HEADERS:
                raise ValueError(
                    f"version endpoint header {name!r} is not allowed (allowed: Accept, X-Requested-With); "
                    "credentials and cookies are never sent"
                )
            if not isinstance(text, str) or not _HEADER_VALUE.match(text):
                raise ValueError(f"version endpoint header {name}: value {text!r} is not a plain token")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            compiled = compile_safe(value)  # the body comes from a target: the pattern must stay linear
        except UnsafePatternError as exc:
            raise ValueError(f"invalid version endpoint pattern {value!r}: {exc}") from None
        if "version" not in compiled.group_names:
            raise ValueError(f"version endpoint pattern {value!r} needs a (?P<version>...) group")
        return value


class Product(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    name: str
    kind: Literal["application", "os"] = "application"
    scheme: str
    support: Support = Field(
        "dated",
        description=(
            "How support ends: 'dated' (each cycle's eol as the source states it), 'newest-line' (no end of life "
            "announced; a cycle's eol is derived when the data is loaded: the release date of the next newer "
            "cycle), 'unknown' (end of support could not be checked: judged 'could not assess')."
        ),
    )
    source: str = Field(description="id of the source the cycles come from")
    as_of: dt.date = Field(description="Newest date the source's cycle data reflects (latest releases known then).")
    cpe: list[str] = Field(default_factory=list, description="CPE 2.2 prefixes, e.g. cpe:/a:openbsd:openssh")
    nmap_products: list[str] = Field(default_factory=list, description="nmap -sV product names, exact")
    nmap_products_no_version: list[str] = Field(
        default_factory=list,
        description=(
            "nmap -sV product names that identify the product but whose version field is not the product's version "
            "(Tomcat's 'Apache Tomcat/Coyote JSP engine' 1.1 is the connector's): the version counts as not visible"
        ),
    )
    banners: list[str] = Field(default_factory=list, description="regexes with a (?P<version>…) group")
    aliases: list[str] = Field(default_factory=list, description="names an inventory may use for this product")
    version_endpoints: list[VersionEndpoint] = Field(
        default_factory=list,
        description="where the product shows its version without a login, read when nmap -sV cannot see it",
    )
    note: str = ""
    cycles: list[Cycle] = Field(min_length=1)

    _d = field_validator("as_of", mode="before")(_date)

    @model_validator(mode="before")
    @classmethod
    def _derive_newest_line(cls, value: Any) -> Any:
        """`newest-line`: every cycle but the newest ends the day the next newer cycle was released (done once, here).

        A cycle whose end the file states (a date, or true) is kept as stated; a cycle with none (null, absent or
        false: "none announced", as an endoflife.date export says) gets the derived one.
        """
        if not isinstance(value, dict) or value.get("support") != "newest-line":
            return value
        cycles = value.get("cycles")
        if not isinstance(cycles, list) or not all(isinstance(c, dict) for c in cycles):
            return value  # the field validators report what is wrong
        dated = sorted(
            ((_date(c.get("released")), i) for i, c in enumerate(cycles) if c.get("released") is not None),
            key=lambda t: (str(t[0]), t[1]),
        )
        derived = [dict(c) for c in cycles]
        for (_, index), (next_released, _) in pairwise(dated):
            if derived[index].get("eol") is None or derived[index].get("eol") is False:
                derived[index]["eol"] = next_released
        return {**value, "cycles": derived}

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value not in SCHEMES:
            raise ValueError(f"unknown version scheme '{value}'; known: {', '.join(sorted(SCHEMES))}")
        return value

    @field_validator("banners")
    @classmethod
    def _banners(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compiled = compile_safe(pattern)  # RE2: banners come from targets, the pattern must stay linear
            except UnsafePatternError as exc:
                raise ValueError(f"invalid banner regex {pattern!r}: {exc}") from None
            if "version" not in compiled.group_names:
                raise ValueError(f"banner regex {pattern!r} needs a (?P<version>...) group")
        return value

    @model_validator(mode="after")
    def _cycles_parse(self) -> Product:
        scheme = scheme_for(self.scheme)
        if self.support == "newest-line":
            missing = [c.cycle for c in self.cycles if c.released is None]
            if missing:
                raise ValueError(
                    f"support newest-line needs a released date on every cycle (missing: {', '.join(missing)})"
                )
        for c in self.cycles:
            if c.latest is not None:
                try:
                    scheme.parse(c.latest)
                except VersionParseError as exc:
                    raise ValueError(f"cycle {c.cycle}: latest {c.latest!r}: {exc}") from None
        return self


class KevEntry(_Strict):
    """A CISA KEV CVE joined to the affected version ranges of one product of this file.

    `versions` are the affected ranges (NVD cpeMatch style); `fixed` the first fixed release of each line, as the
    advisory named in `checked` states it. An entry whose ranges could not be checked says why in `unverified`
    and has no ranges: a service of that product is then judged "could not assess", never "not affected".
    """

    cve: str = Field(pattern=r"^CVE-\d{4}-\d{4,}$")
    product: str
    name: str = ""
    date_added: dt.date | None = None
    versions: list[VersionRange] = Field(default_factory=list)
    fixed: list[str] = Field(default_factory=list, description="first fixed release per line, as the advisory says")
    checked: str = Field("", description="where the affected ranges were checked (advisory, NVD record)")
    unverified: str = Field("", description="why the affected ranges are not in the data (then `versions` is empty)")

    _d = field_validator("date_added", mode="before")(_date)

    @model_validator(mode="after")
    def _ranges_or_reason(self) -> KevEntry:
        if not self.versions and not self.unverified:
            raise ValueError(
                f"kev {self.cve}: give the affected `versions`, or say in `unverified` why they are unknown"
            )
        if self.versions and self.unverified:
            raise ValueError(f"kev {self.cve}: `unverified` is only for an entry without `versions`")
        return self


class VersionRange(_Strict):
    exact: str | None = None
    start_including: str | None = None
    start_excluding: str | None = None
    end_including: str | None = None
    end_excluding: str | None = None


KevEntry.model_rebuild()


class KevSnapshot(_Strict):
    """Which CISA KEV catalogue the `kev` entries were taken from."""

    catalog_version: str
    date_released: dt.date = Field(description="the catalogue's dateReleased: the KEV knowledge is as of this day")
    source: str = Field(description="id of the source (under `sources`) the catalogue came from")
    count: int | None = Field(None, ge=0, description="entries in the whole catalogue")

    _d = field_validator("date_released", mode="before")(_date)


class DistroHint(_Strict):
    """Which distribution release shipped which upstream version of a product (for banners without a marker)."""

    product: str
    version: str
    distro: str
    release: str


class VersionDataFile(_Strict):
    schema_version: int
    data_version: str
    generated: dt.date
    description: str = ""
    sources: list[Source] = Field(min_length=1)
    products: list[Product] = Field(min_length=1)
    distro_hints: list[DistroHint] = Field(default_factory=list)
    kev_snapshot: KevSnapshot | None = Field(
        None, description="the KEV catalogue `kev` comes from; without it PAT-05 cannot tell how old its knowledge is"
    )
    kev: list[KevEntry] = Field(default_factory=list)

    _d = field_validator("generated", mode="before")(_date)

    @field_validator("schema_version")
    @classmethod
    def _schema(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise ValueError(f"schema_version {value} is not supported (this hcscan reads {SCHEMA_VERSION})")
        return value

    @model_validator(mode="after")
    def _references(self) -> VersionDataFile:
        sources = {s.id for s in self.sources}
        ids: set[str] = set()
        for p in self.products:
            if p.source not in sources:
                raise ValueError(f"product {p.id}: unknown source '{p.source}'")
            if p.id in ids:
                raise ValueError(f"duplicate product id '{p.id}'")
            ids.add(p.id)
        for k in self.kev:
            if k.product not in ids:
                raise ValueError(f"kev {k.cve}: unknown product '{k.product}'")
        if self.kev_snapshot is not None and self.kev_snapshot.source not in sources:
            raise ValueError(f"kev_snapshot: unknown source '{self.kev_snapshot.source}'")
        return self


@dataclass(frozen=True)
class VersionData:
    """The loaded file plus indexes for lookups."""

    file: VersionDataFile
    path: Path

    @cached_property
    def products(self) -> Mapping[str, Product]:
        return {p.id: p for p in self.file.products}

    @cached_property
    def sources(self) -> Mapping[str, Source]:
        return {s.id: s for s in self.file.sources}

    def product_by_name(self, name: str) -> Product | None:
        """Find a product by id, display name or alias (case-insensitive), as an inventory names it."""
        wanted = name.strip().lower()
        for p in self.file.products:
            if wanted == p.id or wanted == p.name.lower() or wanted in (a.lower() for a in p.aliases):
                return p
        return None

    def scheme(self, product: Product) -> VersionScheme:
        return scheme_for(product.scheme)

    def cycle_for(self, product: Product, version: str) -> Cycle | None:
        """The cycle `version` belongs to (by alias first, then by the scheme's prefix rule)."""
        lowered = version.strip().lower()
        for c in product.cycles:
            if lowered == c.cycle.lower() or any(lowered.startswith(a.lower()) for a in c.aliases):
                return c
        try:
            name = self.scheme(product).cycle_of(version, (c.cycle for c in product.cycles))
        except VersionParseError:
            return None
        return next((c for c in product.cycles if c.cycle == name), None)

    def kev_for(self, product_id: str) -> tuple[KevEntry, ...]:
        """The KEV entries of one product (with or without checked ranges)."""
        return tuple(k for k in self.file.kev if k.product == product_id)

    def kev_as_of(self) -> dt.date | None:
        """The day the KEV knowledge is current to: the snapshot's release date (None: no snapshot recorded)."""
        return self.file.kev_snapshot.date_released if self.file.kev_snapshot is not None else None

    def info(self) -> dict[str, Any]:
        f = self.file
        snap = f.kev_snapshot
        return {
            "schema_version": f.schema_version,
            "data_version": f.data_version,
            "generated": f.generated.isoformat(),
            "path": str(self.path),
            "products": len(f.products),
            "kev_entries": len(f.kev),
            "kev_snapshot": (
                {
                    "catalog_version": snap.catalog_version,
                    "date_released": snap.date_released.isoformat(),
                    "source": snap.source,
                    "count": snap.count,
                }
                if snap is not None
                else None
            ),
        }


def packaged_data_path() -> Path:
    """The version data shipped inside the package (works from an installed wheel)."""
    return _PACKAGE_DATA


def load_version_data(path: Path | None = None, *, text: str | None = None) -> VersionData:
    """Load and validate a version-data file (default: the shipped one). Raises InputError with file:line."""
    file = path or packaged_data_path()
    loaded = load_yaml(file, text=text)
    if loaded.data is None:
        raise InputError.single("the version-data file is empty", file=file)
    return VersionData(validate_model(VersionDataFile, loaded), file)
