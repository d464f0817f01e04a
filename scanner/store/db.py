"""Opening the store: engine with the right SQLite pragmas, and migrations to the newest schema."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from scanner.errors import InputError
from scanner.fileio import DiskFull, create_private_file, disk_full_reason, make_dirs

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_KEY = 0x68637363616E  # 'hcscan': one migration at a time on a shared PostgreSQL


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _create_private(database: Path) -> None:
    """A new SQLite store is created 0600 before SQLite opens it (SQLite gives its -wal and -shm files the mode of
    the database file), in a directory only its owner may enter when hcscan creates that too. An existing store
    keeps its mode: hcscan never loosens it."""
    make_dirs(database.parent, 0o700)
    with contextlib.suppress(OSError):  # e.g. a read-only directory: SQLite's own open says so, naming the store
        create_private_file(database)


def make_engine(url: str) -> Engine:
    """An engine for the store URL. SQLite gets WAL, busy timeout, NORMAL sync and foreign keys on every connection."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            _create_private(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]*)?=\s*(.+)$", re.MULTILINE)


def known_heads() -> set[str]:
    """Revisions no other revision builds on, read from the migration files (without importing Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        for down, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            ids = set(re.findall(r"[\"']([^\"']+)[\"']", value))
            (parents if down else revisions).update(ids)
    return revisions - parents


def schema_is_current(engine: Engine) -> bool:
    """True when the store already stands at every head: then opening it needs no Alembic at all."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        applied = {row[0] for row in connection.exec_driver_sql("SELECT version_num FROM alembic_version")}
    return applied == known_heads()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    # Imported here: Alembic costs ~0.13 s of start-up and is only needed when the schema is behind.
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Agents starting together must not race to create the same tables; held until commit.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "heads")


def open_store(url: str) -> Engine:
    """Open (and if needed migrate) the store; a bad or unreachable store_url is the user's error (exit 2), a full
    disk is DiskFull (exit 3)."""
    try:
        engine = make_engine(url)
        if not schema_is_current(engine):
            migrate(engine)
    except (ArgumentError, OperationalError, InterfaceError) as exc:
        shown = make_url(url).render_as_string(hide_password=True) if "://" in url else url
        full = disk_full_reason(exc)
        if full is not None:  # not the user's input: the command could not complete (the CLI's exit 3)
            raise DiskFull(f"cannot open the store at {shown}: {full} (free space there, then run again)") from None
        raise InputError.single(
            f"cannot open the store at {shown}: {str(exc.orig if hasattr(exc, 'orig') and exc.orig else exc)[:300]}",
            hint="check store_url in config.yaml (and that the database server is up and reachable)",
        ) from None
    return engine


def keep_room_to_end_run(engine: Engine) -> None:
    """SQLite: copy the write-ahead log into the database now, so the next write starts the log from its beginning
    and reuses space the file already holds. A run that then meets a full disk can still be marked `interrupted`
    (one small UPDATE fits where the run's start was written). PASSIVE waits for nobody; a checkpoint that cannot
    finish (a reader, a full disk) is harmless. Nothing to do on PostgreSQL.
    """
    if engine.dialect.name != "sqlite":
        return
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
    except OperationalError:
        pass
