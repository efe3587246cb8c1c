"""Everything that takes user text either works or raises our own error naming the problem: never anything
else. Property-based, with hypothesis; bounded in time so the suite stays fast."""
from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gcl_orchestrator.errors import GclError, InvalidKeyError, RulesError, SpecError
from gcl_orchestrator.model import check_key, normalize_metadata
from gcl_orchestrator.gcl import RuleSet, load_gcl, read_gcl_fields
from gcl_orchestrator.gcl.metadata import valid_sidecar_key
from gcl_orchestrator.storage.s3 import parse_s3_uri

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25)
fields = st.sampled_from(["computation", "inputs", "output", "handler_type", "priority", "params", "retry",
                          "timeout_s", "resources", "alternatives", "notify", "extra"])
near_specs = st.dictionaries(fields, json_values, max_size=8)


@FAST
@given(st.text(max_size=400))
def test_any_text_is_gcl_or_a_spec_error(text):
    try:
        load_gcl(text, source="fuzz")
    except SpecError as exc:
        assert exc.problems and "fuzz" in str(exc)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes_are_gcl_or_a_spec_error(data):
    try:
        load_gcl(data)
    except SpecError:
        pass


@FAST
@given(st.one_of(near_specs, st.lists(near_specs, max_size=3)))
def test_almost_valid_documents_are_specs_or_errors_naming_fields(doc):
    try:
        load_gcl(json.dumps(doc))
    except SpecError as exc:
        assert all(str(p) for p in exc.problems)


@FAST
@given(st.dictionaries(st.text(max_size=15), st.text(max_size=60), max_size=5))
def test_metadata_from_a_server_is_read_or_refused_cleanly(metadata):
    fields = read_gcl_fields(metadata)
    if fields.ref is not None:
        valid_sidecar_key(fields.ref)
    try:
        normalize_metadata(metadata)
    except ValueError:
        pass


@FAST
@given(st.text(max_size=200))
def test_any_key_is_accepted_or_refused_with_a_reason(key):
    try:
        check_key(key)
    except InvalidKeyError as exc:
        assert exc.reason


@FAST
@given(st.text(max_size=300))
def test_any_rules_text_is_rules_or_a_rules_error(text):
    try:
        RuleSet.parse(text, "fuzz.yaml")
    except RulesError as exc:
        assert "fuzz.yaml" in str(exc)


@FAST
@given(st.text(max_size=80))
def test_any_store_uri_is_parsed_or_refused_clearly(text):
    try:
        parse_s3_uri("s3://" + text)
    except GclError:
        pass


# --- command-line arguments ------------------------------------------------------------------------------------

from gcl_orchestrator import cli  # noqa: E402
from gcl_orchestrator.config import parse_pool, parse_resources  # noqa: E402
from gcl_orchestrator.errors import ConfigError  # noqa: E402

FEW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])


@FAST
@given(st.text(max_size=60))
def test_resource_and_pool_options_parse_or_say_what_is_wrong(text):
    for parse in (parse_resources, parse_pool):
        try:
            parse(text)
        except ConfigError as exc:
            assert text in str(exc) or "--" in str(exc)


@FAST
@given(st.text(max_size=30))
def test_deadlock_grace_parses_or_says_what_is_wrong(text):
    try:
        cli._grace(text)
    except ConfigError as exc:
        assert "--deadlock-grace" in str(exc)


@FEW
@given(store=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and not s.startswith("-")))
def test_status_on_any_store_text_ends_with_an_exit_code_not_a_traceback(store, capsys, tmp_path):
    # relative names are taken inside an empty directory, so nothing is found and nothing is created
    target = store if "://" in store else str(tmp_path / "nowhere" / store.lstrip("/"))
    code = cli.main(["-q", "status", "--store", target])
    assert code in (1, 2, 3)
    capsys.readouterr()


@FEW
@given(name=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s and not s.startswith("-")))
def test_validate_on_any_file_name_ends_with_an_exit_code(name, capsys, tmp_path):
    assert cli.main(["validate", str(tmp_path / "missing" / name)]) == 1
    capsys.readouterr()


# --- notification parsers: payloads come from outside and may be anything --------------------------------------

from gcl_orchestrator.model import ObjectCreated, ObjectRemoved  # noqa: E402
from gcl_orchestrator.sources import (  # noqa: E402
    objects_from_records,
    parse_filer_event,
    parse_minio_event,
    parse_notification,
)

record_like = st.fixed_dictionaries({}, optional={
    "eventName": st.sampled_from(["ObjectCreated:Put", "s3:ObjectCreated:Copy", "ObjectRemoved:Delete"]) | json_values,
    "s3": st.fixed_dictionaries({}, optional={
        "bucket": st.fixed_dictionaries({}, optional={"name": st.just("b") | json_values}) | json_values,
        "object": st.fixed_dictionaries({}, optional={
            "key": st.text(max_size=30) | json_values, "eTag": json_values,
            "userMetadata": st.dictionaries(st.text(max_size=12), json_values, max_size=3) | json_values,
        }) | json_values,
    }) | json_values,
})


def _only_object_created(events):
    assert all(isinstance(e, (ObjectCreated, ObjectRemoved)) and isinstance(e.key, str) and e.key for e in events)


@FAST
@given(st.lists(record_like | json_values, max_size=4) | json_values)
def test_any_records_yield_object_created_events_or_nothing(records):
    _only_object_created(objects_from_records(records, "b", "", "fuzz"))


@FAST
@given(json_values | st.fixed_dictionaries({"Records": st.lists(record_like, max_size=3)}))
def test_any_notification_body_is_events_or_a_value_error(data):
    for body in (json.dumps(data), json.dumps(data).encode()):
        for parse in (parse_notification, parse_minio_event):
            try:
                _only_object_created(parse(body, "b", "", "fuzz"))
            except ValueError:
                pass


@FAST
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_bytes_as_a_notification_are_events_or_a_value_error(body):
    for parse in (parse_notification, parse_minio_event):
        try:
            _only_object_created(parse(body, "b", "", "fuzz"))
        except ValueError:
            pass


filer_like = st.fixed_dictionaries({}, optional={
    "directory": st.just("/buckets/b/in") | json_values,
    "tsNs": json_values,
    "eventNotification": st.fixed_dictionaries({}, optional={
        "newParentPath": st.just("/buckets/b/in") | json_values,
        "newEntry": st.fixed_dictionaries({}, optional={
            "name": st.text(max_size=20) | json_values, "isDirectory": json_values,
            "extended": st.dictionaries(st.sampled_from(["X-Amz-Meta-gcl", "Seaweed-X-Amz-Etag", "other"]),
                                        st.text(max_size=20) | json_values, max_size=3) | json_values,
        }) | json_values,
    }) | json_values,
})


@FAST
@given(filer_like | json_values)
def test_any_filer_event_is_an_object_created_or_nothing(event):
    created = parse_filer_event(event, "b", "")
    assert created is None or (isinstance(created, (ObjectCreated, ObjectRemoved)) and created.key)


def test_the_payloads_that_crashed_the_parsers_are_ignored():
    assert objects_from_records([{"eventName": "ObjectCreated:Put", "s3": "x"}], "b", "", "t") == []
    assert parse_notification('{"Records": [{"eventName": "ObjectCreated:Put", "s3": "x"}]}', "b", "", "t") == []
    assert parse_filer_event({"eventNotification": "x"}, "b", "") is None
    assert parse_filer_event({"eventNotification": {"newEntry": {"name": 5}}}, "b", "") is None


def test_metadata_bytes_decode_the_same_on_the_head_path_and_the_filer_stream():
    import base64

    from gcl_orchestrator.model import header_value
    from gcl_orchestrator.sources.seaweedfs import _b64

    raw = "données/été.csv".encode("utf-8")
    via_head = header_value(raw.decode("latin-1"))  # what Python's HTTP client hands botocore
    via_filer = _b64(base64.b64encode(raw).decode())
    assert via_head == via_filer == "données/été.csv"
    not_utf8 = b"caf\xe9"
    assert header_value(not_utf8.decode("latin-1")) == _b64(base64.b64encode(not_utf8).decode())
