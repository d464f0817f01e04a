"""From what a service shows (nmap's product/version/CPE, a raw banner) to a product, version and cycle.

Pure functions over the version data. The result records *how* the product was recognised and whether
the version text carried a distribution suffix, because a distribution banner (``OpenSSH_8.9p1
Ubuntu-3ubuntu0.6``) may carry back-ported fixes: its upstream number says little about its patch level.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from scanner.saferegex import compile_safe
from scanner.versiondata.model import Cycle, KevEntry, Product, VersionData, VersionEndpoint, VersionRange
from scanner.versiondata.schemes import VersionParseError, VersionScheme

Evidence = Literal["bare_upstream_banner", "distribution_banner", "version_endpoint", "declared", "none"]

_DEB_RELEASE = re.compile(r"(?:\+|~)deb(\d+)(?:u\d+)?", re.IGNORECASE)
_UBUNTU_RELEASE = re.compile(r"ubuntu(?:0\.)?(\d{2}\.\d{2})", re.IGNORECASE)
_EL_RELEASE = re.compile(r"\.el(\d+)", re.IGNORECASE)
_DISTRO_WORDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"ubuntu", re.IGNORECASE), "ubuntu"),
    (re.compile(r"debian|raspbian", re.IGNORECASE), "debian"),
    (re.compile(r"red[ _]?hat|rhel|centos|rocky|almalinux|\.el\d", re.IGNORECASE), "rhel"),
    (re.compile(r"suse|sles", re.IGNORECASE), "suse"),
    (re.compile(r"freebsd", re.IGNORECASE), "freebsd"),
)
_RANGE = re.compile(r"\d\s+-\s+\d|or later|or earlier|\.X\b")
# Words after the upstream version that are not a distribution (build flavours, platforms).
_UPSTREAM_WORDS = re.compile(r"^\(?(unix|win32|win64|openssl[^\s)]*|php[^\s)]*|mod_[^\s)]*)\)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Distro:
    name: str  # "debian", "ubuntu", "rhel", ...
    release: str | None  # "9", "22.04", or None when the banner does not say
    marker: str  # the text that revealed it


@dataclass(frozen=True)
class Identification:
    """What hcscan concluded a service is, and on what evidence."""

    product: Product | None
    version: str | None  # upstream version, as the scheme reads it
    cycle: Cycle | None
    evidence: Evidence
    matched_by: str | None  # "cpe", "nmap_product", "banner", "version_endpoint", "declared"
    source_text: str | None  # the text the version came from
    distro: Distro | None = None
    reason: str | None = None  # why the product/version/cycle is unknown, when it is
    kev: tuple[KevEntry, ...] = field(default_factory=tuple)
    version_source: str | None = None  # where the version was read, when not from nmap/the banner


def detect_distro(text: str, product_id: str | None, version: str | None, data: VersionData) -> Distro | None:
    """A distribution suffix in version/extra-info/banner text, with its release when it can be told."""
    for pattern, name in ((_DEB_RELEASE, "debian"), (_UBUNTU_RELEASE, "ubuntu"), (_EL_RELEASE, "rhel")):
        m = pattern.search(text)
        if m:
            return Distro(name, m.group(1), m.group(0))
    for pattern, name in _DISTRO_WORDS:
        m = pattern.search(text)
        if m:
            release = None
            if product_id and version:
                hint = next(
                    (
                        h
                        for h in data.file.distro_hints
                        if h.product == product_id and h.distro == name and h.version == version
                    ),
                    None,
                )
                release = hint.release if hint else None
            return Distro(name, release, m.group(0))
    return None


def _cpe_product(cpes: Sequence[str], data: VersionData) -> tuple[Product, str | None] | None:
    for cpe in cpes:
        lowered = cpe.lower()
        for p in data.file.products:
            for prefix in p.cpe:
                if lowered == prefix.lower() or lowered.startswith(prefix.lower() + ":"):
                    rest = lowered[len(prefix) :].lstrip(":")
                    version = rest.split(":", 1)[0] or None
                    return p, version
    return None


def _banner_product(banner: str, data: VersionData) -> tuple[Product, str] | None:
    """The product named first in the banner ("Apache/2.4.6 (CentOS) OpenSSL/1.0.2k" is Apache, not OpenSSL)."""
    best: tuple[int, Product, str] | None = None
    for p in data.file.products:
        for pattern in p.banners:
            m = compile_safe(pattern).search(banner)  # validated at load; RE2 keeps a hostile banner linear
            version = m.groups.get("version") if m else None
            if m and version and (best is None or m.start < best[0]):
                best = (m.start, p, version)
    return (best[1], best[2]) if best else None


def _upstream_head(version_text: str) -> tuple[str, str]:
    """Split nmap's version field into (upstream head, rest): "7.4p1 Debian 10+deb9u7" → ("7.4p1", "Debian 10+deb9u7")."""
    head, _, rest = version_text.strip().partition(" ")
    return head, rest


def identify_service(
    data: VersionData,
    *,
    product: str | None,
    version: str | None,
    extrainfo: str | None,
    cpes: Sequence[str],
    banner: str | None,
) -> Identification:
    """Recognise a product and its upstream version from nmap's service fields and the raw banner."""
    matched: tuple[Product, str | None] | None = None
    matched_by: str | None = None
    source: str | None = None
    if product:
        p = next((p for p in data.file.products if product in p.nmap_products), None)
        if p is not None:
            matched, matched_by, source = (p, _upstream_head(version)[0] if version else None), "nmap_product", version
        hidden = next((p for p in data.file.products if product in p.nmap_products_no_version), None)
        if p is None and hidden is not None:  # the product is known, its version is not shown
            matched, matched_by, source = (hidden, None), "nmap_product", " ".join(x for x in (product, version) if x)
    if matched is None and cpes:
        found = _cpe_product(cpes, data)
        if found is not None:
            matched, matched_by, source = found, "cpe", ", ".join(cpes)
    if matched is None and product:
        # nmap puts a Server header it could not split into the product field whole ("nginx/1.22.1", no version):
        # read it as the banner it is.
        shown = " ".join(x for x in (product, version) if x)
        found_text = _banner_product(shown, data)
        if found_text is not None:
            matched, matched_by, source = found_text, "banner", shown
    if banner:
        found_banner = _banner_product(banner, data)
        same = found_banner is not None and (matched is None or matched[0].id == found_banner[0].id)
        if found_banner is not None and same and (matched is None or matched[1] is None):
            matched, matched_by, source = (found_banner[0], found_banner[1]), "banner", banner
    if matched is None:
        shown = " ".join(x for x in (product, version) if x) or (banner or "").strip()[:80]
        reason: str | None = (
            f"product '{shown}' is not in hcscan's version data"
            if shown
            else "no product or version could be fingerprinted on this port"
        )
        return Identification(None, None, None, "none", None, None, reason=reason)
    prod, found_version = matched
    if not found_version:
        return Identification(
            prod, None, None, "none", matched_by, source, reason=f"{prod.name} recognised, but it shows no version"
        )
    raw_version: str = found_version
    scheme = data.scheme(prod)
    if _RANGE.search(version or ""):
        return Identification(
            prod,
            None,
            None,
            "none",
            matched_by,
            source,
            reason=f"nmap gives only a version range for {prod.name} ({version}), not a version",
        )
    try:
        parsed = scheme.parse(raw_version)
    except VersionParseError:
        return Identification(
            prod, None, None, "none", matched_by, source, reason=f"{prod.name} version {raw_version!r} is not readable"
        )
    attached = raw_version[len(parsed.head) :]  # "-0ubuntu0.18.04.1" in "5.7.33-0ubuntu0.18.04.1"
    raw_version = parsed.head
    suffix_text = " ".join(x for x in (attached, version and _upstream_head(version)[1], extrainfo, banner) if x)
    distro = detect_distro(suffix_text, prod.id, raw_version, data)
    if distro is None and banner and matched_by == "banner":
        distro = detect_distro(banner.split(raw_version, 1)[-1], prod.id, raw_version, data)
    cycle = data.cycle_for(prod, raw_version)
    reason = None
    if cycle is None:
        reason = f"{prod.name} {raw_version}: its release cycle is not in the version data"
    return Identification(
        product=prod,
        version=raw_version,
        cycle=cycle,
        evidence="distribution_banner" if distro is not None else "bare_upstream_banner",
        matched_by=matched_by,
        source_text=source,
        distro=distro,
        reason=reason,
        kev=kev_hits(data, prod, raw_version),
    )


def in_range(scheme: VersionScheme, version: str, r: VersionRange) -> bool:
    """Whether `version` lies in an NVD-style range (bounds that do not parse never match)."""
    try:
        v = scheme.parse(version)
        if r.exact is not None:
            return v == scheme.parse(r.exact)
        if r.start_including is not None and v < scheme.parse(r.start_including):
            return False
        if r.start_excluding is not None and not scheme.parse(r.start_excluding) < v:
            return False
        if r.end_including is not None and scheme.parse(r.end_including) < v:
            return False
        if r.end_excluding is not None and not v < scheme.parse(r.end_excluding):
            return False
    except VersionParseError:
        return False
    return any(x is not None for x in (r.start_including, r.start_excluding, r.end_including, r.end_excluding))


def kev_hits(data: VersionData, product: Product, version: str) -> tuple[KevEntry, ...]:
    scheme = data.scheme(product)
    return tuple(
        k for k in data.file.kev if k.product == product.id and any(in_range(scheme, version, r) for r in k.versions)
    )


def behind_latest(data: VersionData, product: Product, cycle: Cycle | None, version: str) -> bool | None:
    """True if `version` is older than the newest release of its cycle; None when that is not known."""
    if cycle is None or cycle.latest is None:
        return None
    try:
        return data.scheme(product).compare(version, cycle.latest) < 0
    except VersionParseError:
        return None


def kev_fixed_by_latest(
    data: VersionData, product: Product, cycle: Cycle | None, hits: Sequence[KevEntry]
) -> list[str]:
    """The CVEs among `hits` that the newest release of the cycle no longer has (updating to it fixes them)."""
    if cycle is None or cycle.latest is None:
        return []
    scheme = data.scheme(product)
    return [k.cve for k in hits if not any(in_range(scheme, cycle.latest, r) for r in k.versions)]


_HOW = {"nmap_product": "nmap -sV", "cpe": "nmap -sV CPE", "banner": "service banner"}
MAX_READ_SHOWN = 60  # characters of an unusable version-endpoint answer quoted in a reason


def _version_source(ident: Identification) -> str | None:
    """Where the version came from: 'nmap -sV', 'service banner', 'version-endpoint GET /api/server/version'."""
    if ident.version is None:
        return None
    return ident.version_source or _HOW.get(str(ident.matched_by), ident.matched_by)


def version_read_products(
    data: VersionData, ident: Identification, software: Sequence[Mapping[str, Any]]
) -> list[Product]:
    """The products whose documented version endpoint is worth one GET on this port.

    Only when the version is not otherwise visible: the product nmap or the banner recognised without a version,
    or, when nothing on the port names a product, the system's `software:` entries declared without a version.
    """
    if ident.product is not None:
        return [ident.product] if ident.version is None and ident.product.version_endpoints else []
    found: list[Product] = []
    for item in software:
        if item.get("version"):
            continue
        product = data.product_by_name(str(item.get("product") or ""))
        if product is not None and product.version_endpoints and product not in found:
            found.append(product)
    return found


@dataclass(frozen=True)
class VersionRead:
    """What one GET of a version endpoint gave: the body text (capped), or why there is none."""

    endpoint: VersionEndpoint
    text: str | None
    failure: str | None = None


def identify_from_read(data: VersionData, product: Product, read: VersionRead, prior: Identification) -> Identification:
    """The identification after reading `product`'s version endpoint (`prior`: what nmap/the banner gave)."""
    where = f"GET {read.endpoint.path}"
    failure = read.failure
    version: str | None = None
    if failure is None:
        m = compile_safe(read.endpoint.pattern).search(read.text or "")  # validated at load; RE2 keeps it linear
        version = m.groups.get("version") if m else None
        if not version:
            printable = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in read.text or "")
            shown = " ".join(printable.split())[:MAX_READ_SHOWN]
            failure = f"the answer holds no version ('{shown}')" if shown else "the answer was empty"
    if version is None:
        seen = prior.reason if prior.product is not None else f"{product.name} is declared without a version"
        return Identification(
            product,
            None,
            None,
            "none",
            prior.matched_by or "declared",
            prior.source_text,
            reason=f"{seen}; its version endpoint ({where}) gave none: {failure}",
        )
    try:
        head = data.scheme(product).parse(version).head
    except VersionParseError:
        return Identification(
            product,
            None,
            None,
            "none",
            "version_endpoint",
            f"{where}: {version}",
            reason=f"{product.name} version {version!r} from its version endpoint ({where}) is not readable",
        )
    cycle = data.cycle_for(product, head)
    return Identification(
        product=product,
        version=head,
        cycle=cycle,
        evidence="version_endpoint",
        matched_by="version_endpoint",
        source_text=f"{where}: {version}",
        reason=None if cycle is not None else f"{product.name} {head}: its release cycle is not in the version data",
        kev=kev_hits(data, product, head),
        version_source=f"version-endpoint {where}",
    )


def _iso(value: dt.date | bool | None) -> str | bool | None:
    return value.isoformat() if isinstance(value, dt.date) else value


def distro_cycle(data: VersionData, distro: Distro | None) -> Cycle | None:
    if distro is None or distro.release is None:
        return None
    product = data.products.get(distro.name)
    return data.cycle_for(product, distro.release) if product is not None else None


def identification_facts(ident: Identification, data: VersionData) -> dict[str, Any]:
    """The `patch.*` facts of one identification (JSON values; dates as ISO strings)."""
    prod, cycle = ident.product, ident.cycle
    dcycle = distro_cycle(data, ident.distro)
    return {
        "patch.product_id": prod.id if prod else None,
        "patch.product_name": prod.name if prod else None,
        "patch.version": ident.version,
        "patch.version_source": _version_source(ident),
        "patch.matched_by": ident.matched_by,
        "patch.source_text": ident.source_text[:300] if ident.source_text else None,
        "patch.evidence": ident.evidence,
        "patch.unidentified_reason": ident.reason,
        "patch.cycle": cycle.cycle if cycle else None,
        "patch.cycle_eol": _iso(cycle.eol) if cycle else None,
        "patch.cycle_latest": cycle.latest if cycle else None,
        "patch.cycle_latest_date": _iso(cycle.latest_date) if cycle else None,
        "patch.behind_latest": (
            behind_latest(data, prod, cycle, ident.version) if prod is not None and ident.version else None
        ),
        "patch.distro": ident.distro.name if ident.distro else None,
        "patch.distro_release": ident.distro.release if ident.distro else None,
        "patch.distro_marker": ident.distro.marker if ident.distro else None,
        "patch.distro_eol": _iso(dcycle.eol) if dcycle else None,
        "patch.kev": [{"cve": k.cve, "name": k.name, "date_added": _iso(k.date_added)} for k in ident.kev],
        "patch.data_version": data.file.data_version,
        "patch.data_as_of": prod.as_of.isoformat() if prod else None,
        "patch.support": prod.support if prod else None,
        "patch.kev_fixed_by_latest": kev_fixed_by_latest(data, prod, cycle, ident.kev) if prod else [],
        "patch.kev_unverified": (
            [{"cve": k.cve, "name": k.name, "why": k.unverified} for k in data.kev_for(prod.id) if k.unverified]
            if prod
            else []
        ),
        "patch.kev_catalog": data.file.kev_snapshot.catalog_version if data.file.kev_snapshot else None,
        "patch.kev_as_of": _iso(data.kev_as_of()),
    }


def assess_declared(data: VersionData, item: dict[str, Any], http_endpoints: bool = True) -> dict[str, Any]:
    """One inventory `software:` entry, looked up in the version data (or in its own declared lifecycle).

    An entry without a version is judged on the system's endpoints when the product has a version endpoint and the
    system declares an HTTP(S) endpoint (`http_endpoints`) to read it on; otherwise it cannot be judged.
    """
    name, version = str(item.get("product") or ""), str(item.get("version") or "")
    out: dict[str, Any] = {"product": name, "version": version, "product_id": None, "cycle": None}
    out["cycle_eol"] = _iso(item.get("eol")) if item.get("eol") is not None else None
    out["cycle_latest"] = item.get("latest")
    out["cycle_latest_date"] = _iso(item.get("latest_date")) if item.get("latest_date") is not None else None
    out["behind_latest"] = None
    out["lifecycle_source"] = "declared" if item.get("eol") is not None or item.get("latest") else None
    out["unknown_reason"] = None
    out["package_version"] = str(item["package_version"]) if item.get("package_version") else None
    out["kind"], out["support"], out["data_as_of"] = None, None, None
    out["judged_on_endpoints"] = None
    product = data.product_by_name(name)
    if not version:
        return _versionless(out, name, product, http_endpoints)
    if product is None:
        if out["lifecycle_source"] is None:
            out["unknown_reason"] = (
                f"'{name}' is not in hcscan's version data and the inventory declares no eol/latest for it"
            )
        elif item.get("latest"):
            out["behind_latest"] = _dotted_behind(version, str(item["latest"]))
        return out
    out.update(product_id=product.id, kind=product.kind, support=product.support, data_as_of=product.as_of.isoformat())
    if product.support == "unknown" and out["lifecycle_source"] == "declared":
        # hcscan knows the product but not how long it is supported: the vendor dates the inventory gives count.
        if item.get("latest"):
            out["behind_latest"] = _dotted_behind(version, str(item["latest"]))
        return out
    cycle = data.cycle_for(product, version)
    if cycle is None:
        out["unknown_reason"] = f"{product.name} {version}: its release cycle is not in the version data"
        return out
    out.update(
        cycle=cycle.cycle,
        cycle_eol=_iso(cycle.eol),
        cycle_latest=cycle.latest,
        cycle_latest_date=_iso(cycle.latest_date),
        behind_latest=behind_latest(data, product, cycle, version),
        lifecycle_source=f"version data {data.file.data_version} ({product.source}, as of {product.as_of})",
    )
    return out


def _versionless(out: dict[str, Any], name: str, product: Product | None, http_endpoints: bool) -> dict[str, Any]:
    """A `software:` entry without a version: its version is read on the system's endpoints, or it is unknown."""
    if product is None:
        out["unknown_reason"] = (
            f"'{name}' is declared without a version and is not in hcscan's version data; declare its version and "
            "the vendor's eol and latest"
        )
        return out
    out.update(product_id=product.id, kind=product.kind, support=product.support, data_as_of=product.as_of.isoformat())
    reads = ", ".join(f"GET {e.path}" for e in product.version_endpoints)
    if reads and http_endpoints:
        out["judged_on_endpoints"] = reads
    elif reads:
        out["unknown_reason"] = (
            f"{product.name} is declared without a version, and the system declares no HTTP(S) endpoint where its "
            f"version endpoint ({reads}) could be read; declare its version"
        )
    else:
        out["unknown_reason"] = (
            f"{product.name} is declared without a version and shows none hcscan can read; declare its version"
        )
    return out


def _dotted_behind(version: str, latest: str) -> bool | None:
    from scanner.versiondata.schemes import scheme_for

    try:
        return scheme_for("dotted").compare(version, latest) < 0
    except VersionParseError:
        return None
