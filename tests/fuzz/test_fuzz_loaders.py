"""Fuzzing every loader and parser: hostile or broken input ends in a clean InputError (or the parser's own
typed error), never in a traceback; and `validate` never accepts a workspace that `scan` then rejects.

Documents are either random YAML text or a shipped, valid document with one subtree replaced by random
data (most bugs hide one step away from valid input).
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from scanner.app import load_workspace, plan_scan
from scanner.catalog import builtin_controls_dir, load_catalog
from scanner.checks.assertions import AssertionSyntaxError, compile_assertion
from scanner.checks.verdict import Rule, judge
from scanner.checks.versions import Version
from scanner.config import load_config
from scanner.controltest import run_cases
from scanner.engine import Selection, judge_all
from scanner.errors import InputError
from scanner.inventory import check_scope, load_inventory
from scanner.probes.base import ProbeError, ProbeErrorReason, ProbeFacts
from scanner.probes.logbackends.syslog_files import parse_line
from scanner.probes.nmap import NmapError, parse_nmap_xml
from scanner.probes.registry import fact_names, probe_protocols
from scanner.probes.tls import cipher_facts, parse_ssl_enum_ciphers
from scanner.waivers import Waivers, load_waivers
from scanner.yamlio import dump_yaml, load_yaml

ROOT = Path(__file__).resolve().parents[2]
FACTS = fact_names()
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)

# ---- strategies ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["127.0.0.1", "0.0.0.0/0", "-oX", "::1", "a.invalid", "2026-01-01", "tls", "https", "pass", ""]),
)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    cur = doc
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return doc


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> Any:
    """A valid document with one or two subtrees replaced, deleted, or given an extra key."""
    doc = valid
    for _ in range(draw(st.integers(1, 2))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "extra"]))
        if action == "replace" or not path:
            doc = _replace(doc, path, draw(json_like))
        elif action == "delete":
            parent = copy.deepcopy(doc)
            cur = parent
            for key in path[:-1]:
                cur = cur[key]
            del cur[path[-1]]
            doc = parent
        else:
            target = doc
            for key in path:
                target = target[key]
            if isinstance(target, dict):
                doc = _replace(doc, (*path, draw(st.text(min_size=1, max_size=8))), draw(json_like))
    return doc


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


VALID_INVENTORY = _load(ROOT / "inventory" / "hovedstaden.yaml")
VALID_CONTROLS = _load(builtin_controls_dir() / "tls.yaml")
VALID_WAIVERS = _load(ROOT / "inventory" / "waivers.yaml")
VALID_CASES = _load(builtin_controls_dir() / "tests" / "tls.yaml")
VALID_CONFIG = _load(ROOT / "config.example.yaml")


def _write(tmp: Path, name: str, doc: Any) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(doc), encoding="utf-8")
    return path


# ---- raw YAML -----------------------------------------------------------------------------------


@given(st.text(max_size=300))
def test_yaml_text_never_crashes(tmp_path_factory: Any, text: str) -> None:
    with contextlib.suppress(InputError):
        load_yaml(Path("fuzz.yaml"), text=text)


@given(st.binary(max_size=300))
def test_yaml_bytes_never_crash_the_inventory_loader(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("raw") / "region.yaml"
    path.write_bytes(data)
    with contextlib.suppress(InputError):
        load_inventory([path])


# ---- each loader on mutated valid documents ----------------------------------------------------------


@given(mutated(VALID_INVENTORY))
def test_inventory_loader(tmp_path_factory: Any, doc: Any) -> None:
    path = _write(tmp_path_factory.mktemp("inv"), "region.yaml", doc)
    try:
        inventory = load_inventory([path])
    except InputError:
        return
    with contextlib.suppress(InputError):
        check_scope(inventory, list(load_config(_write(path.parent, "c.yaml", {})).scope.allowed_networks))


@given(mutated(VALID_CONTROLS))
def test_controls_loader(tmp_path_factory: Any, doc: Any) -> None:
    path = _write(tmp_path_factory.mktemp("ctl"), "controls.yaml", doc)
    with contextlib.suppress(InputError):
        load_catalog([path], probe_facts=FACTS)


@given(mutated(VALID_WAIVERS))
def test_waivers_loader(tmp_path_factory: Any, doc: Any) -> None:
    path = _write(tmp_path_factory.mktemp("wv"), "waivers.yaml", doc)
    with contextlib.suppress(InputError):
        load_waivers([path], {"TLS-07"}, {"sd-telemedicine"})


@given(mutated(VALID_CONFIG))
def test_config_loader(tmp_path_factory: Any, doc: Any) -> None:
    path = _write(tmp_path_factory.mktemp("cfg"), "config.yaml", doc)
    with contextlib.suppress(InputError):
        load_config(path)


CATALOG = load_catalog([builtin_controls_dir() / "tls.yaml"], probe_facts=FACTS)


@given(mutated(VALID_CASES))
def test_control_test_loader(tmp_path_factory: Any, doc: Any) -> None:
    path = _write(tmp_path_factory.mktemp("cases"), "cases.yaml", doc)
    with contextlib.suppress(InputError):
        run_cases([path], CATALOG, FACTS)


# ---- the assertion language ----------------------------------------------------------------------

OPS = ["equals", "in", "contains", "any_of", "none_of", "lt", "gte", "matches", "any_match", "none_match", "exists"]
leaf = st.fixed_dictionaries(
    {"fact": st.sampled_from([*sorted(FACTS["tls"]), "nope"]), st.sampled_from(OPS): json_like},
    optional={"of": st.sampled_from(["days_until", "length", "version", "lower", "bogus"]), "explain": scalars},
)
assertion = st.recursive(
    leaf | json_like,
    lambda c: st.dictionaries(st.sampled_from(["all", "any", "not"]), c | st.lists(c, max_size=3), max_size=1),
    max_leaves=6,
)
regexes = st.sampled_from([r"(a+)+$", r"(x+x+)+y", r"^(\w+\s?)*$", r"(?=x)", r"(a)\1", r"[", r"\p{L}+", "a{1000}"])
catastrophic = st.fixed_dictionaries({"fact": st.just("tls.leaf.subject"), "matches": regexes | st.text(max_size=40)})


@given(assertion | catastrophic, st.dictionaries(st.sampled_from(sorted(FACTS["tls"])), json_like, max_size=6))
def test_assertions_compile_cleanly_and_judge_without_raising(data: Any, facts: dict[str, Any]) -> None:

    try:
        node = compile_assertion(data, known_facts=FACTS["tls"], params={})
    except AssertionSyntaxError:
        return
    facts.setdefault("tls.leaf.subject", "a" * 5000 + "!")  # long enough to hang a backtracking regex
    rule = Rule(node, None, None, None, None)
    verdict = judge(rule, facts, {}, NOW)
    assert verdict.status.value in {"pass", "fail", "error", "not_applicable"}


@given(st.text(max_size=40), st.text(max_size=40))
def test_version_strings(a: str, b: str) -> None:
    try:
        va, vb = Version(a), Version(b)
    except ValueError:
        return
    assert (va < vb) + (va == vb) + (va > vb) == 1


# ---- what targets send --------------------------------------------------------------------------


syslog_lines = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda pri, ts, rest: f"<{pri}>1 {ts} host app - - {rest}".encode(),
        st.integers(-5, 300),
        st.sampled_from(["2026-11-23T10:00:00Z", "-", "2026-13-45T99:99:99Z", "9999-12-31T23:59:60+14:00", "x"]),
        st.text(max_size=80),
    ),
    st.builds(
        lambda mon, day, h, rest: f"{mon} {day} {h}:00:00 host app: {rest}".encode(),
        st.sampled_from(["Jan", "Feb", "Xyz"]),
        st.integers(-1, 99),
        st.integers(-1, 99),
        st.text(max_size=80),
    ),
)


@given(syslog_lines)
def test_syslog_lines(raw: bytes) -> None:
    parse_line(raw, NOW)


SAMPLE_XML = (ROOT / "tests" / "probes" / "data" / "nmap_tls_sample.xml").read_text(encoding="utf-8")


@given(st.integers(0, len(SAMPLE_XML)), st.integers(0, 200), st.text(max_size=40))
@example(SAMPLE_XML.index('portid="') + len('portid="'), 0, ":")  # found by the long run: portid=":36007"
def test_nmap_xml_cut_or_spliced(cut: int, drop: int, insert: str) -> None:
    xml = SAMPLE_XML[:cut] + insert + SAMPLE_XML[cut + drop :]
    try:
        scan = parse_nmap_xml(xml)
    except NmapError:
        return
    for port in scan.ports.values():
        enum = port.scripts.get("ssl-enum-ciphers")
        if enum is not None:
            cipher_facts(parse_ssl_enum_ciphers(enum.data))


@given(st.text(max_size=300))
def test_nmap_xml_random(xml: str) -> None:
    with contextlib.suppress(NmapError):
        parse_nmap_xml(xml)


nse = st.recursive(
    st.text(max_size=12),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["TLSv1.2", "ciphers", "name", "kex_info"]), c, max_size=4
        )
    ),
    max_leaves=15,
)


@given(nse)
def test_ssl_enum_ciphers_tree(data: Any) -> None:
    cipher_facts(parse_ssl_enum_ciphers(data))


# ---- validate never accepts what scan rejects ---------------------------------------------------------


@given(mutated(VALID_INVENTORY), mutated(VALID_CONTROLS), st.data())
def test_validate_never_accepts_what_scan_rejects(tmp_path_factory: Any, inv: Any, controls: Any, data: Any) -> None:
    root = tmp_path_factory.mktemp("ws")
    _write(root, "inventory/region.yaml", inv)
    _write(root, "controls/fuzz.yaml", controls)
    config = _write(
        root,
        "config.yaml",
        {"inventory": ["inventory"], "controls": ["controls"], "scope": {"allowed_networks": ["127.0.0.0/8"]}},
    )
    # What `hcscan validate` does:
    try:
        ws = load_workspace(config, FACTS)
        check_scope(ws.inventory, list(ws.config.scope.allowed_networks))
    except InputError:
        return
    # ... and then `hcscan scan` must not find anything more to refuse, whatever the probes bring back.
    plan, _ = plan_scan(ws, Selection(), probe_protocols())
    facts: dict[str, dict[str, Any]] = {}
    for kind, targets in plan.targets.items():
        facts[kind] = {}
        for t in targets:
            if data.draw(st.booleans()):
                facts[kind][t.key] = ProbeError(ProbeErrorReason.TIMEOUT, "fuzz")
            else:
                names = sorted(FACTS.get(kind, frozenset()))
                drawn = data.draw(st.dictionaries(st.sampled_from(names), json_like, max_size=5)) if names else {}
                facts[kind][t.key] = ProbeFacts(drawn)
    records = judge_all(plan, facts, Waivers(), NOW)
    assert len(records) == len(plan.checks)
