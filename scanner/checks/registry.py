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
    unseen: list[str] = []  # what the probe did not record: could not assess, never a pass or a fail
    if facts.get("tls.offered") is False:  # as TLS-01..05 say: a TLS endpoint without TLS fails
        return CheckResult(False, ("no TLS handshake succeeded on an endpoint declared as TLS",))
    if key_type is None:
        return CheckResult(False, ("no certificate was received, so its key cannot be judged",), Status.ERROR)
    minimum = {"RSA": params["min_rsa_bits"], "DSA": params["min_rsa_bits"], "EC": params["min_ec_bits"]}
    if key_type in minimum:
        if not isinstance(bits, int):
            unseen.append(f"the size of the certificate's {key_type} key was not recorded")
        elif bits < minimum[key_type]:
            problems.append(
                f"the certificate's {key_type} key is {bits} bits; at least {minimum[key_type]} are required"
            )
    elif key_type not in ("Ed25519", "Ed448"):
        problems.append(f"the certificate's key type {key_type} is not one hcscan recognises as strong")
    if sig is None:
        unseen.append("the certificate's signature hash was not recorded")
    elif str(sig).lower() in params["forbidden_signature_hashes"]:
        problems.append(f"the certificate is signed with {sig}, which is broken for signatures")
    if problems:
        return CheckResult(False, tuple(problems + unseen))
    if unseen:
        return CheckResult(False, tuple(unseen), Status.ERROR)
    size = f" {bits} bits" if isinstance(bits, int) else ""
    return CheckResult(True, (f"{key_type}{size} key, signed with {sig}",))


BUILTIN_CHECK_TYPES: dict[str, CheckType] = {
    "key_strength": CheckType(
        name="key_strength",
        probe="tls",
        facts=frozenset({"tls.offered", "tls.leaf.key_type", "tls.leaf.key_bits", "tls.leaf.signature_hash"}),
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
