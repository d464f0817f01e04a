"""Version knowledge shipped with hcscan: release cycles, end-of-life dates, known-exploited CVEs."""

from scanner.versiondata.model import VersionData, load_version_data, packaged_data_path

__all__ = ["VersionData", "load_version_data", "packaged_data_path"]
