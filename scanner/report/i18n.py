"""Report labels in English and Danish (`report.language: en | da`). Target data is never translated."""

from __future__ import annotations

from collections.abc import Callable

LABELS: dict[str, dict[str, str]] = {
    "report_title": {"en": "security compliance", "da": "informationssikkerhed — compliance"},
    "overview_title": {
        "en": "Health-sector security compliance — overview",
        "da": "Sundhedsvæsenets informationssikkerhed — overblik",
    },
    "generated": {"en": "Generated", "da": "Dannet"},
    "by": {"en": "by", "da": "af"},
    "scope": {"en": "Scope", "da": "Omfang"},
    "systems": {"en": "systems", "da": "systemer"},
    "endpoints": {"en": "endpoints", "da": "endepunkter"},
    "latest_scan": {"en": "Latest scan", "da": "Seneste scanning"},
    "no_scans": {"en": "no scans", "da": "ingen scanninger"},
    "freshness": {"en": "Data freshness", "da": "Datas aktualitet"},
    "version_data": {"en": "version data", "da": "versionsdata"},
    "score": {"en": "Compliance score", "da": "Compliance-score"},
    "weighted": {"en": "weighted", "da": "vægtet"},
    "pass": {"en": "passed", "da": "bestået"},
    "fail": {"en": "failed", "da": "ikke bestået"},
    "error": {"en": "could not assess", "da": "kunne ikke vurderes"},
    "waived": {"en": "waived", "da": "dispenseret"},
    "not_applicable": {"en": "not applicable", "da": "ikke relevant"},
    "trend": {"en": "Score over the last scans", "da": "Score over de seneste scanninger"},
    "trend_one": {
        "en": "Only one scan so far: the trend appears from the second scan.",
        "da": "Kun én scanning indtil nu: udviklingen vises fra anden scanning.",
    },
    "overdue": {"en": "Overdue remediation", "da": "Overskredne udbedringsfrister"},
    "overdue_none": {"en": "No finding is past its remediation deadline.", "da": "Ingen fund har overskredet fristen."},
    "sla_rule": {"en": "Deadlines from first seen", "da": "Frister fra første fund"},
    "days": {"en": "days", "da": "dage"},
    "due": {"en": "Due", "da": "Frist"},
    "days_over": {"en": "Days over", "da": "Dage over"},
    "changed": {"en": "What changed since the previous scan", "da": "Ændringer siden forrige scanning"},
    "new_failures": {"en": "New failures", "da": "Nye fejl"},
    "regressions": {"en": "Regressions (failing again)", "da": "Tilbagefald (fejler igen)"},
    "resolved": {"en": "Resolved", "da": "Løst"},
    "reactivated": {"en": "Waiver expired — counts again", "da": "Dispensation udløbet — tæller igen"},
    "nothing_changed": {"en": "Nothing changed.", "da": "Intet ændret."},
    "by_family": {"en": "By family", "da": "Pr. område"},
    "family": {"en": "Family", "da": "Område"},
    "lenses": {"en": "Framework lenses", "da": "Rammeværk"},
    "requirement": {"en": "Requirement", "da": "Krav"},
    "controls": {"en": "Controls", "da": "Kontroller"},
    "worst_systems": {"en": "Worst systems", "da": "Dårligste systemer"},
    "most_failed": {"en": "Most-failed controls", "da": "Oftest fejlede kontroller"},
    "system": {"en": "System", "da": "System"},
    "control": {"en": "Control", "da": "Kontrol"},
    "severity": {"en": "Severity", "da": "Alvor"},
    "criticality": {"en": "criticality", "da": "kritikalitet"},
    "owner": {"en": "Owner", "da": "Ejer"},
    "endpoint": {"en": "Endpoint", "da": "Endepunkt"},
    "finding": {"en": "Finding", "da": "Fund"},
    "status": {"en": "Status", "da": "Status"},
    "first_seen": {"en": "First seen", "da": "Først set"},
    "certificates": {"en": "Certificates expiring", "da": "Certifikater der udløber"},
    "expired": {"en": "expired", "da": "udløbet"},
    "within": {"en": "within", "da": "inden for"},
    "subject": {"en": "Subject", "da": "Subjekt"},
    "not_after": {"en": "Valid until", "da": "Gyldigt til"},
    "days_left": {"en": "Days left", "da": "Dage tilbage"},
    "none": {"en": "None.", "da": "Ingen."},
    "eol": {"en": "End-of-life software", "da": "Software uden support (end of life)"},
    "availability": {"en": "Availability", "da": "Tilgængelighed"},
    "measured": {"en": "Measured", "da": "Målt"},
    "target": {"en": "Target", "da": "Mål"},
    "outages": {"en": "Outages", "da": "Nedbrud"},
    "longest": {"en": "Longest", "da": "Længste"},
    "stale_logs": {
        "en": "Systems whose access logs are stale or missing",
        "da": "Systemer med forældede eller manglende adgangslogge",
    },
    "waivers": {"en": "Waivers", "da": "Dispensationer"},
    "active": {"en": "Active", "da": "Aktive"},
    "expired_waivers": {"en": "Expired (the finding counts again)", "da": "Udløbne (fundet tæller igen)"},
    "reason": {"en": "Reason", "da": "Begrundelse"},
    "approved_by": {"en": "Approved by", "da": "Godkendt af"},
    "expires": {"en": "Expires", "da": "Udløber"},
    "compensating": {"en": "Compensating control", "da": "Kompenserende kontrol"},
    "no_waivers": {"en": "No waivers.", "da": "Ingen dispensationer."},
    "cna": {"en": "Could not assess", "da": "Kunne ikke vurderes"},
    "cna_note": {
        "en": "These checks could not run; they count against the score until they can.",
        "da": "Disse kontroller kunne ikke udføres; de tæller imod scoren, indtil de kan.",
    },
    "all_assessed": {"en": "Everything in scope was assessed.", "da": "Alt i omfanget blev vurderet."},
    "drilldown": {"en": "Systems", "da": "Systemer"},
    "evidence": {"en": "evidence and remediation", "da": "evidens og udbedring"},
    "remediation": {"en": "Remediation", "da": "Udbedring"},
    "passing_controls": {"en": "controls pass", "da": "kontroller bestået"},
    "last_verified": {"en": "Last verified", "da": "Sidst verificeret"},
    "provenance": {"en": "What this report was judged by", "da": "Grundlag for rapporten"},
    "run": {"en": "Run", "da": "Kørsel"},
    "started": {"en": "Started", "da": "Startet"},
    "catalogue": {"en": "Control catalogue", "da": "Kontrolkatalog"},
    "inventory": {"en": "Inventory", "da": "Inventar"},
    "regions": {"en": "Regions", "da": "Regioner"},
    "region": {"en": "Region", "da": "Region"},
    "crit_high_open": {"en": "Critical / high open", "da": "Kritiske / høje åbne"},
    "not_assessed_systems": {"en": "Systems not fully assessed", "da": "Systemer ikke fuldt vurderet"},
    "waivers_expiring": {"en": "Waivers expiring ≤ 30 d", "da": "Dispensationer der udløber ≤ 30 d"},
    "no_findings": {"en": "No findings in the store yet: run hcscan scan.", "da": "Ingen fund endnu: kør hcscan scan."},
    "national": {"en": "National", "da": "Nationalt"},
    "contents": {"en": "Contents", "da": "Indhold"},
    "demo_history": {"en": "Includes demo history", "da": "Indeholder demo-historik"},
}


def translator(language: str) -> Callable[[str], str]:
    """A label lookup for one language; an unknown key shows itself (a test catches it, a reader still reads)."""

    def t(key: str) -> str:
        entry = LABELS.get(key)
        if entry is None:
            return key
        return entry.get(language) or entry["en"]

    return t
