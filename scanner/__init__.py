"""hcscan: a compliance scanner for health-sector IT."""

__version__ = "0.1.0"
