"""`hcscan data import`: refresh the version data from files the user downloaded (no network at runtime).

Inputs: endoflife.date API exports (one JSON per product, v0 list or v1 `{"result": {"releases": [...]}}`),
the CISA KEV catalogue JSON, and NVD CVE JSON 2.0 feeds. KEV lists no versions, so each KEV CVE is joined to
its NVD `cpeMatch` ranges and kept only where a vulnerable CPE names a product of the data. The result is
validated by loading it, then moved into place atomically.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scanner.errors import InputError
from scanner.textsafe import clean_text
from scanner.versiondata.model import Cycle, KevEntry, Product, VersionData, VersionRange, load_version_data
from scanner.yamlio import dump_yaml

# endoflife.date product slugs whose hcscan id differs.
SLUG_ALIASES: Mapping[str, str] = {
    "apache": "apache-httpd",
    "apache-http-server": "apache-httpd",
    "httpd": "apache-httpd",
    "mssqlserver": "mssql",
    "microsoft-sql-server": "mssql",
    "windows-server": "windows-server",
    "node": "nodejs",
    "postgres": "postgresql",
    # Java: the shipped openjdk cycles follow the Eclipse Temurin builds (other vendors' exports have other dates).
    "eclipse-temurin": "openjdk",
    "temurin": "openjdk",
}

# The endoflife.date product each data product is refreshed from by `hcscan data update` (API v1 slug; the names of
# endoflife.date's products/*.md). A product not listed keeps its cycles as they are: it is not on endoflife.date
# (OpenSSH and Samba were removed from it; Mirth Connect, DICOM servers, NetScaler, Ivanti, Cisco ASA never were)
# or not in the same shape (IIS versions follow Windows Server releases). Add a product when endoflife.date has it.
ENDOFLIFE_SLUGS: Mapping[str, str] = {
    "openssl": "openssl",
    "nginx": "nginx",
    "apache-httpd": "apache-http-server",
    "tomcat": "tomcat",
    "postgresql": "postgresql",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "mssqlserver",
    "windows-server": "windows-server",
    "ubuntu": "ubuntu",
    "debian": "debian",
    "rhel": "rhel",
    "php": "php",
    "nodejs": "nodejs",
    "openjdk": "eclipse-temurin",
    "exchange": "msexchange",
    "fortios": "fortios",
    "pan-os": "pan-os",
    "vmware-esxi": "vmware-esxi",
    "vmware-vcenter": "vmware-vcenter",
}
# Products whose `eol` in the data is endoflife.date's end of *extended* support (v1 eoesFrom/isEoes, v0
# extendedSupport) where a release states one: Debian's is the end of Debian LTS.
ENDOFLIFE_EXTENDED_EOL: frozenset[str] = frozenset({"debian"})
# Products whose endoflife.date `latest` is not a patch level and is not taken (Windows Server: the release's base
# build, 10.0.26100, which every patched build is "at or above").
ENDOFLIFE_NO_LATEST: frozenset[str] = frozenset({"windows-server"})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError.single("file not found", file=path) from None
    except RecursionError:
        raise InputError.single("not valid JSON: nested too deeply", file=path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputError.single(f"not valid JSON: {exc}", file=path, line=line) from None


def _date_or_bool(value: Any) -> dt.date | bool | None:
    if isinstance(value, bool) or value is None:
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _day(value: Any) -> dt.date | None:
    d = _date_or_bool(value)
    return d if isinstance(d, dt.date) else None


def cycles_from_endoflife(doc: Any, file: Path, product_id: str | None = None) -> list[Cycle]:
    """Cycles from an endoflife.date export (API v0 list of cycles, or API v1 product document).

    `product_id` picks the end of support the data means (ENDOFLIFE_EXTENDED_EOL) and drops a `latest` that is not a
    patch level (ENDOFLIFE_NO_LATEST)."""
    extended = product_id in ENDOFLIFE_EXTENDED_EOL
    no_latest = product_id in ENDOFLIFE_NO_LATEST
    if isinstance(doc, dict) and isinstance(doc.get("result"), dict):
        rows = doc["result"].get("releases") or []
        out = []
        for r in rows:
            latest = {} if no_latest else (r.get("latest") or {})
            end, flag = ("eoesFrom", "isEoes") if extended and r.get("isEoes") is not None else ("eolFrom", "isEol")
            eol = r.get(end) or (True if r.get(flag) else False if r.get(flag) is False else None)
            out.append(
                Cycle(
                    cycle=str(r["name"]),
                    released=_day(r.get("releaseDate")),
                    eol=_date_or_bool(eol),
                    latest=str(latest["name"]) if latest.get("name") else None,
                    latest_date=_day(latest.get("date")),
                )
            )
        return out
    if isinstance(doc, list):
        out = []
        for r in doc:
            if not isinstance(r, dict) or "cycle" not in r:
                raise InputError.single("endoflife.date export: every entry needs a 'cycle'", file=file)
            eol = r["extendedSupport"] if extended and r.get("extendedSupport") is not None else r.get("eol")
            out.append(
                Cycle(
                    cycle=str(r["cycle"]),
                    released=_day(r.get("releaseDate")),
                    eol=_date_or_bool(eol),  # false: no end announced (it replaces an older date)
                    latest=str(r["latest"]) if r.get("latest") and not no_latest else None,
                    latest_date=None if no_latest else _day(r.get("latestReleaseDate")),
                )
            )
        return out
    raise InputError.single("not an endoflife.date product export (expected a list or {result: ...})", file=file)


_UPDATED_FIELDS = ("released", "eol", "latest", "latest_date")


def merge_cycles(base: list[dict[str, Any]], imported: Sequence[Cycle], file: Path) -> tuple[list[dict[str, Any]], str]:
    """Lay an export's cycles over the product's cycles; return them and what happened ("cycles: 3 updated, …").

    An exported cycle updates the cycle of that name, or the one cycle that has it as an alias (endoflife.date
    names SQL Server cycles "2022" where the data says "16.0"); the cycle keeps its name and aliases (codenames,
    build numbers) and takes every date, end of life (also "none announced") and latest release the export states.
    Exported cycles the data lacks are added; cycles the export does not list are kept as they were. The order
    follows the export, with kept cycles where they stood among their neighbours.
    """
    out = [dict(c) for c in base]

    def names(c: dict[str, Any]) -> set[str]:
        return {str(c["cycle"]).lower()} | {str(a).lower() for a in c.get("aliases", [])}

    seen: set[str] = set()
    placed: list[tuple[int | None, dict[str, Any]]] = []  # export order: (index in base or None for new, cycle)
    for cycle in imported:
        key = cycle.cycle.lower()
        if key in seen:
            raise InputError.single(f"the export lists cycle '{cycle.cycle}' twice", file=file)
        seen.add(key)
        exact = [i for i, c in enumerate(out) if str(c["cycle"]).lower() == key]
        matches = exact or [i for i, c in enumerate(out) if key in names(c)]
        if len(matches) > 1:
            shown = ", ".join(str(out[i]["cycle"]) for i in matches)
            raise InputError.single(
                f"cycle '{cycle.cycle}' of the export matches several cycles of the data by alias ({shown})",
                file=file,
                hint="remove the ambiguous alias from the version data, or leave that cycle out of the export",
            )
        if not matches:
            placed.append((None, cycle.model_dump(mode="json", exclude_defaults=True)))
            continue
        if any(i == matches[0] for i, _ in placed):
            raise InputError.single(
                f"the export lists cycle '{out[matches[0]]['cycle']}' twice (as '{cycle.cycle}')", file=file
            )
        stated = cycle.model_dump(mode="json", include=set(_UPDATED_FIELDS), exclude_none=True)
        out[matches[0]].update(stated)
        placed.append((matches[0], out[matches[0]]))
    updated = {i for i, _ in placed if i is not None}
    merged: list[dict[str, Any]] = []
    next_kept = 0
    for index, row in placed:
        if index is not None:  # first the kept cycles that stood before this one
            merged.extend(out[k] for k in range(next_kept, index) if k not in updated)
            next_kept = max(next_kept, index + 1)
        merged.append(row)
    merged.extend(out[k] for k in range(next_kept, len(out)) if k not in updated)
    added = len(placed) - len(updated)
    return merged, f"cycles: {len(updated)} updated, {added} added, {len(out) - len(updated)} kept"


def _cpe23_key(criteria: str) -> tuple[str, str, str, str] | None:
    """cpe:2.3:a:vendor:product:version:… → (part, vendor, product, version)."""
    parts = criteria.split(":")
    if len(parts) < 6 or parts[0] != "cpe" or parts[1] != "2.3":
        return None
    return parts[2], parts[3], parts[4], parts[5]


def _cpe22_key(prefix: str) -> tuple[str, str, str] | None:
    parts = prefix.split(":")
    if len(parts) < 4 or parts[0] != "cpe" or not parts[1].startswith("/"):
        return None
    return parts[1][1:], parts[2], parts[3]


NVD_CHECKED = "NVD CVE API 2.0 configurations (cpeMatch)"  # `checked` of KEV entries whose ranges NVD gave


def kev_entries(kev: Any, nvd_docs: Sequence[Any], products: Iterable[Product], kev_file: Path) -> list[KevEntry]:
    """Join KEV CVE ids to NVD cpeMatch ranges of products in the data."""
    if not isinstance(kev, dict) or not isinstance(kev.get("vulnerabilities"), list):
        raise InputError.single("not a CISA KEV catalogue (no 'vulnerabilities' list)", file=kev_file)
    known = {str(v.get("cveID")): v for v in kev["vulnerabilities"] if isinstance(v, dict)}
    by_cpe: dict[tuple[str, str, str], str] = {}
    for p in products:
        for prefix in p.cpe:
            prefix_key = _cpe22_key(prefix)
            if prefix_key is not None:
                by_cpe[prefix_key] = p.id
    found: dict[tuple[str, str], list[VersionRange]] = {}
    for doc in nvd_docs:
        for item in doc.get("vulnerabilities", []) if isinstance(doc, dict) else []:
            cve = item.get("cve", {}) if isinstance(item, dict) else {}
            cve_id = str(cve.get("id", ""))
            if cve_id not in known:
                continue
            for config in cve.get("configurations", []) or []:
                for node in config.get("nodes", []) or []:
                    for match in node.get("cpeMatch", []) or []:
                        if not match.get("vulnerable"):
                            continue
                        key = _cpe23_key(str(match.get("criteria", "")))
                        if key is None or key[:3] not in by_cpe:
                            continue
                        version = key[3]
                        r = VersionRange(
                            exact=version if version not in ("*", "-", "") else None,
                            start_including=match.get("versionStartIncluding"),
                            start_excluding=match.get("versionStartExcluding"),
                            end_including=match.get("versionEndIncluding"),
                            end_excluding=match.get("versionEndExcluding"),
                        )
                        if r.exact is None and not any(
                            (r.start_including, r.start_excluding, r.end_including, r.end_excluding)
                        ):
                            continue  # "every version": too broad to judge a version by
                        found.setdefault((cve_id, by_cpe[key[:3]]), []).append(r)
    entries = []
    for (cve_id, product), ranges in sorted(found.items()):
        k = known[cve_id]
        entries.append(
            KevEntry(
                cve=cve_id,
                product=product,
                name=clean_text(str(k.get("vulnerabilityName", ""))[:200]),  # shown in findings and reports
                date_added=_day(k.get("dateAdded")),
                versions=ranges,
                checked=NVD_CHECKED,
            )
        )
    return entries


def apply_endoflife(
    data: dict[str, Any],
    pid: str,
    cycles: Sequence[Cycle],
    *,
    file: Path,
    source_id: str,
    label: str,
    today: dt.date,
    as_of: dt.date | None = None,
) -> str:
    """Lay one product's endoflife.date cycles over `data` (a dumped VersionDataFile); record the source.

    The product's `as_of` becomes `as_of` (the day the source was current to, when it says), else the newest date
    the export states. Returns what happened to the cycles."""
    product = next((p for p in data["products"] if p["id"] == pid), None)
    if product is None:
        raise InputError.single(f"no product '{pid}' in the version data for this export", file=file)
    if not cycles:
        raise InputError.single("the export lists no release cycles", file=file)
    product["cycles"], merged = merge_cycles(product["cycles"], cycles, file)
    product["source"] = source_id
    dates = [d for c in cycles for d in (c.latest_date, c.released) if d is not None]
    newest = max(dates, default=None)
    product["as_of"] = (as_of or newest or today).isoformat()
    data["sources"] = [s for s in data["sources"] if s["id"] != source_id] + [
        {"id": source_id, "url": f"{label} ({merged})", "retrieved": today.isoformat()}
    ]
    return merged


def checked_by_hand(entry: Mapping[str, Any]) -> bool:
    """A KEV entry whose ranges someone checked against the vendor's advisory (not taken from NVD)."""
    return bool(entry.get("checked")) and entry.get("checked") != NVD_CHECKED


def merge_kev(
    previous: Sequence[Mapping[str, Any]], joined: Sequence[KevEntry], listed: set[str]
) -> list[dict[str, Any]]:
    """The KEV entries after a refresh, by (CVE, product); an entry whose CVE left the catalogue is dropped.

    An earlier entry checked against a vendor advisory (`checked` is not NVD) is kept as it is; one whose ranges
    were unknown (`unverified`) is kept unless NVD now gives ranges; one taken from NVD before is replaced by what
    NVD says now (and dropped if NVD no longer names a range for the product). New joined entries are added."""
    fresh = {(k.cve, k.product): k.model_dump(mode="json", exclude_none=True, exclude_defaults=True) for k in joined}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for k in previous:
        key = (str(k["cve"]), str(k["product"]))
        if key[0] not in listed:
            continue
        if checked_by_hand(k) or (k.get("unverified") and key not in fresh):
            out[key] = dict(k)
    for key, entry in fresh.items():
        out.setdefault(key, entry)
    return [out[key] for key in sorted(out)]


def apply_kev(
    data: dict[str, Any],
    kev: Any,
    nvd_docs: Sequence[Any],
    *,
    kev_file: Path,
    kev_label: str,
    nvd_label: str,
    today: dt.date,
) -> None:
    """Join the KEV catalogue to NVD ranges of the data's products and merge the entries into `data`."""
    loaded = [Product.model_validate(p) for p in data["products"]]
    joined = kev_entries(kev, nvd_docs, loaded, kev_file)
    listed = {str(v.get("cveID")) for v in kev["vulnerabilities"] if isinstance(v, dict)}
    data["kev"] = merge_kev(data.get("kev", []), joined, listed)
    released = _day(kev.get("dateReleased"))  # the catalogue's own date: how current the KEV knowledge is
    data["kev_snapshot"] = (
        {
            "catalog_version": str(kev.get("catalogVersion") or released),
            "date_released": released.isoformat(),
            "source": "cisa-kev",
            "count": len(kev["vulnerabilities"]),
        }
        if released is not None
        else None  # an export without its date: PAT-05 then cannot tell the age, and says so
    )
    data["sources"] = [s for s in data["sources"] if s["id"] not in ("cisa-kev", "nvd")] + [
        {"id": "cisa-kev", "url": kev_label, "retrieved": today.isoformat()},
        {"id": "nvd", "url": nvd_label, "retrieved": today.isoformat()},
    ]


def render_version_data(data: dict[str, Any], today: dt.date, writer: str) -> str:
    """Stamp `data` with today's date and version and render it as the YAML file's text."""
    data["generated"] = today.isoformat()
    data["data_version"] = today.strftime("%Y.%m.%d")
    return f"# hcscan version data, written by `{writer}`.\n" + dump_yaml(data)


def write_version_data(text: str, out: Path) -> VersionData:
    """Write `text` to `out` atomically; a text that does not load as version data never replaces a good file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".versions-", suffix=".yaml", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        result = load_version_data(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return VersionData(result.file, out)


def import_data(
    base: VersionData,
    out: Path,
    *,
    endoflife: Sequence[Path] = (),
    kev: Path | None = None,
    nvd: Sequence[Path] = (),
    today: dt.date | None = None,
) -> VersionData:
    """Merge the given exports into `base` and write `out` atomically; return the loaded result."""
    today = today or dt.datetime.now(dt.UTC).date()
    data = base.file.model_dump(mode="json")
    products = {p["id"] for p in data["products"]}
    for file in endoflife:
        slug = file.stem
        pid = SLUG_ALIASES.get(slug, slug)
        if pid not in products:
            raise InputError.single(
                f"no product '{pid}' in the version data for this export",
                file=file,
                hint="name the file after the product id (`hcscan data info` lists them)",
            )
        cycles = cycles_from_endoflife(_read_json(file), file, pid)
        apply_endoflife(
            data,
            pid,
            cycles,
            file=file,
            source_id=f"import-{pid}",
            label=f"endoflife.date export {file.name}",
            today=today,
        )
    if kev is not None:
        apply_kev(
            data,
            _read_json(kev),
            [_read_json(f) for f in nvd],
            kev_file=kev,
            kev_label=f"CISA KEV export {kev.name}",
            nvd_label="NVD CVE 2.0 feeds " + ", ".join(f.name for f in nvd),
            today=today,
        )
    elif nvd:
        raise InputError.single("NVD feeds are only used to place KEV entries: give --kev too")
    return write_version_data(render_version_data(data, today, "hcscan data import"), out)
