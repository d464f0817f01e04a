"""Check types of the patching family (PAT): end of life, patch lag, known-exploited CVEs, declared software.

They judge the `patch.*`, `software.*` and `versiondata.*` facts of the service probe. A version read
from a distribution banner (``OpenSSH_8.9p1 Ubuntu-3ubuntu0.6``) may carry back-ported fixes, so these
checks never *fail* a patch-level judgement on one: they say exactly what the inventory must declare.

One rule for a service whose product or version is not visible (no banner, ``Server: Apache`` without a
version, a fragile system that gets no version probes, a product hcscan has no data on): it is `error` (could not
assess), saying what was seen and that the software should be declared under ``software:`` — never
`not_applicable`, because a hidden version is an evidence gap, not the absence of software. Once the system
declares its software, PAT-03 judges the declaration and these endpoint controls are `not_applicable` here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scanner.checks.registry import CheckResult, CheckType
from scanner.models import Status

DECLARE_PACKAGE = (
    "patch level cannot be judged from a distribution banner; declare the package version in the inventory "
    "(software: [{product: %s, version: %s, package_version: <installed package>, updated: <YYYY-MM-DD>}])"
)
_PATCH_FACTS = frozenset(
    {
        "service.version_probed",
        "patch.product_id",
        "patch.product_name",
        "patch.version",
        "patch.version_source",
        "patch.matched_by",
        "patch.source_text",
        "patch.evidence",
        "patch.unidentified_reason",
        "patch.cycle",
        "patch.cycle_eol",
        "patch.cycle_latest",
        "patch.cycle_latest_date",
        "patch.behind_latest",
        "patch.distro",
        "patch.distro_release",
        "patch.distro_marker",
        "patch.distro_eol",
        "patch.declared_package",
        "patch.system_software",
        "patch.data_version",
        "patch.data_as_of",
        "patch.support",
        "versiondata.max_age_days",
    }
)
DEFAULT_MAX_AGE_DAYS = 120  # exposure.version_data.max_age_days's default, for facts recorded without it
UPDATE = "run `hcscan data update`"


def _error(*reasons: str) -> CheckResult:
    return CheckResult(False, reasons, Status.ERROR)


def _na(*reasons: str) -> CheckResult:
    return CheckResult(False, reasons, Status.NOT_APPLICABLE)


def _date(value: Any) -> dt.date | None:
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def _ended(eol: Any, today: dt.date) -> bool | None:
    """eol fact → ended? True/False, or None when unknown. `true` means ended on an unrecorded date."""
    if eol is True:
        return True
    if eol is False or eol is None:
        return False if eol is False else None
    d = _date(eol)
    return None if d is None else d <= today


def _eol_unreadable(eol: Any) -> bool:
    """An end-of-life value that is neither 'not announced' (null), a boolean nor a date: never read as supported."""
    return eol is not None and not isinstance(eol, bool) and _date(eol) is None


def _label(facts: Mapping[str, Any]) -> str:
    name = facts.get("patch.product_name") or facts.get("patch.product_id") or "the service"
    version = facts.get("patch.version")
    return f"{name} {version}" if version else str(name)


def _evidence_note(facts: Mapping[str, Any]) -> str:
    data = facts.get("patch.data_version")
    if facts.get("patch.matched_by") == "version_endpoint":  # "GET /api/server/version: 4.4.0"
        read = f"{facts.get('patch.source_text')!s:.80}"
        return f"[version read from the product's version endpoint, {read}" + (f"; data {data}]" if data else "]")
    how = {"nmap_product": "nmap -sV", "cpe": "nmap CPE", "banner": "service banner"}.get(
        str(facts.get("patch.matched_by")), "fingerprint"
    )
    kind = "distribution banner" if facts.get("patch.evidence") == "distribution_banner" else "upstream banner"
    source = facts.get("patch.source_text")
    seen = f": {source!s:.80}" if source else ""
    return f"[{kind} via {how}{seen}" + (f"; data {data}]" if data else "]")


def _max_age(facts: Mapping[str, Any], params: Mapping[str, Any]) -> int:
    """The oldest knowledge the site accepts: the control's `max_age_days`, else the configured one, else 120."""
    for value in (params.get("max_age_days"), facts.get("versiondata.max_age_days")):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return DEFAULT_MAX_AGE_DAYS


def _knowledge_age(as_of: Any, today: dt.date) -> int | None:
    d = _date(as_of)
    return None if d is None else (today - d).days


DECLARE = "declare it under `software:` in the inventory (product and version; PAT-03 then judges it)"


def _not_visible(
    seen: str, facts: Mapping[str, Any], hint: str = DECLARE, lead: str = "the product or version is not visible"
) -> CheckResult:
    """Product or version not visible: could not assess, unless the system declares its software (PAT-03)."""
    declared = facts.get("patch.system_software")
    if isinstance(declared, list) and declared:
        names = ", ".join(str(d) for d in declared[:5]) + (", …" if len(declared) > 5 else "")
        return _na(f"{seen}; the system declares its software ({names}), which PAT-03 judges")
    return _error(f"{lead} ({seen}); {hint}")


def _identified(facts: Mapping[str, Any]) -> CheckResult | None:
    """The error/NA result when there is nothing (or not enough) to judge; None when judging can go on."""
    reason = facts.get("patch.unidentified_reason")
    if facts.get("service.version_probed") is False:
        return _not_visible("fragile system: no version probes are sent", facts)
    if facts.get("patch.product_id") is None:
        seen = str(reason or "nothing on this port names a product or version")
        if "not in hcscan's version data" in seen:
            hint = "declare it under `software:` in the inventory with the vendor's eol and latest (PAT-03 judges it)"
            return _not_visible(seen, facts, hint, "hcscan has no version data on this product")
        return _not_visible(seen, facts)
    if facts.get("patch.version") is None:
        declared = facts.get("patch.declared_package")
        if isinstance(declared, dict) and declared.get("version"):
            return _na(
                f"{_label(facts)} shows no version here; the declared {declared.get('product')} "
                f"{declared.get('version')} is judged by PAT-03"
            )
        return _not_visible(str(reason or f"{_label(facts)} recognised, but it shows no version"), facts)
    if facts.get("patch.cycle") is None:
        return _error(
            f"{reason or _label(facts) + ': its release cycle is not in the version data'}; update the version "
            "data (`hcscan data import`) or declare the software under `software:` with the vendor's eol and latest"
        )
    return None


def lifecycle(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    """PAT-01: the product's release cycle, and the distribution release when the banner names one, are supported."""
    early = _identified(facts)
    if early is not None:
        return early
    today = now.date()
    label, note = _label(facts), _evidence_note(facts)
    distro, release = facts.get("patch.distro"), facts.get("patch.distro_release")
    distro_ended = _ended(facts.get("patch.distro_eol"), today) if release else None
    if distro_ended:
        return CheckResult(
            False, (f"{distro} {release} ended security support on {facts.get('patch.distro_eol')} ({label}) {note}",)
        )
    cycle, eol = facts.get("patch.cycle"), facts.get("patch.cycle_eol")
    support = facts.get("patch.support")
    if _eol_unreadable(eol):
        return _error(f"{label}: the end-of-life date of cycle {cycle} is unreadable ({eol!r}) {note}")
    ended = _ended(eol, today)
    if support == "unknown" and not ended:
        declared = facts.get("patch.declared_package")
        if isinstance(declared, dict) and declared.get("eol") is not None:
            return _na(f"{label}: the system declares its end of life ({declared.get('eol')}), which PAT-03 judges")
        return _error(
            f"{label}: how long release line {cycle} is supported could not be checked (hcscan's data has no "
            f"support dates for {facts.get('patch.product_name')}); declare it under `software:` with the vendor's "
            f"eol {note}"
        )
    if support == "newest-line" and not ended and eol in (None, False):
        as_of, max_age = facts.get("patch.data_as_of"), _max_age(facts, params)
        age = _knowledge_age(as_of, today)
        if age is None or age > max_age:
            return _error(
                f"{label}: only the newest release line is supported, and {cycle} was the newest known on "
                f"{as_of or 'an unknown date'}"
                + (f" ({age} days ago; the site allows {max_age})" if age is not None else "")
                + f"; whether a newer line has replaced it is unknown — {UPDATE} {note}"
            )
    if ended:
        lead = (
            f"{label}: release line {cycle} ended on {eol}, when a newer line was released "
            f"({facts.get('patch.product_name')} maintains only its newest line)"
            if support == "newest-line"
            else f"{label}: release cycle {cycle} reached end of life on {eol}"
        )
        if facts.get("patch.evidence") != "distribution_banner":
            return CheckResult(False, (f"{lead} {note}",))
        if release and distro_ended is False:
            return CheckResult(
                True,
                (
                    f"{label}: upstream cycle {cycle} ended on {eol}, but {distro} {release} supports its package "
                    f"until {facts.get('patch.distro_eol')} {note}",
                ),
            )
        return _error(
            f"{label}: upstream cycle {cycle} ended on {eol}, but the {distro} package may still be supported; "
            f"the banner does not say which {distro} release this is — declare the operating system "
            f"(software: [{{product: {distro}, version: <release>}}]) {note}"
        )
    if _date(eol):
        until = f"supported until {eol}"
    elif support == "newest-line":
        until = f"is the newest release line known (as of {facts.get('patch.data_as_of')})"
    else:
        until = "no end of life announced" + (
            f" (data as of {facts.get('patch.data_as_of')})" if facts.get("patch.data_as_of") else ""
        )
    extra = f"; {distro} {release} supported until {facts.get('patch.distro_eol')}" if distro_ended is False else ""
    return CheckResult(True, (f"{label}: cycle {cycle} {until}{extra} {note}",))


def patch_level(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    """PAT-02: not behind the newest patch release of the cycle for more than `max_lag_days`."""
    early = _identified(facts)
    if early is not None:
        return early
    today, max_lag = now.date(), int(params["max_lag_days"])
    label, note = _label(facts), _evidence_note(facts)
    if facts.get("patch.evidence") == "distribution_banner":
        declared = facts.get("patch.declared_package")
        if not isinstance(declared, dict) or not declared.get("package_version"):
            return _error(DECLARE_PACKAGE % (facts.get("patch.product_id"), facts.get("patch.version")) + f" {note}")
        updated = _date(declared.get("updated"))
        if updated is None:
            return _error(
                f"{label}: package {declared.get('package_version')} is declared, but not when it was last "
                f"updated; add updated: <YYYY-MM-DD> to the declaration {note}"
            )
        age = (today - updated).days
        text = f"{label}: declared package {declared.get('package_version')} last updated {updated} ({age} days ago)"
        return CheckResult(age <= max_lag, (f"{text}; policy allows {max_lag} days {note}",))
    behind = facts.get("patch.behind_latest")
    latest, latest_date = facts.get("patch.cycle_latest"), _date(facts.get("patch.cycle_latest_date"))
    as_of, max_age = facts.get("patch.data_as_of"), _max_age(facts, params)
    knowledge_age = _knowledge_age(as_of, today)
    stale = knowledge_age is None or knowledge_age > max_age
    unknown_since = (
        f"the newest release of {facts.get('patch.product_name')} {facts.get('patch.cycle')} is unknown since "
        f"{as_of or 'an unknown date'}"
        + (f" ({knowledge_age} days; the site allows {max_age})" if knowledge_age is not None else "")
        + f"; {UPDATE}"
    )
    if behind is None:
        return _error(f"{label}: the newest release of cycle {facts.get('patch.cycle')} is not in the version data")
    fixes_kev = [str(c) for c in facts.get("patch.kev_fixed_by_latest") or []]
    window, why = max_lag, f"policy allows {max_lag} days"
    if fixes_kev:
        window = min(max_lag, int(params.get("kev_max_lag_days", 14)))
        why = f"it fixes known-exploited {', '.join(fixes_kev)}, so policy allows {window} days"
    if behind is False:
        if stale:
            return _error(f"{label} is at {latest}, the newest release known, but {unknown_since} {note}")
        return CheckResult(
            True, (f"{label} is at or above {latest}, the newest release of its cycle (data as of {as_of}) {note}",)
        )
    newest = f"{latest}" if latest else "the newest release of its cycle"
    if latest_date is None:
        return CheckResult(
            False, (f"{label} is behind {newest}, whose release date is not in the version data {note}",)
        )
    lag = (today - latest_date).days
    text = f"{label} is behind {newest}, released {latest_date} ({lag} days ago); {why}"
    if lag > window:  # already too long behind a release the data knows: newer knowledge cannot make it pass
        return CheckResult(False, (f"{text} {note}",))
    if stale:
        return _error(f"{text}, but {unknown_since} {note}")
    return CheckResult(True, (f"{text} {note}",))


def known_exploited(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    """PAT-05: no CISA KEV vulnerability affects the fingerprinted version (KEV joined to NVD version ranges)."""
    early = _identified(facts)
    if early is not None:
        return early
    hits = facts.get("patch.kev") or []
    label, note = _label(facts), _evidence_note(facts)
    if not hits:
        catalog, kev_as_of = facts.get("patch.kev_catalog"), facts.get("patch.kev_as_of")
        max_age = _max_age(facts, params)
        age = _knowledge_age(kev_as_of, now.date())
        if age is None:
            return _error(
                f"{label}: the version data holds no dated CISA KEV snapshot, so known exploitation cannot be "
                f"judged; {UPDATE} {note}"
            )
        snapshot = f"KEV catalogue {catalog or '?'} of {kev_as_of}, {age} days old"
        if age > max_age:
            return _error(
                f"{label}: no known-exploited CVE matches, but the {snapshot} is older than the site allows "
                f"({max_age} days); {UPDATE} {note}"
            )
        unverified = [u for u in facts.get("patch.kev_unverified") or [] if isinstance(u, dict)]
        if unverified:
            cves = ", ".join(str(u.get("cve")) for u in unverified[:8]) + (", …" if len(unverified) > 8 else "")
            return _error(
                f"{label}: CISA KEV lists {len(unverified)} known-exploited CVE(s) of "
                f"{facts.get('patch.product_name')} ({cves}) whose affected versions are not in hcscan's data; "
                f"check the vendor advisories or declare the installed release ({snapshot}) {note}"
            )
        return CheckResult(True, (f"{label}: no known-exploited CVE affects it ({snapshot}) {note}",))
    cves = ", ".join(str(h.get("cve")) for h in hits if isinstance(h, dict))
    if facts.get("patch.evidence") == "distribution_banner":
        return _error(
            f"{label} is in the affected range of known-exploited {cves}, but the distribution may have back-ported "
            f"the fix; " + DECLARE_PACKAGE % (facts.get("patch.product_id"), facts.get("patch.version")) + f" {note}"
        )
    return CheckResult(False, (f"{label} is affected by known-exploited (CISA KEV) {cves} {note}",))


def declared_software(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    """PAT-03: every `software:` entry of the system is supported and within the patch policy."""
    items = facts.get("software.declared")
    if not items:
        return _na("the system declares no software")
    today, max_lag, max_age = now.date(), int(params["max_lag_days"]), _max_age(facts, params)
    problems: list[str] = []
    unknown: list[str] = []
    good: list[str] = []
    on_endpoints: list[str] = []  # declared without a version: read from its version endpoint by PAT-01/02/05
    supported_os = [
        f"{i.get('product')} {i.get('version')} (until {i.get('cycle_eol')})"
        for i in items
        if isinstance(i, dict)
        and i.get("kind") == "os"
        and not i.get("unknown_reason")
        and _ended(i.get("cycle_eol"), today) is False
    ]
    for item in items:
        if not isinstance(item, dict):
            continue
        label = f"{item.get('product')} {item.get('version')}"
        if item.get("unknown_reason"):
            unknown.append(str(item["unknown_reason"]))
            continue
        if item.get("judged_on_endpoints"):
            on_endpoints.append(f"{item.get('product')} ({item.get('judged_on_endpoints')})")
            continue
        eol = item.get("cycle_eol")
        if _eol_unreadable(eol):
            unknown.append(f"{label}: end-of-life date unreadable ({eol!r})")
            continue
        package = item.get("package_version")
        if _ended(eol, today):
            if package and item.get("kind") != "os":  # a distribution package: its distribution's support counts
                if supported_os:
                    good.append(
                        f"{label}: upstream line ended on {eol}; package {package} is supported with {supported_os[0]}"
                    )
                else:
                    unknown.append(
                        f"{label}: upstream line ended on {eol}, but distribution package {package} may still be "
                        "supported; declare the operating system (software: [{product: <distribution>, version: "
                        "<release>}])"
                    )
                continue
            problems.append(f"{label} reached end of life on {eol}")
            continue
        from_data = str(item.get("lifecycle_source") or "").startswith("version data")
        if from_data and item.get("support") == "unknown":
            unknown.append(
                f"{label}: how long it is supported could not be checked (hcscan's data has no support dates for "
                "it); declare its eol and latest in the inventory"
            )
            continue
        behind, latest_date = item.get("behind_latest"), _date(item.get("cycle_latest_date"))
        knowledge_age = _knowledge_age(item.get("data_as_of"), today)
        if from_data and behind is False and (knowledge_age is None or knowledge_age > max_age):
            unknown.append(
                f"{label}: the newest release is unknown since {item.get('data_as_of')} ({knowledge_age} days; the "
                f"site allows {max_age}); {UPDATE}"
            )
            continue
        if behind is None:  # not knowing whether it is behind is not "patched"
            unknown.append(
                f"{label}: the version data cannot tell whether it is behind the newest release of its cycle"
            )
            continue
        if behind and latest_date is None:
            problems.append(f"{label} is behind {item.get('cycle_latest')}, whose release date is unknown")
            continue
        if behind and latest_date is not None and (today - latest_date).days > max_lag:
            problems.append(
                f"{label} is behind {item.get('cycle_latest')} (released {latest_date}, "
                f"{(today - latest_date).days} days ago; policy allows {max_lag})"
            )
            continue
        good.append(f"{label} ({item.get('lifecycle_source')})")
    if problems:
        return CheckResult(False, tuple(problems + [f"could not judge: {u}" for u in unknown]))
    if unknown:
        return _error(*unknown)
    read = (
        f"declared without a version, so PAT-01/02/05 judge the version its endpoints show: {', '.join(on_endpoints)}"
        if on_endpoints
        else ""
    )
    if not good:
        return _na(read or "the system declares no software")
    return CheckResult(True, (f"supported and patched: {', '.join(good)}" + (f"; {read}" if read else ""),))


def version_data_age(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    """PAT-06: the version data the PAT findings rest on is not older than the configured age."""
    generated = _date(facts.get("versiondata.generated"))
    max_age = facts.get("versiondata.max_age_days")
    if generated is None or not isinstance(max_age, int):
        return _error("the version data carries no date, or no maximum age is configured for it")
    today = now.date()
    age = (today - generated).days
    version = facts.get("versiondata.data_version")
    text = f"the version data{f' {version}' if version else ''} is from {generated} ({age} days old)"
    if age > max_age:
        return CheckResult(False, (f"{text}; maximum age is {max_age} days — {UPDATE}",))
    # What the system was judged on: each product's own knowledge and the KEV snapshot, not the file's date.
    products = facts.get("versiondata.products_as_of")
    stale: list[str] = []
    if isinstance(products, dict):
        for pid, as_of in sorted(products.items(), key=lambda kv: str(kv[1])):
            days = _knowledge_age(as_of, today)
            if days is None or days > max_age:
                stale.append(f"{pid} as of {as_of}" + (f" ({days} days)" if days is not None else ""))
    kev_as_of = facts.get("versiondata.kev_as_of")
    kev_days = _knowledge_age(kev_as_of, today)
    if kev_days is None:
        stale.append("CISA KEV: no dated snapshot")
    elif kev_days > max_age:
        stale.append(
            f"CISA KEV catalogue {facts.get('versiondata.kev_catalog') or '?'} of {kev_as_of} ({kev_days} days)"
        )
    if stale:
        return CheckResult(
            False,
            (
                f"this system was judged on knowledge older than {max_age} days: {'; '.join(stale)} "
                f"(file {generated}) — {UPDATE}",
            ),
        )
    judged = (
        ", ".join(f"{pid} {as_of}" for pid, as_of in (products or {}).items()) if isinstance(products, dict) else ""
    )
    return CheckResult(
        True,
        (
            f"{text}; the knowledge this system was judged on is within {max_age} days"
            + (f" ({judged}; KEV {kev_as_of})" if judged else f" (KEV {kev_as_of})"),
        ),
    )


PATCHING_CHECK_TYPES: dict[str, CheckType] = {
    "lifecycle": CheckType(
        "lifecycle",
        "service",
        _PATCH_FACTS,
        {"max_age_days": None},
        lifecycle,
        "Product cycle and distribution release not end-of-life.",
    ),
    "patch_level": CheckType(
        "patch_level",
        "service",
        _PATCH_FACTS | {"patch.kev_fixed_by_latest"},
        {"max_lag_days": 30, "kev_max_lag_days": 14, "max_age_days": None},
        patch_level,
        "Not behind the cycle's newest patch release for longer than max_lag_days.",
    ),
    "known_exploited": CheckType(
        "known_exploited",
        "service",
        _PATCH_FACTS | {"patch.kev", "patch.kev_unverified", "patch.kev_catalog", "patch.kev_as_of"},
        {"max_age_days": None},
        known_exploited,
        "No CISA KEV CVE affects the fingerprinted version.",
    ),
    "declared_software": CheckType(
        "declared_software",
        "service",
        frozenset({"software.declared", "versiondata.data_version", "versiondata.max_age_days"}),
        {"max_lag_days": 30, "max_age_days": None},
        declared_software,
        "Declared software is supported and within the patch policy.",
    ),
    "version_data_age": CheckType(
        "version_data_age",
        "service",
        frozenset(
            {
                "versiondata.generated",
                "versiondata.data_version",
                "versiondata.max_age_days",
                "versiondata.products_as_of",
                "versiondata.kev_as_of",
                "versiondata.kev_catalog",
            }
        ),
        {},
        version_data_age,
        "The version data is not older than the configured maximum age.",
    ),
}
