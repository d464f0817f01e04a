"""`python -m scanner` is the `hcscan` command."""

from scanner.cli import entry

entry()
