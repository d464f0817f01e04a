"""Probes: all network I/O of hcscan lives in this package. Each probe returns facts or a ProbeError."""
