"""The `exposure:` section of config.yaml: the port sweep of declared hosts and the version data to judge by."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from scanner.strictmodel import StrictModel

# Usual admin, file-sharing, database, remote-desktop and health-protocol ports (DICOM 104/2762/11112, MLLP 2575).
DEFAULT_SWEEP_PORTS: tuple[int, ...] = (
    21, 22, 23, 25, 80, 104, 111, 135, 139, 443, 445, 1433, 1521, 2575, 2762, 3306, 3389,
    5432, 5900, 5985, 5986, 6514, 8080, 8443, 11112,
)  # fmt: skip


class _Strict(StrictModel):
    """Unknown keys are errors, values are immutable, numbers are numbers."""


class VersionDataConfig(_Strict):
    path: Path | None = Field(
        None,
        description="Version-data file written by `hcscan data import`; default: the data shipped with hcscan.",
    )
    max_age_days: int = Field(120, ge=1, le=3650, description="Older version data raises its own finding (PAT-06).")


class ExposureConfig(_Strict):
    sweep_ports: list[int] = Field(
        default_factory=lambda: list(DEFAULT_SWEEP_PORTS),
        description="Ports swept on every declared host (never on fragile systems) to find undeclared services.",
    )
    version_intensity: int = Field(7, ge=0, le=9, description="nmap --version-intensity for the service probe.")
    version_data: VersionDataConfig = Field(default_factory=VersionDataConfig)

    @field_validator("sweep_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        bad = [p for p in value if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"not TCP port numbers: {bad}")
        return sorted(set(value))
