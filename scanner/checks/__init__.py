"""Checks: pure judgement of facts. Nothing in this package does I/O or imports probes, store or CLI."""
