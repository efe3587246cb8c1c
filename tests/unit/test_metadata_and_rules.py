"""GCL in object metadata (inline, sidecar, case-insensitive) and rules for plain files."""
from __future__ import annotations

import pytest

from gcl_orchestrator.errors import RulesError
from gcl_orchestrator.model import metadata_get, normalize_metadata
from gcl_orchestrator.gcl import encode_gcl, load_gcl, read_gcl_fields, spec_from_mapping
from gcl_orchestrator.gcl.metadata import METADATA_LIMIT_BYTES, SIDECAR_PREFIX, metadata_size, valid_sidecar_key
from gcl_orchestrator.gcl.rules import RuleSet, glob_to_regex


def spec(name, **extra):
    return spec_from_mapping({"computation": name, "inputs": ["a"], "output": f"out/{name}", "handler_type": "h",
                              **extra})


def test_small_ascii_specs_go_inline_as_one_line_json_that_round_trips():
    specs = [spec("one"), spec("two", params={"k": 1})]
    enc = encode_gcl(specs)
    assert enc.sidecar_key is None and "\n" not in enc.metadata["gcl"]
    normalize_metadata(enc.metadata)  # survives an HTTP header
    assert load_gcl(enc.metadata["gcl"]) == tuple(specs)


@pytest.mark.parametrize("specs", [
    [spec(f"c{i}", params={"pad": "x" * 40}) for i in range(30)],  # too large for 2 KB
    [spec("unicode", params={"label": "température"})],  # not ASCII
])
def test_large_or_non_ascii_specs_go_to_a_content_addressed_sidecar(specs):
    enc = encode_gcl(specs, other={"owner": "me"})
    assert enc.sidecar_key.startswith(SIDECAR_PREFIX) and valid_sidecar_key(enc.sidecar_key)
    assert enc.metadata == {"owner": "me", "gcl-ref": enc.sidecar_key}
    assert load_gcl(enc.sidecar_body) == tuple(specs)
    assert encode_gcl(specs).sidecar_key == enc.sidecar_key  # same content, same key


def test_the_limit_counts_other_metadata_too():
    enc = encode_gcl([spec("one", params={"pad": "z" * 200})], other={"big": "y" * (METADATA_LIMIT_BYTES - 150)})
    assert enc.sidecar_key is not None
    assert metadata_size(enc.metadata) <= METADATA_LIMIT_BYTES
    with pytest.raises(ValueError, match="exceeds the 2048-byte limit"):
        encode_gcl([spec("one")], other={"big": "y" * (METADATA_LIMIT_BYTES - 20)})


@pytest.mark.parametrize("metadata", [{"gcl": "T"}, {"GCL": "T"}, {"X-Amz-Meta-Gcl": "T"}, {"x-amz-meta-gcl": "T"}])
def test_metadata_names_compare_case_insensitively(metadata):
    assert metadata_get(metadata, "gcl") == "T"
    assert read_gcl_fields(metadata).text == "T"


@pytest.mark.parametrize("ref, ok", [(SIDECAR_PREFIX + "ab.json", True), (SIDECAR_PREFIX + "../x.json", False),
                                     ("incoming/secret.json", False), (SIDECAR_PREFIX + "a/b.json", False)])
def test_sidecar_references_may_only_point_into_the_sidecar_area(ref, ok):
    assert valid_sidecar_key(ref) is ok


@pytest.mark.parametrize("bad", [{"gcl": "two\nlines"}, {"gcl": "é"}, {"bad name": "x"}, {"n": 1}])
def test_metadata_that_cannot_travel_in_a_header_is_refused(bad):
    with pytest.raises(ValueError):
        normalize_metadata(bad)


# --- rules -----------------------------------------------------------------------------------------------------

RULES = """
rules:
  - match: "incoming/*.csv"
    gcl:
      computation: "profile:{stem}"
      handler_type: csv_profile
      inputs: ["{key}"]
      output: "profiles/{parent}/{stem}.json"
  - match: "**/*.log"
    gcl:
      - {computation: "scan:{name}", handler_type: scan, inputs: ["{key}"], output: "scans/{name}.json"}
"""


@pytest.mark.parametrize("pattern, key, matches", [
    ("incoming/*.csv", "incoming/a.csv", True),
    ("incoming/*.csv", "incoming/sub/a.csv", False),
    ("incoming/**/*.csv", "incoming/sub/deep/a.csv", True),
    ("incoming/**/*.csv", "incoming/a.csv", True),
    ("data-?.txt", "data-1.txt", True),
    ("data-[0-9].txt", "data-x.txt", False),
    ("*.csv", "a.csv.bak", False),
])
def test_globs(pattern, key, matches):
    assert bool(glob_to_regex(pattern).match(key)) is matches


def test_a_rule_may_declare_a_join_over_a_range_of_keys_named_after_the_dropped_file():
    rules = RuleSet.parse("rules: [{match: 'batches/*.ready', gcl: {computation: 'join:{stem_id}', handler_type: "
                          "join, inputs: ['{key}', {pattern: '{parent}/{stem}/part-{i:03d}.csv', count: 3}, "
                          "{pattern: '{stem}/{i}', count: 2}], output: 'joined/{stem}.json'}}]")
    (s,) = rules.specs_for("batches/b7.ready")
    assert s.inputs == ("batches/b7.ready", "batches/b7/part-000.csv", "batches/b7/part-001.csv",
                        "batches/b7/part-002.csv", "b7/0", "b7/1")


def test_rules_render_templates_for_matching_keys():
    rules = RuleSet.parse(RULES, "rules.yaml")
    (s,) = rules.specs_for("incoming/sales.2024.csv")
    # {stem} is the name without its last suffix
    assert (s.computation, s.inputs, s.output) == ("profile:sales.2024", ("incoming/sales.2024.csv",),
                                                   "profiles/incoming/sales.2024.json")
    assert [x.computation for x in rules.specs_for("var/app.log")] == ["scan:app.log"]
    assert rules.specs_for("other/file.txt") == ()


def test_placeholders_are_text_not_code():
    rules = RuleSet.parse("rules: [{match: '**', gcl: {computation: scan, handler_type: h, inputs: ['{key}'], "
                          "output: 'o/{name}'}}]", "r")
    (s,) = rules.specs_for("in/{key.__class__}")
    assert s.inputs == ("in/{key.__class__}",) and s.output == "o/{key.__class__}"


@pytest.mark.parametrize("text, expected", [
    ("rules: 3", "expected a mapping with a 'rules' list"),
    ("rules: [{match: 'a'}]", "exactly the fields 'match'"),
    ("rules: [{match: 'a', gcl: {computation: '{nope}', inputs: [], output: o, handler_type: h}}]",
     "unknown placeholder(s) {nope}"),
    ("rules: [{match: 'a', gcl: {computation: c, inputs: [], output: o}}]", "missing required field 'handler_type'"),
    ("rules: [", "not valid YAML"),
])
def test_bad_rules_are_refused_at_load_naming_the_rule(text, expected):
    with pytest.raises(RulesError) as info:
        RuleSet.parse(text, "my-rules.yaml")
    assert expected in str(info.value) and "my-rules.yaml" in str(info.value)


@pytest.mark.parametrize("key, stem_id", [
    ("incoming/plain-name_1.csv", "plain-name_1"),
    ("incoming/my file.csv", "my_file-"),
    ("incoming/données été.csv", "donn_es__t_-"),
])
def test_stem_id_is_a_valid_computation_name_for_any_key(key, stem_id):
    rules = RuleSet.parse("""
rules:
  - match: "incoming/*.csv"
    gcl: {computation: "profile:{stem_id}", handler_type: csv_profile, inputs: ["{key}"], output: "p/{stem}.json"}
""")
    (s,) = rules.specs_for(key)
    assert s.computation.startswith("profile:" + stem_id)
    assert s.output == "p/" + key.rsplit("/", 1)[1].rsplit(".", 1)[0] + ".json"


def test_keys_that_differ_only_in_characters_names_cannot_hold_get_different_ids():
    from gcl_orchestrator.gcl.rules import name_id

    assert name_id("a b") != name_id("a_b") and name_id("a_b") == "a_b"
