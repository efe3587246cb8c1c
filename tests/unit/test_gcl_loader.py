"""The GCL loader: valid documents in every accepted shape, invalid ones with every problem named."""
from __future__ import annotations

import json

import pytest

from gcl_orchestrator.errors import SpecError
from gcl_orchestrator.model import ComputationSpec
from gcl_orchestrator.gcl import load_gcl, schema

ONE = {"computation": "c", "inputs": ["in/a.csv"], "output": "out/a.json", "handler_type": "profile"}


@pytest.mark.parametrize("text, names", [
    (json.dumps(ONE), ["c"]),
    (json.dumps([ONE, {**ONE, "computation": "d", "output": "out/d"}]), ["c", "d"]),
    ("computation: c\ninputs: [in/a.csv]\noutput: out/a.json\nhandler_type: profile\n", ["c"]),
    ("- {computation: c, inputs: [x], output: y, handler_type: h}\n"
     "- {computation: d, inputs: [y], output: z, handler_type: h}\n", ["c", "d"]),
    ("computation: c\ninputs: [x]\noutput: y\nhandler_type: h\n---\n"
     "- {computation: d, inputs: [y], output: z, handler_type: h}\n", ["c", "d"]),
    ("{computation: c, inputs: [x], output: y, handler_type: h}", ["c"]),  # flow-style YAML (metadata)
    (json.dumps(ONE).encode(), ["c"]),
])
def test_valid_documents_in_every_shape(text, names):
    specs = load_gcl(text)
    assert [s.computation for s in specs] == names
    assert all(isinstance(s, ComputationSpec) for s in specs)


def test_fields_are_normalised_and_immutable():
    (s,) = load_gcl(json.dumps({**ONE, "priority": "critical", "params": {"cols": ["a", "b"], "n": 1},
                                "retry": {"max_attempts": 3}, "timeout_s": 5, "resources": {"cpu": 2},
                                "alternatives": [{"handler_type": "slow"}], "notify": ["audit"]}))
    assert s.priority == 200 and s.inputs == ("in/a.csv",) and s.params["cols"] == ("a", "b")
    assert s.timeout_s == 5.0 and s.retry["max_attempts"] == 3 and s.notify == ("audit",)
    with pytest.raises(TypeError):
        s.params["n"] = 2  # type: ignore[index]
    with pytest.raises(AttributeError):
        s.output = "x"  # type: ignore[misc]
    assert load_gcl(json.dumps(s.to_dict())) == (s,)


@pytest.mark.parametrize("priority, value", [("low", -100), ("normal", 0), ("high", 100), ("critical", 200),
                                             (7, 7), (-1000, -1000)])
def test_priorities(priority, value):
    assert load_gcl(json.dumps({**ONE, "priority": priority}))[0].priority == value


def problems(text, source=None):
    with pytest.raises(SpecError) as info:
        load_gcl(text, source=source)
    return [str(p) for p in info.value.problems], str(info.value)


@pytest.mark.parametrize("doc, expected", [
    ({**ONE, "colour": "red"}, "colour: unknown field"),
    ({k: v for k, v in ONE.items() if k != "output"}, "missing required field 'output'"),
    ({**ONE, "inputs": "a.csv"}, "inputs: must be a list, not a string"),
    ({**ONE, "priority": "urgent"}, "priority: 'urgent' is not a priority"),
    ({**ONE, "priority": 5000}, "priority: 5000 is not a priority"),
    ({**ONE, "inputs": ["../etc/passwd"]}, "inputs[0]: has an empty, '.' or '..' path segment"),
    ({**ONE, "output": "/abs/path"}, "output: must be relative"),
    ({**ONE, "output": "a\x01b"}, "output: contains a control character"),
    ({**ONE, "output": ".gclo/state/x"}, "output: '.gclo/state/x' is under the reserved prefix"),
    ({**ONE, "output": "in/a.csv"}, "cannot read its own output"),
    ({**ONE, "handler_type": "bad type!"}, "handler_type: 'bad type!' does not match"),
    ({**ONE, "retry": {"max_attempts": 0}}, "retry.max_attempts"),
    ({**ONE, "params": [1]}, "params: must be a mapping, not a list"),
])
def test_each_invalid_field_is_named(doc, expected):
    found, _ = problems(json.dumps(doc))
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_with_its_line_and_the_source():
    text = ("- computation: a\n"
            "  inputs: [x]\n"
            "  output: y\n"
            "  handler_type: h\n"
            "  bogus: 1\n"
            "- computation: b\n"
            "  inputs: [../z]\n"
            "  output: q\n"
            "  priority: urgent\n")
    found, message = problems(text, source="incoming/data.csv")
    assert "invalid GCL in incoming/data.csv (4 problems)" in message
    assert found[0].startswith("line 5: [0].bogus: unknown field")
    assert any(p.startswith("line 6: [1]: missing required field 'handler_type'") for p in found)
    assert any(p.startswith("line 7: [1].inputs[0]:") for p in found)
    assert any(p.startswith("line 9: [1].priority:") for p in found)


def test_multi_document_problems_name_the_document():
    found, _ = problems("computation: a\ninputs: [x]\noutput: y\nhandler_type: h\n---\n"
                        "computation: a\ninputs: [y]\noutput: z\nhandler_type: h\n")
    assert found == ["line 6: document 2: computation: 'a' is also declared at (document)"]


@pytest.mark.parametrize("text, expected", [
    ("", "empty document"),
    ("[]", "empty list"),
    ("{computation: [", "not valid YAML or JSON"),
    ("just a string", "a computation must be a mapping, not a string"),
    ("computation: a\ncomputation: b\ninputs: []\noutput: o\nhandler_type: h\n", "line 2: computation: field given twice"),
    (b"\xff\xfe", "not UTF-8"),
    ("x: !!python/object:os.system [echo]\n", "unsupported YAML tag"),
])
def test_malformed_text(text, expected):
    found, _ = problems(text)
    assert any(expected in p for p in found), found


def test_alias_bombs_and_deep_nesting_are_bounded():
    bomb = "a: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    found, _ = problems(bomb)
    assert any("document too large" in p for p in found)
    found, _ = problems("[" * 200 + "]" * 200)
    assert any("too large" in p or "nested" in p for p in found)


def test_schema_ships_with_the_package_and_reserves_room_for_later_fields():
    props = schema()["properties"]
    for name in ("computation", "inputs", "output", "handler_type", "priority", "params", "retry", "timeout_s",
                 "resources", "alternatives", "notify"):
        assert name in props
    assert schema()["additionalProperties"] is False


def test_a_huge_invalid_list_is_named_by_its_field_and_length_not_printed():
    doc = {"computation": "join", "handler_type": "h", "inputs": [f"part/{i:05d}" for i in range(30_000)],
           "output": "total"}
    with pytest.raises(SpecError) as err:
        load_gcl(json.dumps(doc))
    assert str(err.value).endswith("inputs: has 30,000 items; at most 10,000 are allowed")
    assert len(str(err.value)) < 200


def test_a_message_with_thousands_of_problems_shows_the_first_and_says_how_many_more():
    docs = [{"computation": f"c{i}", "handler_type": "h", "inputs": [], "output": f"o{i}", "colour": "red"}
            for i in range(500)]
    with pytest.raises(SpecError) as err:
        load_gcl(json.dumps(docs))
    assert len(err.value.problems) == 500
    assert "... and 450 more" in str(err.value) and len(str(err.value)) < 10_000
    assert "; and 490 more problems" in err.value.one_line()
