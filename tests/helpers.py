"""Small helpers shared by tests: build a throwaway workspace (config + inventory) on disk."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class _NoAliases(yaml.SafeDumper):
    """hcscan refuses YAML anchors/aliases, so test files are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_NoAliases, sort_keys=False), encoding="utf-8")
    return path


def system(
    sid: str, host: str, port: int, protocol: str = "https", server_name: str | None = None, **extra: Any
) -> dict[str, Any]:
    ep: dict[str, Any] = {"id": "ep", "host": host, "port": port, "protocol": protocol}
    if server_name:
        ep["server_name"] = server_name
    return {
        "id": sid,
        "name": f"System {sid}",
        "owner": "Test team",
        "criticality": extra.pop("criticality", "high"),
        "endpoints": [ep],
        **extra,
    }


def make_workspace(
    root: Path,
    systems: list[dict[str, Any]],
    *,
    region: str = "testregion",
    ca_bundles: list[str] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write config.yaml + inventory/<region>.yaml under root; return the config path."""
    write_yaml(
        root / "inventory" / f"{region}.yaml",
        {"region": {"id": region, "name": f"Region {region}"}, "systems": systems},
    )
    config: dict[str, Any] = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": ["inventory"],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": False, "ca_bundles": ca_bundles or []},
        "politeness": {"timeout_s": 3},
        "report": {"out_dir": "reports"},
    }
    config.update(extra_config or {})
    return write_yaml(root / "config.yaml", config)


def self_signed_server_context(directory: Path, common_name: str) -> ssl.SSLContext:
    """A TLS server context with a fresh self-signed EC certificate (key and chain written under `directory`)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*write_self_signed(directory, common_name))
    return ctx


def write_self_signed(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A fresh self-signed EC certificate for `common_name`: (certificate PEM, key PEM) written under `directory`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    cert_pem, key_pem = directory / f"{common_name}.crt.pem", directory / f"{common_name}.key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_pem, key_pem
