"""The YAML loader reads a file in one pass (libyaml composes; the checks run on the node tree): the token scan that
refuses anchors and aliases runs only for a text holding an '&' or '*', and gives the same data and positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from scanner import yamlio
from scanner.errors import InputError
from scanner.resources import builtin_controls_dir

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted([*builtin_controls_dir().glob("*.yaml"), *(ROOT / "inventory").glob("*.yaml")])


def problems(text: str) -> list[tuple[int | None, int | None, str]]:
    with pytest.raises(InputError) as caught:
        yamlio.load_yaml(Path("t.yaml"), text=text)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def test_libyaml_is_used_where_pyyaml_has_it() -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml: the Python loader (and the token pre-scan) is used")
    assert yamlio._LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("file", SHIPPED, ids=lambda p: p.name)
def test_a_file_is_read_in_one_pass_with_the_same_data_and_positions(
    file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = file.read_text(encoding="utf-8")
    if "&" in text or "*" in text:
        text = text.replace("&", "and").replace("*", "x")  # the shipped files' few are in prose and patterns
    checked = yamlio.load_yaml(file, text=text + "\n# a comment with & and * makes the loader scan the tokens\n")
    if yaml.__with_libyaml__:
        scans: list[str] = []
        real_scan = yaml.scan
        monkeypatch.setattr(yaml, "scan", lambda *a, **k: scans.append("scan") or real_scan(*a, **k))
        one_pass = yamlio.load_yaml(file, text=text)
        assert scans == [], "a text without '&' or '*' was tokenised before composing"
    else:
        one_pass = yamlio.load_yaml(file, text=text)
    assert one_pass.data == checked.data and one_pass.data is not None
    assert one_pass.positions == checked.positions


def test_anchors_and_aliases_are_still_refused_where_they_are() -> None:
    assert problems("a: 1\nb: &x [1]\nc: *x\n") == [(2, 4, "YAML anchors (&x) are not supported")]
    assert problems("x: &loop [*loop]\n") == [(1, 4, "YAML anchors (&loop) are not supported")]
    assert problems("a: 1\nb: *nothing\n") == [(2, 4, "YAML aliases (*nothing) are not supported")]
    # An '&' or '*' inside text is only text.
    assert yamlio.load_yaml(Path("t.yaml"), text="team: 'R&D'\nglob: '*.log'\n").data == {
        "team": "R&D",
        "glob": "*.log",
    }


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a: " + "{b: " * 41 + "1" + "}" * 41 + "\n", (1, 160)),  # flow: the 41st mapping
        ("".join("  " * i + "k:\n" for i in range(41)) + "  " * 41 + "v\n", (41, 81)),  # block
        ("x: " + "[" * 50_000 + "]" * 50_000 + "\n", (1, 1003)),  # libyaml's own limit, met reading ahead
    ],
    ids=["flow", "block", "fifty-thousand"],
)
def test_nesting_is_bounded_on_the_node_tree_with_its_position(text: str, where: tuple[int, int]) -> None:
    assert problems(text) == [(*where, "nested more than 40 levels deep")]
    assert yamlio.load_yaml(Path("t.yaml"), text="a: " + "{b: " * 38 + "1" + "}" * 38 + "\n").data is not None


def test_every_problem_of_a_file_keeps_its_line_and_column() -> None:
    text = "a: 1\na: 2\nb: 99999999999999999999\nc: .inf\nd: {<<: {e: 1}}\n"
    assert problems(text) == [
        (2, 1, "duplicate key 'a'"),
        (3, 4, "number out of range"),
        (4, 4, "'.inf' is not a finite number"),
        (5, 5, "YAML merge keys (<<) are not supported"),
    ]
