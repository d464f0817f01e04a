"""Shared vocabulary of the domain: enums for statuses, severities, criticality and endpoint protocols."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What a finding says about one control on one endpoint."""

    PASS = "pass"  # assessed and compliant
    FAIL = "fail"  # assessed and not compliant
    ERROR = "error"  # could not assess: counts against compliance, never as a pass
    NOT_APPLICABLE = "not_applicable"  # the control does not apply here (e.g. fragile system, `when` false)
    WAIVED = "waived"  # a fail covered by an unexpired, approved waiver


class Severity(StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class Criticality(StrEnum):
    """Clinical criticality of a system: how much patient care depends on it."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class EndpointProtocol(StrEnum):
    """What an endpoint speaks. The `-tls` variants and https/ldaps/fhir carry TLS."""

    HTTPS = "https"
    HTTP = "http"
    TLS = "tls"
    FHIR = "fhir"  # FHIR REST API over HTTPS
    SSH = "ssh"
    DICOM = "dicom"
    DICOM_TLS = "dicom-tls"
    MLLP = "mllp"
    MLLP_TLS = "mllp-tls"
    SYSLOG = "syslog"
    SYSLOG_TLS = "syslog-tls"
    LDAP = "ldap"
    LDAPS = "ldaps"
    NTP = "ntp"  # NTP/SNTP over UDP (clock synchronisation, LOG-05-NTP)
    OTHER = "other"


SEVERITY_WEIGHT: dict[Severity, int] = {
    Severity.CRITICAL: 10,
    Severity.HIGH: 5,
    Severity.MEDIUM: 2,
    Severity.LOW: 1,
}
CRITICALITY_WEIGHT: dict[Criticality, int] = {
    Criticality.CRITICAL: 4,
    Criticality.HIGH: 3,
    Criticality.MEDIUM: 2,
    Criticality.LOW: 1,
}
