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


def test_a_list_over_the_input_limit_is_named_by_its_field_and_size_in_one_line():
    doc = {"computation": "join", "handler_type": "h", "inputs": [f"part/{i:06d}" for i in range(120_000)],
           "output": "total"}
    with pytest.raises(SpecError) as err:
        load_gcl(json.dumps(doc), sidecar=True)  # a list this long is only carried by a sidecar
    assert [str(p) for p in err.value.problems] == [
        "inputs: 120,000 keys, more than the 100,000 a computation may read"]
    assert len(str(err.value)) < 200


def test_a_list_of_a_hundred_thousand_keys_is_accepted_as_exact_keys():
    keys = [f"part/{i:06d}" for i in range(100_000)]
    (spec,) = load_gcl(json.dumps({"computation": "join", "handler_type": "h", "inputs": keys, "output": "total"}),
                       sidecar=True)
    assert spec.inputs == tuple(keys) and spec.declared_inputs is None and spec.to_dict()["inputs"] == keys


# --- ranges of keys: {pattern, count, start} -------------------------------------------------------------------


def join(*inputs, **fields):
    return json.dumps({"computation": "join", "handler_type": "h", "inputs": list(inputs), "output": "total",
                       **fields})


def test_inputs_given_as_a_tuple_are_checked_and_kept_like_a_list():
    from gcl_orchestrator.gcl import spec_from_mapping
    fields = {"computation": "c", "handler_type": "h", "output": "o"}
    assert spec_from_mapping({**fields, "inputs": ("a", "b")}).inputs == ("a", "b")  # a handler passing ctx.inputs
    assert spec_from_mapping({**fields, "inputs": ("a", {"pattern": "p/{i}", "count": 2})}).inputs == ("a", "p/0",
                                                                                                    "p/1")
    with pytest.raises(SpecError, match=r"inputs\[1\]: has an empty"):
        spec_from_mapping({**fields, "inputs": ("a", "../b")})


def test_a_range_expands_in_place_to_exact_keys_as_python_formats_them():
    (spec,) = load_gcl(join("config.json", {"pattern": "parts/{i:05d}.json", "count": 3},
                            {"pattern": "more/{i}", "count": 2, "start": 9}))
    assert spec.inputs == ("config.json", "parts/00000.json", "parts/00001.json", "parts/00002.json", "more/9",
                           "more/10")
    assert [f"parts/{i:05d}.json" for i in range(3)] == list(spec.inputs[1:4])  # what a handler writes


def test_a_range_stays_compact_in_the_spec_written_back_and_in_its_fingerprint():
    from gcl_orchestrator.gcl import encode_gcl
    (spec,) = load_gcl(join({"pattern": "parts/{i:05d}.json", "count": 100_000}))
    assert len(spec.inputs) == 100_000 and spec.inputs[-1] == "parts/99999.json"
    assert spec.to_dict()["inputs"] == [{"pattern": "parts/{i:05d}.json", "count": 100_000}]
    encoded = encode_gcl([spec])
    assert encoded.sidecar_key is None and len(encoded.metadata["gcl"]) < 200  # inline in metadata
    assert load_gcl(encoded.metadata["gcl"]) == (spec,)  # and read back the same
    listed = load_gcl(json.dumps({**spec.to_dict(), "inputs": list(spec.inputs)}), sidecar=True)[0]
    assert listed.inputs == spec.inputs and listed != spec  # the same keys declared otherwise: another spec
    assert listed.fingerprint() != spec.fingerprint()


@pytest.mark.parametrize("inputs, expected", [
    ([{"pattern": "p/{i}", "count": 120_000}], "inputs: 120,000 keys, more than the 100,000 a computation may read"),
    (["a", {"pattern": "p/{i}", "count": 60_000}, {"pattern": "q/{i}", "count": 40_000}],
     "inputs: 100,001 keys, more than the 100,000 a computation may read"),
    ([{"pattern": "p/{i}", "count": 10 ** 15}], "inputs: 1,000,000,000,000,000 keys, more than the 100,000"),
    ([{"pattern": "p/{i}/{i}", "count": 3}], "inputs[0].pattern: 'p/{i}/{i}' must hold exactly one placeholder"),
    ([{"pattern": "p/x", "count": 3}], "inputs[0].pattern: 'p/x' must hold exactly one placeholder"),
    ([{"pattern": "p/{n}", "count": 3}], "inputs[0].pattern: 'p/{n}' must hold exactly one placeholder"),
    ([{"pattern": "p/{i:5d}", "count": 3}], "inputs[0].pattern: 'p/{i:5d}' must hold exactly one placeholder"),
    ([{"pattern": "../{i}", "count": 3}], "inputs[0].pattern: expands to '../0': has an empty, '.' or '..'"),
    ([{"pattern": ".gclo/{i}", "count": 3}], "inputs[0].pattern: expands to '.gclo/0': the prefix '.gclo/' is"),
    ([{"pattern": "p/{i}" + "x" * 1019, "count": 10_000}], "inputs[0].pattern: expands to 'p/9999xxx"),  # the last
    ([{"pattern": "p/{i}", "count": 0}], "inputs[0].count: 0 is not allowed here (minimum 1)"),
    ([{"pattern": "p/{i}", "count": "3"}], "inputs[0].count: must be an integer, not a string"),
    ([{"pattern": "p/{i}", "count": 3, "step": 2}], "inputs[0].step: unknown field (allowed: count, pattern, start)"),
    ([{"pattern": "p/{i}"}], "inputs[0]: missing required field 'count'"),
    ([{"pattern": "p/{i}", "count": 3, "start": -1}], "inputs[0].start: -1 is not allowed here (minimum 0)"),
    ([7], "inputs[0]: must be a key or a range of keys ({pattern, count}), not an integer"),
    (["p/2", {"pattern": "p/{i}", "count": 3}], "inputs: names 'p/2' more than once"),
    ([{"pattern": "p/{i}", "count": 3}, {"pattern": "p/{i}", "count": 5}],
     "inputs: names 'p/0' more than once (3 keys in all are named twice)"),
    (["a", "a"], "inputs: names 'a' more than once"),
    ([{"pattern": "p/{i}", "count": 3}, ".gclo/x"], "inputs[1]: '.gclo/x' is under the reserved prefix '.gclo/'"),
    ([{"pattern": "p/{i}", "count": 3}, "a//b"], "inputs[1]: has an empty, '.' or '..' path segment"),
])
def test_each_invalid_range_is_named_by_its_field_in_one_short_line(inputs, expected):
    found, message = problems(join(*inputs))
    assert len(found) == 1 and found[0].startswith(expected), found
    assert len(message) < 300


def test_a_range_that_reaches_the_output_is_refused():
    found, _ = problems(join({"pattern": "total{i}", "count": 3}, output="total1"))
    assert found == ["output: 'total1' is also an input: a computation cannot read its own output"]


def test_a_range_given_without_its_list_says_where_it_goes():
    found, _ = problems(json.dumps({"computation": "join", "handler_type": "h", "output": "total",
                                    "inputs": {"pattern": "p/{i}", "count": 3}}))
    assert found == ["inputs: must be a list, not a mapping: a range of keys goes in one, "
                     "[{pattern: ..., count: ...}]"]


def test_keys_are_checked_in_a_list_with_other_problems_too():
    found, _ = problems(join("ok", "a/../b", priority="urgent"))
    assert any(p.startswith("inputs[1]: has an empty") for p in found)
    assert any(p.startswith("priority:") for p in found)


def test_a_message_with_thousands_of_problems_shows_the_first_and_says_how_many_more():
    docs = [{"computation": f"c{i}", "handler_type": "h", "inputs": [], "output": f"o{i}", "colour": "red"}
            for i in range(500)]
    with pytest.raises(SpecError) as err:
        load_gcl(json.dumps(docs))
    assert len(err.value.problems) == 500
    assert "... and 450 more" in str(err.value) and len(str(err.value)) < 10_000
    assert "; and 490 more problems" in err.value.one_line()


def test_an_infinite_or_nan_delay_time_out_or_resource_is_refused_naming_its_field():
    text = ("computation: c\nhandler_type: h\ninputs: [a]\noutput: b\ntimeout_s: .nan\n"
            "retry: {max_attempts: 3, initial_delay_s: .inf}\nresources: {gpu: .inf}\n")
    with pytest.raises(SpecError) as err:
        load_gcl(text)
    message = str(err.value)
    for field in ("timeout_s", "retry.initial_delay_s", "resources.gpu"):
        assert field in message, message
    assert "finite" in message
    load_gcl(text.replace(".nan", "30").replace(".inf", "1000000000.0"))  # large is allowed


@pytest.mark.parametrize("levels, refused", [(64, False), (65, True)])
def test_one_line_json_nested_too_deep_is_refused_in_one_line(levels, refused):
    params: object = 1  # at `levels` below the document: the document and levels - 1 mappings and lists above it
    for i in range(levels - 1):
        params = {"k": params} if i % 2 == levels % 2 else [params]
    text = json.dumps({"computation": "c", "inputs": ["a"], "output": "b", "handler_type": "h", "params": params})
    assert "\n" not in text
    if refused:
        with pytest.raises(SpecError, match="nested deeper than 64 levels"):
            load_gcl(text)
    else:
        assert load_gcl(text)[0].computation == "c"
