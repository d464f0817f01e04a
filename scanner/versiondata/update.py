"""`hcscan data update`: refresh the version data online from endoflife.date, CISA KEV and NVD — or leave it alone.

Reads, over HTTPS with verified TLS: the endoflife.date API v1 document of every product that has a slug
(importer.ENDOFLIFE_SLUGS), the CISA KEV catalogue and, for each KEV CVE that may concern a product of the data,
its NVD CVE API 2.0 record (affected version ranges). Every answer is checked (status, size cap, time limit, valid
JSON, expected shape, the product or CVE that was asked for) and all of them must be good before anything is
merged: one bad answer leaves the file byte for byte as it was. The merge is `hcscan data import`'s (importer.py);
the result is validated, compared with the old data (the diff is printed), and moved into place atomically with the
previous file kept beside it as `<name>.prev`.

Public data, no secret in the requests except an optional NVD API key (a header, never printed): the standard
proxy variables (HTTPS_PROXY, NO_PROXY, …) are honoured; `.netrc` and REQUESTS_CA_BUNDLE are not (the CA bundle is
a config setting). Redirects are not followed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
import urllib3
from pydantic import ValidationError

from scanner.errors import InputError
from scanner.exposure_config import VersionDataUpdateConfig
from scanner.versiondata.importer import (
    ENDOFLIFE_SLUGS,
    apply_endoflife,
    apply_kev,
    checked_by_hand,
    cycles_from_endoflife,
    render_version_data,
    write_version_data,
)
from scanner.versiondata.model import Cycle, Product, VersionData, VersionDataFile, load_version_data
from scanner.versiondata.schemes import VersionParseError, VersionScheme, scheme_for

if TYPE_CHECKING:
    from scanner.config import Config

MiB = 1024 * 1024
NVD_WINDOW_S = 30.0
NVD_LIMIT_WITHOUT_KEY = 5  # NVD's published rate limits per rolling 30 s
NVD_LIMIT_WITH_KEY = 50
NVD_RETRIES = 2  # NVD throttles with 403 (also 429/503): wait, then ask again, at most this often
NVD_PAUSE_S = 35.0  # a whole 30 s window, when the answer names no Retry-After
BUSY = (403, 429, 503)
_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+ -]{0,63}$")  # cycle and release names as endoflife.date writes them
_PRINTABLE = re.compile(r"^[\x20-\x7e]{1,120}$")  # any other text in a name is a broken or hostile answer


class UpdateError(Exception):
    """A source did not answer, or answered something that is not what was asked: nothing was written."""


class _Refused(UpdateError):
    """A status other than 200; keeps what a retry needs to know."""

    def __init__(self, message: str, resp: requests.Response) -> None:
        super().__init__(message)
        self.status = resp.status_code
        self.retry_after = resp.headers.get("Retry-After", "")


@dataclass(frozen=True)
class UpdateSettings:
    """Where to read and how carefully; built from `exposure.version_data.update` (caps are not configurable)."""

    endoflife_url: str = VersionDataUpdateConfig.model_fields["endoflife_url"].default
    kev_url: str = VersionDataUpdateConfig.model_fields["kev_url"].default
    nvd_url: str = VersionDataUpdateConfig.model_fields["nvd_url"].default
    verify: str | bool = True  # a CA bundle path, or True for certifi's public roots
    timeout_s: float = 60.0
    nvd_api_key: str | None = field(default=None, repr=False)
    nvd_requests_per_30s: int | None = None
    min_kev_entries: int = 1000
    max_endoflife_bytes: int = 4 * MiB
    max_kev_bytes: int = 32 * MiB
    max_nvd_bytes: int = 16 * MiB  # one CVE of a network vendor can list thousands of CPE matches

    @classmethod
    def from_config(cls, cfg: VersionDataUpdateConfig, base_dir: Path) -> UpdateSettings:
        """Settings from config; the API key is read from the named environment variable (unset: no key)."""
        bundle: str | bool = True
        if cfg.ca_bundle is not None:
            path = cfg.ca_bundle if cfg.ca_bundle.is_absolute() else base_dir / cfg.ca_bundle
            if not path.is_file():
                raise InputError.single(
                    f"exposure.version_data.update.ca_bundle: file not found: {path}",
                    hint="name a PEM file of trusted roots (relative paths are relative to config.yaml's folder)",
                )
            bundle = str(path)
        key = (os.environ.get(cfg.nvd_api_key_env, "").strip() or None) if cfg.nvd_api_key_env else None
        return cls(
            endoflife_url=cfg.endoflife_url,
            kev_url=cfg.kev_url,
            nvd_url=cfg.nvd_url,
            verify=bundle,
            timeout_s=cfg.timeout_s,
            nvd_api_key=key,
            nvd_requests_per_30s=cfg.nvd_requests_per_30s,
            min_kev_entries=cfg.min_kev_entries,
        )

    def nvd_rate(self) -> int:
        if self.nvd_requests_per_30s is not None:
            return self.nvd_requests_per_30s
        return NVD_LIMIT_WITH_KEY if self.nvd_api_key else NVD_LIMIT_WITHOUT_KEY


class RateLimiter:
    """At most `limit` calls in any `window_s` seconds (a sliding window); waits, never refuses."""

    def __init__(
        self,
        limit: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limit, self.window_s, self._clock, self._sleep = limit, window_s, clock, sleep
        self._calls: deque[float] = deque()

    def wait(self) -> float:
        """Block until one more call is allowed; return how long it waited."""
        waited = 0.0
        while True:
            now = self._clock()
            while self._calls and now - self._calls[0] >= self.window_s:
                self._calls.popleft()
            if len(self._calls) < self.limit:
                self._calls.append(now)
                return waited
            pause = self._calls[0] + self.window_s - now
            self._sleep(pause)
            waited += pause


class _Client:
    """GETs JSON over verified TLS within a size cap and a time limit; every failure is an UpdateError."""

    def __init__(self, settings: UpdateSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.trust_env = False  # no .netrc, no REQUESTS_CA_BUNDLE; proxies are taken below, explicitly
        self.session.headers["User-Agent"] = "hcscan-data-update"

    def close(self) -> None:
        self.session.close()

    def _clean(self, text: str) -> str:
        key = self.settings.nvd_api_key
        return text.replace(key, "…") if key else text

    def get_json(self, url: str, what: str, cap: int, headers: Mapping[str, str] | None = None) -> Any:
        timeout = self.settings.timeout_s
        deadline = time.monotonic() + timeout
        try:
            with self.session.get(
                url,
                headers=dict(headers or {}),
                timeout=(timeout, timeout),
                verify=self.settings.verify,
                proxies=requests.utils.get_environ_proxies(url),
                allow_redirects=False,
                stream=True,
            ) as resp:
                if resp.status_code != 200:
                    reason = f" {resp.reason}" if resp.reason else ""
                    said = resp.headers.get("message", "")  # NVD says why in a header ("Invalid apiKey.")
                    reason += f" ({self._clean(said)[:100]})" if said else ""
                    extra = ""
                    if resp.status_code in BUSY:
                        extra = " (the source is busy or rate-limiting: try again later)"
                    elif 300 <= resp.status_code < 400:
                        extra = " (redirects are not followed: configure the final URL)"
                    raise _Refused(f"{what}: HTTP {resp.status_code}{reason} from {url}{extra}", resp)
                declared = resp.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise UpdateError(f"{what}: the answer is {int(declared)} bytes, more than the cap of {cap}")
                # read1 returns whatever has arrived, so a server that trickles its answer (and so never trips
                # the per-read timeout) is still cut off at the deadline.
                body = bytearray()
                while chunk := resp.raw.read1(64 * 1024, decode_content=True):
                    body += chunk
                    if len(body) > cap:
                        raise UpdateError(f"{what}: the answer from {url} exceeds the cap of {cap} bytes")
                    if time.monotonic() > deadline:
                        raise UpdateError(f"{what}: {url} did not finish its answer within {timeout:g} s")
        except UpdateError:
            raise
        except requests.exceptions.SSLError as exc:
            raise UpdateError(f"{what}: TLS verification of {url} failed: {self._clean(str(exc))}") from None
        except (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError):
            raise UpdateError(f"{what}: {url} did not answer within {timeout:g} s") from None
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise UpdateError(f"{what}: reading {url} failed: {self._clean(str(exc))}") from None
        try:
            return json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            detail = str(exc)[:200] if not isinstance(exc, RecursionError) else "nested too deeply"
            raise UpdateError(f"{what}: the answer from {url} is not valid JSON ({detail})") from None


# -- what each source must look like ----------------------------------------------------------------------


def _check_endoflife(doc: Any, slug: str, url: str) -> None:
    what = f"endoflife.date {slug}"
    result = doc.get("result") if isinstance(doc, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("releases"), list):
        raise UpdateError(f"{what}: {url} is not an endoflife.date API v1 product ({{result: {{releases: […]}}}})")
    generated = doc.get("generated_at")
    if generated is not None and not (isinstance(generated, str) and _DATE.match(generated)):
        raise UpdateError(f"{what}: {url} has a malformed generated_at")
    if result.get("name") != slug:
        raise UpdateError(f"{what}: {url} answered for product {str(result.get('name'))[:80]!r}, not {slug!r}")
    releases = result["releases"]
    if not releases:
        raise UpdateError(f"{what}: {url} lists no releases")
    for r in releases:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not _NAME.match(r["name"]):
            raise UpdateError(f"{what}: a release in {url} has no name, or a name that is not a version name")
        latest = r.get("latest")
        latest_name = latest.get("name") if isinstance(latest, dict) else None
        if latest is not None and not (
            latest_name is None or (isinstance(latest_name, str) and _PRINTABLE.match(latest_name))
        ):
            raise UpdateError(f"{what}: release {r['name']!r} has a malformed 'latest'")
        for key in ("releaseDate", "eolFrom", "eoesFrom"):
            value = r.get(key)
            if value is not None and not (isinstance(value, str) and _DATE.match(value)):
                raise UpdateError(f"{what}: release {r['name']!r} has a malformed {key}")


def _check_kev(doc: Any, url: str, minimum: int) -> list[dict[str, Any]]:
    vulns = doc.get("vulnerabilities") if isinstance(doc, dict) else None
    if not isinstance(vulns, list):
        raise UpdateError(f"CISA KEV: {url} is not a KEV catalogue (no 'vulnerabilities' list)")
    for v in vulns:
        if not isinstance(v, dict) or not isinstance(v.get("cveID"), str) or not _CVE.match(v["cveID"]):
            raise UpdateError(f"CISA KEV: an entry in {url} has no valid cveID")
    count = doc.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count != len(vulns):
        raise UpdateError(f"CISA KEV: {url} says it has {count} entries but lists {len(vulns)} (cut short?)")
    released = doc.get("dateReleased")
    if not (isinstance(released, str) and _DATE.match(released)):
        raise UpdateError(f"CISA KEV: {url} has no dateReleased (the day the catalogue is current to)")
    if len(vulns) < minimum:
        raise UpdateError(
            f"CISA KEV: {url} lists {len(vulns)} entries, fewer than the {minimum} expected "
            "(exposure.version_data.update.min_kev_entries): refusing a catalogue that collapsed"
        )
    return vulns


def _check_nvd(doc: Any, cve: str, url: str) -> None:
    what = f"NVD {cve}"
    vulns = doc.get("vulnerabilities") if isinstance(doc, dict) else None
    if not isinstance(vulns, list):
        raise UpdateError(f"{what}: {url} is not an NVD CVE API 2.0 answer (no 'vulnerabilities' list)")
    if doc.get("format", "NVD_CVE") != "NVD_CVE":
        raise UpdateError(f"{what}: {url} answered in format {str(doc.get('format'))[:40]!r}, not NVD_CVE")
    ids = [
        v.get("cve", {}).get("id") if isinstance(v, dict) and isinstance(v.get("cve"), dict) else None for v in vulns
    ]
    if ids != [cve]:
        shown = ", ".join(str(i)[:20] for i in ids[:3]) or "nothing"
        raise UpdateError(f"{what}: {url} answered with {shown}, not {cve}")
    configs = vulns[0]["cve"].get("configurations", [])
    if not isinstance(configs, list) or not all(
        isinstance(c, dict) and isinstance(c.get("nodes", []), list) for c in configs
    ):
        raise UpdateError(f"{what}: malformed 'configurations' in {url}")


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"\([^)]*\)", "", text.lower())).strip("_")


def kev_candidates(vulns: Sequence[Mapping[str, Any]], products: Iterable[Product], known: Iterable[str]) -> list[str]:
    """KEV CVEs that may concern a product of the data, by vendor/product name (NVD's CPEs decide in the end).

    A KEV entry is a candidate when its product is a data product's CPE product or name (or contains one of at least
    8 characters: "Pulse Connect Secure" holds connect_secure), or its vendor is one whose CPE vendor and product
    are the same word (php:php, samba:samba): every KEV CVE of such a vendor is about that product. Inventory
    aliases are not used (an alias such as "windows" would send every Windows CVE to NVD). CVEs already in the data
    are asked again, to refresh their ranges."""
    names: set[str] = set()
    vendors: set[str] = set()
    for p in products:
        names.add(_norm(p.name))
        for prefix in p.cpe:
            parts = prefix.split(":")
            if len(parts) >= 4:
                names.add(_norm(parts[3]))
                if _norm(parts[2]) == _norm(parts[3]):
                    vendors.add(_norm(parts[2]))
    names.discard("")
    long_names = [n for n in names if len(n) >= 8]
    wanted = set(known)
    out: list[str] = []
    for v in vulns:
        cve = str(v["cveID"])
        product = _norm(str(v.get("product", "")))
        vendor = _norm(str(v.get("vendorProject", "")))
        related = (
            cve in wanted
            or product in names
            or f"{vendor}_{product}" in names
            or vendor in vendors
            or any(n in product for n in long_names)
        )
        if related and cve not in out:
            out.append(cve)
    return out


def _newest_release(scheme: VersionScheme, cycle: str, text: str, known: str | None) -> tuple[str | None, str]:
    """The newest-release text to store for a cycle, or None and why not.

    A single version token is stored as written ("11.2.13-h1"). Text with words after the version is stored as its
    version part only when that says more than the cycle itself: "16.0.4265.3 CU26" → 16.0.4265.3, but "8.0
    Update 3k" would read as 8.0 and pass every 8.0 build, so it is left out. Nor does the newest release go back
    behind the one the data knows (a stale mirror)."""
    if not _NAME.match(text):
        return None, f"newest release {text!r} is not a version"
    try:
        parsed = scheme.parse(text)
    except VersionParseError:
        return None, f"newest release {text!r} is not a version"
    try:
        cycle_parts = len(scheme.parse(cycle).parts)
    except VersionParseError:
        cycle_parts = 0  # a named cycle ("subscription", "2019")
    value = text
    if " " in text:
        if len(parsed.parts) < 3 or len(parsed.parts) <= cycle_parts or not parsed.head:
            return None, f"newest release {text!r} does not say which update of the line it is"
        value = parsed.head
    if known is not None:
        try:
            if parsed < scheme.parse(known):
                return None, f"newest release {text!r} is older than the data's {known}"
        except VersionParseError:
            pass
    return value, ""


def fit_cycles(product: Product, cycles: Sequence[Cycle]) -> tuple[list[Cycle], list[str]]:
    """The source's cycles an online update takes for `product`, and notes on what it left out.

    Taken: every cycle the data knows (by name or alias), and cycles released after every cycle it knows (new
    release lines). Left out: older cycles the data does not have (the data may group them differently: SQL
    Server's service packs are one cycle per version here; Windows Server's semi-annual channel is not tracked), a
    cycle that matches only by alias a data cycle another source cycle matches by name (Windows Server "2003" and
    "2003-sp2"), and a newest release the product's version scheme cannot read ("9.0-XFR (VM-Series only)"): the
    cycle is taken without it and keeps the newest release it had (see _newest_release). `hcscan data import`
    takes an export whole."""
    scheme = scheme_for(product.scheme)
    known = {c.cycle.lower() for c in product.cycles}
    by_name = {c.cycle.lower() for c in cycles if c.cycle.lower() in known}
    newest = max((c.released for c in product.cycles if c.released is not None), default=None)
    taken: list[Cycle] = []
    notes: list[str] = []
    for c in cycles:
        key = c.cycle.lower()
        alias_of = [d.cycle for d in product.cycles if key in {a.lower() for a in d.aliases}]
        if key not in known and alias_of and any(name.lower() in by_name for name in alias_of):
            notes.append(f"{product.id} cycle {c.cycle}: the data has it as cycle {alias_of[0]}")
            continue
        if key not in known and not alias_of and (newest is None or c.released is None or c.released <= newest):
            notes.append(f"{product.id} cycle {c.cycle}: a line the data does not track, not newer than its lines")
            continue
        if c.latest is not None:
            before = next((d.latest for d in product.cycles if d.cycle.lower() == key), None)
            value, why = _newest_release(scheme, c.cycle, c.latest, before)
            if value is None:
                notes.append(f"{product.id} cycle {c.cycle}: {why}")
                c = c.model_copy(update={"latest": None, "latest_date": None})
            elif value != c.latest:
                c = c.model_copy(update={"latest": value})
        taken.append(c)
    return taken, notes


# -- what changed ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataDiff:
    """Products, cycles and KEV entries added, changed and removed between two version-data files."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def lines(self) -> list[str]:
        return (
            [f"+ {x}" for x in self.added] + [f"~ {x}" for x in self.changed] + [f"- {x}" for x in self.removed]
        ) or ["no change in products, cycles or KEV entries"]


_CYCLE_FIELDS = ("released", "eol", "latest", "latest_date")


def diff_data(old: VersionDataFile, new: VersionDataFile) -> DataDiff:
    """What a reader of the data would see change (cycle fields, KEV entries and their ranges)."""
    added: list[str] = []
    changed: list[str] = []
    removed: list[str] = []
    old_p = {p.id: p for p in old.products}
    new_p = {p.id: p for p in new.products}
    added.extend(f"product {pid}" for pid in new_p if pid not in old_p)
    removed.extend(f"product {pid}" for pid in old_p if pid not in new_p)
    for pid, np in new_p.items():
        op = old_p.get(pid)
        if op is None:
            continue
        if op.as_of != np.as_of:
            changed.append(f"{pid}: knowledge as of {op.as_of} → {np.as_of}")
        oc = {c.cycle: c for c in op.cycles}
        nc = {c.cycle: c for c in np.cycles}
        added.extend(f"{pid} cycle {name}" for name in nc if name not in oc)
        removed.extend(f"{pid} cycle {name}" for name in oc if name not in nc)
        for name, c in nc.items():
            before = oc.get(name)
            if before is None:
                continue
            changes = [
                f"{f} {_show(getattr(before, f))} → {_show(getattr(c, f))}"
                for f in _CYCLE_FIELDS
                if getattr(before, f) != getattr(c, f)
            ]
            if changes:
                changed.append(f"{pid} cycle {name}: " + ", ".join(changes))
    if old.kev_snapshot != new.kev_snapshot:
        changed.append(f"KEV catalogue {_snapshot(old)} → {_snapshot(new)}")
    ok = {(k.cve, k.product): k for k in old.kev}
    nk = {(k.cve, k.product): k for k in new.kev}
    added.extend(f"KEV {cve} ({pid})" for cve, pid in sorted(nk) if (cve, pid) not in ok)
    removed.extend(f"KEV {cve} ({pid})" for cve, pid in sorted(ok) if (cve, pid) not in nk)
    changed.extend(
        f"KEV {cve} ({pid}): affected versions changed"
        for (cve, pid), k in sorted(nk.items())
        if (cve, pid) in ok and ok[(cve, pid)].versions != k.versions
    )
    return DataDiff(added, changed, removed)


def _snapshot(data: VersionDataFile) -> str:
    snap = data.kev_snapshot
    return "none" if snap is None else f"{snap.catalog_version} of {snap.date_released}"


def _show(value: Any) -> str:
    if value is None:
        return "not stated"
    if value is True:
        return "ended"
    if value is False:
        return "none announced"
    return str(value)


# -- the update ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdateResult:
    target: Path
    written: bool
    previous: Path | None  # where the replaced file was kept
    diff: DataDiff
    refreshed: list[str]  # product ids refreshed from endoflife.date
    not_online: list[str]  # product ids without an endoflife.date slug (kept as they were)
    kev_catalogue: str  # catalogVersion of the KEV catalogue read
    kev_listed: int
    nvd_requests: int
    data: VersionData
    left_out: list[str] = field(default_factory=list)  # what fit_cycles did not take from endoflife.date


def _join(base: str, tail: str) -> str:
    return base.rstrip("/") + "/" + tail


def update_data(
    base: VersionData,
    target: Path,
    settings: UpdateSettings,
    *,
    dry_run: bool = False,
    today: dt.date | None = None,
    log: Callable[[str], None] = lambda _m: None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> UpdateResult:
    """Fetch and check every source, merge into `base`, and (unless `dry_run`) replace `target` atomically.

    Raises UpdateError when a source failed or its answer cannot be merged into valid data: nothing is written."""
    today = today or dt.datetime.now(dt.UTC).date()
    client = _Client(settings)
    try:
        return _update(base, target, settings, client, dry_run, today, log, limiter, sleep)
    finally:
        client.close()


def _update(
    base: VersionData,
    target: Path,
    settings: UpdateSettings,
    client: _Client,
    dry_run: bool,
    today: dt.date,
    log: Callable[[str], None],
    limiter: RateLimiter | None,
    sleep: Callable[[float], None],
) -> UpdateResult:
    products = list(base.file.products)
    online = [(p.id, ENDOFLIFE_SLUGS[p.id]) for p in products if p.id in ENDOFLIFE_SLUGS]
    not_online = [p.id for p in products if p.id not in ENDOFLIFE_SLUGS]
    # 1. read everything; any failure stops here, before the data is touched
    eol_docs: list[tuple[str, str, str, Any]] = []
    for pid, slug in online:
        url = _join(settings.endoflife_url, quote(slug))
        doc = client.get_json(url, f"endoflife.date {slug}", settings.max_endoflife_bytes)
        _check_endoflife(doc, slug, url)
        eol_docs.append((pid, slug, url, doc))
    log(f"endoflife.date: {len(eol_docs)} product(s) read")
    kev_doc = client.get_json(settings.kev_url, "CISA KEV", settings.max_kev_bytes)
    vulns = _check_kev(kev_doc, settings.kev_url, settings.min_kev_entries)
    listed = {str(v["cveID"]) for v in vulns}
    snapshot = base.file.kev_snapshot
    if snapshot is not None:
        if snapshot.count is not None and len(vulns) * 10 < snapshot.count * 9:
            raise UpdateError(
                f"CISA KEV: {settings.kev_url} lists {len(vulns)} entries where the data's catalogue "
                f"{snapshot.catalog_version} had {snapshot.count}: refusing a catalogue that collapsed"
            )
        if str(kev_doc["dateReleased"])[:10] < snapshot.date_released.isoformat():
            raise UpdateError(
                f"CISA KEV: {settings.kev_url} is the catalogue of {str(kev_doc['dateReleased'])[:10]}, older than "
                f"the data's ({snapshot.date_released}): refusing to go back"
            )
    gone = [k for k in base.file.kev if k.cve not in listed]
    if len(base.file.kev) >= 4 and len(gone) * 2 > len(base.file.kev):
        raise UpdateError(
            f"CISA KEV: {len(gone)} of the {len(base.file.kev)} KEV entries in the data are no longer listed by "
            f"{settings.kev_url}: refusing a catalogue that collapsed"
        )
    catalogue = str(kev_doc.get("catalogVersion", "unknown"))[:40]
    log(f"CISA KEV: catalogue {catalogue}, {len(vulns)} entries")
    # NVD is asked about each candidate once; a CVE whose every entry was checked by hand is not asked again.
    entries = [k.model_dump(mode="json") for k in base.file.kev]
    by_hand = {k["cve"] for k in entries} - {k["cve"] for k in entries if not checked_by_hand(k)}
    candidates = kev_candidates(vulns, products, (k["cve"] for k in entries))
    cves = [c for c in candidates if c not in by_hand]
    limiter = limiter or RateLimiter(settings.nvd_rate(), NVD_WINDOW_S)
    headers = {"apiKey": settings.nvd_api_key} if settings.nvd_api_key else None
    nvd_docs: list[Any] = []
    for i, cve in enumerate(cves, 1):
        limiter.wait()
        url = f"{settings.nvd_url}?cveId={quote(cve)}"
        for attempt in range(NVD_RETRIES + 1):
            try:
                doc = client.get_json(url, f"NVD {cve}", settings.max_nvd_bytes, headers)
                break
            except _Refused as exc:
                if exc.status not in BUSY or attempt == NVD_RETRIES:
                    raise
                pause = _retry_pause(exc.retry_after)
                log(f"NVD {cve}: HTTP {exc.status}, asking again in {pause:g} s")
                sleep(pause)
                limiter.wait()
        _check_nvd(doc, cve, url)
        nvd_docs.append(doc)
        if i % 10 == 0:
            log(f"NVD: {i} of {len(cves)} CVE record(s) read")
    log(f"NVD: {len(nvd_docs)} CVE record(s) read")
    # 2. merge as `hcscan data import` does, and check the result loads
    data = base.file.model_dump(mode="json")
    left_out: list[str] = []
    refreshed: list[str] = []
    for pid, slug, url, doc in eol_docs:
        where = Path(f"endoflife.date-{slug}.json")
        # The document's own date is how current the knowledge is; one older than the data's is not taken.
        current = _day(doc.get("generated_at"))
        if current is not None and current < base.products[pid].as_of:
            left_out.append(f"{pid}: {url} is of {current}, older than the data's {base.products[pid].as_of}")
            continue
        try:
            cycles, notes = fit_cycles(base.products[pid], cycles_from_endoflife(doc, where, pid))
            left_out.extend(notes)
            apply_endoflife(
                data,
                pid,
                cycles,
                file=where,
                source_id=f"endoflife-{pid}",
                label=url,
                today=today,
                as_of=min(current, today) if current is not None else None,
            )
            refreshed.append(pid)
            Product.model_validate(next(p for p in data["products"] if p["id"] == pid))
        except (InputError, ValueError, KeyError, TypeError) as exc:
            raise UpdateError(f"endoflife.date {slug}: {url} cannot be merged: {_reason(exc)}") from None
    try:
        apply_kev(
            data,
            kev_doc,
            nvd_docs,
            kev_file=Path("cisa-kev.json"),
            kev_label=f"{settings.kev_url} (catalogVersion {catalogue}, {len(vulns)} entries)",
            nvd_label=f"{settings.nvd_url} ({len(nvd_docs)} CVE records of KEV-listed CVEs)",
            today=today,
        )
    except (InputError, ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"KEV and NVD answers cannot be merged: {_reason(exc)}") from None
    text = render_version_data(data, today, "hcscan data update")
    try:
        new = load_version_data(target, text=text)
    except InputError as exc:
        raise UpdateError(f"the merged data does not validate: {_reason(exc)}") from None
    diff = diff_data(base.file, new.file)

    def result(written: bool, previous: Path | None, loaded: VersionData) -> UpdateResult:
        return UpdateResult(
            target,
            written,
            previous,
            diff,
            refreshed,
            not_online,
            catalogue,
            len(vulns),
            len(nvd_docs),
            loaded,
            left_out,
        )

    if dry_run:
        return result(False, None, new)
    # 3. keep the previous file, then replace atomically
    previous = None
    if target.is_file():
        previous = target.with_name(target.name + ".prev")
        _copy_atomically(target, previous)
    return result(True, previous, write_version_data(text, target))


def _retry_pause(retry_after: str) -> float:
    """Retry-After in seconds when the answer gives a small one, else a whole NVD window."""
    return float(retry_after) if retry_after.isdigit() and int(retry_after) <= 120 else NVD_PAUSE_S


def _day(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value[:10]) if isinstance(value, str) else None
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InputError):
        return "; ".join(p.message for p in exc.problems)[:300]
    if isinstance(exc, ValidationError):
        return "; ".join(str(e["msg"]) for e in exc.errors()[:3])[:300]
    return str(exc)[:300]


def _copy_atomically(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    fd, tmp_name = tempfile.mkstemp(prefix=".versions-prev-", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def run_update(
    cfg: Config | None,
    target: Path,
    *,
    dry_run: bool = False,
    log: Callable[[str], None] = lambda _m: None,
) -> UpdateResult:
    """`hcscan data update` and the agent's `data-update` job: sources from config (defaults without one), the
    current file as the base (the shipped data on the first update)."""
    if cfg is None:
        settings = UpdateSettings()
    else:
        update_cfg = cfg.exposure.version_data.update
        settings = UpdateSettings.from_config(update_cfg, cfg.base_dir)
        if update_cfg.nvd_api_key_env and not settings.nvd_api_key:
            log(f"NVD: ${update_cfg.nvd_api_key_env} is not set: reading without an API key (slower)")
    folder = target.parent if target.parent.exists() else None
    if not dry_run and folder is not None and not os.access(folder, os.W_OK | os.X_OK):
        raise InputError.single(  # found out before minutes of polite reading, not after
            f"cannot write the version data into {folder}",
            hint="run as a user who may write there, or set exposure.version_data.path elsewhere (or --out)",
        )
    base = load_version_data(target if target.is_file() else None)
    try:
        return update_data(base, target, settings, dry_run=dry_run, log=log)
    except OSError as exc:  # a full disk while writing: the old file is still in place
        raise UpdateError(f"writing {target} failed: {exc.strerror or exc}") from None
