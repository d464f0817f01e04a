"""Python check types: for judgements YAML assertions cannot express.

A check type is a pure function (facts, params, now) → CheckResult. hcscan ships a few; a site adds
its own without forking by publishing an entry point in the group ``hcscan.checks`` whose object is a
``CheckType``. Controls name the type under ``check: {type: NAME, params: {...}}``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from typing import Any

from scanner.models import Status

ENTRY_POINT_GROUP = "hcscan.checks"


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    reasons: tuple[str, ...]
    # Set only when the facts allow no pass/fail: Status.ERROR (could not assess, say what is missing)
    # or Status.NOT_APPLICABLE. `ok` is then ignored.
    status: Status | None = None


@dataclass(frozen=True)
class CheckType:
    name: str
    probe: str  # the probe whose facts it reads
    facts: frozenset[str]  # facts it reads (kept as evidence)
    params: Mapping[str, Any]  # parameter names → defaults
    fn: Callable[[Mapping[str, Any], Mapping[str, Any], datetime], CheckResult]
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


def _key_strength(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    key_type = facts.get("tls.leaf.key_type")
    bits = facts.get("tls.leaf.key_bits")
    sig = facts.get("tls.leaf.signature_hash")
    problems: list[str] = []
    if key_type is None:
        return CheckResult(False, ("no certificate key to judge",))
    minimum = {"RSA": params["min_rsa_bits"], "DSA": params["min_rsa_bits"], "EC": params["min_ec_bits"]}
    if key_type in minimum:
        if not isinstance(bits, int):
            problems.append(f"{key_type} key size unknown")
        elif bits < minimum[key_type]:
            problems.append(f"{key_type} key is {bits} bits; minimum is {minimum[key_type]}")
    elif key_type not in ("Ed25519", "Ed448"):
        problems.append(f"unrecognised key type {key_type}")
    if sig is None:
        problems.append("signature hash unknown")
    elif str(sig).lower() in params["forbidden_signature_hashes"]:
        problems.append(f"certificate signed with {sig}, which is broken for signatures")
    if problems:
        return CheckResult(False, tuple(problems))
    return CheckResult(True, (f"{key_type} {bits} bits, signature {sig}",))


BUILTIN_CHECK_TYPES: dict[str, CheckType] = {
    "key_strength": CheckType(
        name="key_strength",
        probe="tls",
        facts=frozenset({"tls.leaf.key_type", "tls.leaf.key_bits", "tls.leaf.signature_hash"}),
        params={"min_rsa_bits": 2048, "min_ec_bits": 256, "forbidden_signature_hashes": ["md5", "sha1"]},
        fn=_key_strength,
        description="Leaf public key at least the minimum size for its type; signature hash not broken.",
    ),
}


def available_check_types() -> dict[str, CheckType]:
    """Built-in check types plus those other installed packages register under `hcscan.checks`."""
    from scanner.checks.availability import AVAILABILITY_CHECK_TYPES
    from scanner.checks.patching import PATCHING_CHECK_TYPES

    types = {**BUILTIN_CHECK_TYPES, **PATCHING_CHECK_TYPES, **AVAILABILITY_CHECK_TYPES}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, CheckType):
            types[obj.name] = obj
    return types
