"""The GCL loader: text (YAML or JSON; one computation, a list, or several YAML documents) to immutable specs.

Every problem is collected with its field path and line before one SpecError is raised. YAML is composed with
the safe loader and converted by hand, so aliases, nesting depth and document size are bounded.
"""
from __future__ import annotations

import json
import math
import re
from collections import abc
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable, Mapping

import fastjsonschema
import jsonschema
import yaml

from ..errors import InvalidKeyError, Problem, SpecError
from ..model import ComputationSpec, check_key, clip, freeze, priority_value, shorten

MAX_TEXT_BYTES = 1 << 20  # one GCL document written by people
MAX_NODES = 100_000  # values after alias expansion: bounds "billion laughs"
MAX_DEPTH = 64
MAX_SPECS = 10_000  # computations in one document written by people
# A sidecar holds what one handler attempt emitted (compact JSON written by gcl-orchestrator): its bounds are the
# largest emission `--max-emit` allows, and the worker refuses to write a sidecar beyond them, so that whatever
# was accepted live is also read back at restart.
MAX_EMIT_LIMIT = 100_000
MAX_SIDECAR_BYTES = 64 << 20
# Keys one computation reads, once its ranges are expanded: a join over a hundred thousand parts.
MAX_INPUTS = 100_000
# What most keys look like, checked at once; any other key gets check_key's verdict and reason.
_PLAIN_KEY = re.compile(r"(?:[A-Za-z0-9_+=@:,-][A-Za-z0-9_.+=@:,-]*/)*[A-Za-z0-9_+=@:,-][A-Za-z0-9_.+=@:,-]*")
_RANGE_PLACEHOLDER = re.compile(r"\{i(?::0([1-9][0-9]?)d)?\}")

Path = tuple[str | int, ...]


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The GCL JSON Schema shipped with the package."""
    text = resources.files(__package__).joinpath("gcl.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    cls = jsonschema.validators.validator_for(schema())
    return cls(schema())


@lru_cache(maxsize=1)
def _fast_checks() -> tuple[Any, Any]:
    """The same schema compiled to Python: much faster at saying "valid", which is the common answer
    (handlers emit thousands of specs). Only when it says "invalid" does jsonschema find every problem.

    Two checks: the computation with `inputs` checked only for being a list, and one key range. The keys of
    `inputs` are left to `input_keys`, whose key rules include the schema's and cost a tenth per key: a join
    over a hundred thousand parts is validated in a fraction of a second."""
    whole = dict(schema())
    whole["properties"] = {**whole["properties"], "inputs": {"type": "array"}}
    key_range = {"$schema": whole["$schema"], **schema()["definitions"]["key_range"]}
    return fastjsonschema.compile(whole), fastjsonschema.compile(key_range)


def _valid(item: Any) -> bool:
    check, check_range = _fast_checks()
    try:
        check(item)
        for x in item["inputs"]:
            if type(x) is not str:
                check_range(x)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


def render_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- text to plain data, with line numbers ---------------------------------------------------------------------


_PLAIN_TAGS = frozenset("tag:yaml.org,2002:" + t for t in ("map", "seq", "str", "int", "float", "bool", "null",
                                                            "timestamp"))


class _Converter:
    """Turns composed YAML nodes into JSON-like data, recording the line of every field path."""

    def __init__(self) -> None:
        self.lines: dict[Path, int] = {}
        self.problems: list[tuple[Path, str]] = []
        self.nodes = 0
        self._scalars = yaml.constructor.SafeConstructor()

    def convert(self, node: yaml.Node, path: Path, depth: int = 0) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(f"more than {MAX_NODES} values (after expanding YAML aliases)")
        if depth > MAX_DEPTH:
            raise _TooBig(f"nested deeper than {MAX_DEPTH} levels")
        self.lines.setdefault(path, node.start_mark.line + 1)
        if node.tag not in _PLAIN_TAGS:
            self.problems.append((path, f"unsupported YAML tag {node.tag!r}"))
            return None
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.convert(key_node, path + ("<key>",), depth + 1)
                if not isinstance(key, str):
                    key = str(key)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                if key in out:
                    self.problems.append((path + (key,), "field given twice"))
                out[key] = self.convert(value_node, path + (key,), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, path + (i,), depth + 1) for i, item in enumerate(node.value)]
        tag = node.tag.rsplit(":", 1)[-1]
        if tag in ("int", "float", "bool", "null"):
            return self._scalars.construct_object(node)
        if tag in ("str", "timestamp"):
            return node.value  # dates stay strings: GCL is JSON-shaped
        self.problems.append((path, f"unsupported YAML tag {node.tag!r}"))
        return None


class _TooBig(Exception):
    pass


def _check_depth(data: Any, text: str) -> None:
    """JSON has no aliases, so its size is bounded by the text; its depth is bounded here (at once when the text
    has too few brackets to nest that deep: most of what metadata carries)."""
    if text.count("{") + text.count("[") <= MAX_DEPTH:
        return
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth >= MAX_DEPTH and value:  # a value below this one would be deeper than MAX_DEPTH
            raise SpecError([Problem("", f"document too large: nested deeper than {MAX_DEPTH} levels")])
        for child in (value.values() if isinstance(value, dict) else value):
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))


def _parse(text: str) -> tuple[list[Any], dict[Path, int], list[tuple[Path, str]]]:
    """Documents of `text`, the line of each field path (paths start with the document index), and the
    problems found while parsing. Raises SpecError when the text cannot be parsed at all."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") and "\n" not in stripped.rstrip():
        # Fast path for one-line JSON (what metadata carries). Anything else goes through YAML for line numbers.
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            pass  # maybe flow-style YAML: let the YAML parser say
        else:
            if isinstance(data, (dict, list)):
                _check_depth(data, text)
            return [data], {}, []
    conv = _Converter()
    docs: list[Any] = []
    try:
        for index, node in enumerate(yaml.compose_all(text, Loader=yaml.SafeLoader)):
            if node is not None:
                docs.append(conv.convert(node, (index,)))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        msg = f"not valid YAML or JSON: {exc.problem}" + (f" ({exc.context})" if exc.context else "")
        raise SpecError([Problem("", msg, mark.line + 1 if mark else None)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([Problem("", f"not valid YAML or JSON: {exc}")]) from None
    except _TooBig as exc:
        raise SpecError([Problem("", f"document too large: {exc}")]) from None
    except RecursionError:
        raise SpecError([Problem("", f"document too large: nested deeper than {MAX_DEPTH} levels")]) from None
    return docs, conv.lines, conv.problems


# --- plain data to specs ---------------------------------------------------------------------------------------


def _schema_problems(err: jsonschema.ValidationError) -> list[tuple[Path, str]]:
    path: Path = tuple(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = sorted((err.schema.get("properties") or {}).keys())
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return [(path + (k,), f"unknown field{hint}") for k in err.instance if k not in allowed]
    return [_schema_problem(err, path)]


def _schema_problem(err: jsonschema.ValidationError, path: Path) -> tuple[Path, str]:
    """One schema violation in words, naming the field; a long value is described by its size, never printed."""
    v, value = err.validator, err.instance
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return path, f"missing required field '{missing}'"
    if v == "type" and len(path) == 2 and path[0] == "inputs" and isinstance(path[1], int):
        return path, f"must be a key or a range of keys ({{pattern, count}}), not {_json_type(value)}"
    if v == "type" and path == ("inputs",) and isinstance(value, Mapping):
        return path, "must be a list, not a mapping: a range of keys goes in one, [{pattern: ..., count: ...}]"
    if v == "type":
        return path, f"must be {_article(err.validator_value)}, not {_json_type(value)}"
    if v in ("maxItems", "minItems"):
        bound = "at most" if v == "maxItems" else "at least"
        return path, f"has {len(value):,} items; {bound} {err.validator_value:,} are allowed"
    if v in ("maxLength", "minLength"):
        bound = "at most" if v == "maxLength" else "at least"
        return path, f"is {len(value):,} characters long; {bound} {err.validator_value:,} are allowed"
    if v == "pattern":
        return path, f"{shorten(value)} does not match the pattern {err.validator_value}"
    if v == "not" and path and isinstance(value, str):
        return path, f"{shorten(value)} is under the reserved prefix '.gclo/'"
    if v == "oneOf" and path and path[-1] == "priority":
        return path, f"{shorten(value)} is not a priority: use low, normal, high, critical or an integer -1000..1000"
    if v == "uniqueItems":
        return path, "has duplicate items"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "const"):
        return path, f"{shorten(value)} is not allowed here ({v} {shorten(err.validator_value)})"
    return path, clip(err.message)


def _article(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_article(x) for x in t)
    return {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
            "number": "a number", "boolean": "true or false"}.get(t, str(t))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)


def _non_finite(item: Mapping[str, Any]) -> list[tuple[Path, str]]:
    """Infinity and NaN pass JSON Schema's bounds (NaN compares false with everything) but mean nothing as a
    delay, a time-out or an amount of a resource, and JSON cannot carry them."""
    fields: list[tuple[Path, Any]] = [(("timeout_s",), item.get("timeout_s"))]
    for name in ("retry", "resources"):
        group = item.get(name)
        if isinstance(group, dict):
            fields.extend(((name, k), v) for k, v in group.items())
    return [(p, f"must be a finite number, not {v}") for p, v in fields
            if isinstance(v, float) and not math.isfinite(v)]


def _check_one(item: Any, path: Path) -> tuple[ComputationSpec | None, list[tuple[Path, str]]]:
    found: list[tuple[Path, str]] = []
    if not isinstance(item, (dict, abc.Mapping)):  # dict first: the ABC check alone costs more
        return None, [(path, f"a computation must be a mapping, not {_json_type(item)}")]
    inputs_valid = True
    if not _valid(item):
        for err in _validator().iter_errors(item):
            for p, msg in _schema_problems(err):
                inputs_valid = inputs_valid and p[:1] != ("inputs",)
                found.append((path + p, msg))
    found.extend((path + p, msg) for p, msg in _non_finite(item))
    # Key rules beyond the schema ('..', control characters), checked even when other fields are wrong.
    output, inputs = item.get("output"), item.get("inputs")
    if isinstance(output, str) and output and not output.startswith(".gclo/"):
        try:
            check_key(output)
        except InvalidKeyError as exc:
            found.append((path + ("output",), exc.reason))
    keys: tuple[str, ...] = ()
    if isinstance(inputs, (list, tuple)) and inputs_valid:  # a tuple too: a handler may pass ctx.inputs on
        expanded, problems = input_keys(inputs)
        found.extend((path + ("inputs",) + p, msg) for p, msg in problems)
        keys = expanded or ()
        if expanded is not None and isinstance(output, str) and output in expanded:
            found.append((path + ("output",),
                          f"{output!r} is also an input: a computation cannot read its own output"))
    if found:
        return None, found
    declared = item["inputs"]
    spec = ComputationSpec(
        computation=item["computation"],
        inputs=keys,
        output=item["output"],
        handler_type=item["handler_type"],
        priority=priority_value(item.get("priority", 0)),
        params=freeze(item.get("params") or {}),
        retry=freeze(item["retry"]) if "retry" in item else None,
        timeout_s=float(item["timeout_s"]) if "timeout_s" in item else None,
        resources=freeze(item["resources"]) if "resources" in item else None,
        alternatives=freeze(item.get("alternatives", [])),
        notify=tuple(item.get("notify", [])),
        version=str(item["version"]) if "version" in item else None,
        declared_inputs=freeze(declared) if any(type(x) is not str for x in declared) else None,
    )
    return spec, []


def input_keys(inputs: list[Any] | tuple[Any, ...]) -> tuple[tuple[str, ...] | None, list[tuple[Path, str]]]:
    """The exact keys a schema-valid `inputs` list names, in order (each range expanded where it stands), or
    None and the problems (paths relative to `inputs`). The size is checked before anything is expanded, and a
    range's keys are checked by its first and last key: the digits in between cannot break a key rule."""
    total = sum(1 if type(x) is str else x["count"] for x in inputs)
    if total > MAX_INPUTS:
        return None, [((), f"{total:,} keys, more than the {MAX_INPUTS:,} a computation may read")]
    found: list[tuple[Path, str]] = []
    keys: list[str] = []
    for i, x in enumerate(inputs):
        if type(x) is str:
            if len(x) > 1024 or not _PLAIN_KEY.fullmatch(x):
                problem = _key_problem(x)
                if problem is not None:
                    found.append(((i,), problem))
            keys.append(x)
            continue
        expanded, problem = _range_keys(x["pattern"], x["count"], x.get("start", 0))
        if problem is not None:
            found.append(((i, "pattern"), problem))
        else:
            keys.extend(expanded)
    if found:
        return None, found
    if len(inputs) > 1 and len(set(keys)) != len(keys):  # one range alone names each key once
        seen: set[str] = set()
        twice = [k for k in keys if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
        more = f" ({len(twice):,} keys in all are named twice)" if len(twice) > 1 else ""
        return None, [((), f"names {shorten(twice[0])} more than once{more}")]
    return tuple(keys), []


def _key_problem(key: str) -> str | None:
    """Why `key` cannot be an input, in the schema's words for the reserved prefix, or None."""
    if key.startswith(".gclo/"):
        return f"{shorten(key)} is under the reserved prefix '.gclo/'"
    try:
        check_key(key)
    except InvalidKeyError as exc:
        return exc.reason
    return None


def _range_keys(pattern: str, count: int, start: int) -> tuple[list[str], str | None]:
    """The keys of one range, or why there are none."""
    holes = _RANGE_PLACEHOLDER.findall(pattern)
    if len(holes) != 1 or pattern.count("{") != 1 or pattern.count("}") != 1:
        return [], (f"{shorten(pattern)} must hold exactly one placeholder, {{i}} or {{i:05d}} (zero-padded to 5 "
                    "digits), and no other brace")
    head, tail = _RANGE_PLACEHOLDER.split(pattern)[::2]
    number = f"0{holes[0]}d" if holes[0] else "d"
    for n in (start, start + count - 1):  # the first key, and the longest
        key = head + format(n, number) + tail
        try:
            check_key(key)
        except InvalidKeyError as exc:
            return [], f"expands to {shorten(key)}: {exc.reason}"
    return [head + format(n, number) + tail for n in range(start, start + count)], None


def specs_from_data(docs: list[Any], lines: Mapping[Path, int] | None = None,
                    source: str | None = None,
                    parse_problems: Iterable[tuple[Path, str]] = (),
                    max_specs: int = MAX_SPECS) -> tuple[ComputationSpec, ...]:
    """Validate already-parsed documents (each a mapping or a list of mappings) into specs, or raise SpecError."""
    lines = lines or {}
    multi = len(docs) > 1
    problems: list[Problem] = []
    specs: list[ComputationSpec] = []
    seen: dict[str, str] = {}

    def problem(full: Path, message: str) -> None:
        shown = full[1:]
        text = render_path(shown)
        if multi:
            text = f"document {full[0] + 1}" + (f": {text}" if text else "")
        line = None
        for cut in range(len(full), 0, -1):
            if full[:cut] in lines:
                line = lines[full[:cut]]
                break
        problems.append(Problem(text, message, line))

    for p, msg in parse_problems:
        problem(p, msg)
    if not docs:
        problems.append(Problem("", "empty document: expected a computation or a list of computations"))
    for d, doc in enumerate(docs):
        items = doc if isinstance(doc, list) else [doc]
        base: Path = (d,)
        if isinstance(doc, list) and not doc:
            problem(base, "empty list: expected at least one computation")
        for i, item in enumerate(items):
            path = base + ((i,) if isinstance(doc, list) else ())
            spec, found = _check_one(item, path)
            for p, msg in found:
                problem(p, msg)
            if spec is None:
                continue
            where = render_path(path[1:]) or "(document)"
            if spec.computation in seen:
                problem(path + ("computation",), f"{spec.computation!r} is also declared at {seen[spec.computation]}")
                continue
            seen[spec.computation] = where
            specs.append(spec)
    if len(specs) > max_specs:
        problems.append(Problem("", f"{len(specs)} computations in one document; the limit is {max_specs}"))
    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.path))
        raise SpecError(problems, source)
    return tuple(specs)


def load_gcl(text: str | bytes, source: str | None = None, *, sidecar: bool = False) -> tuple[ComputationSpec, ...]:
    """Parse and validate GCL text. Returns the specs in document order, or raises SpecError naming every problem.

    `source` (a file name or object key) is named in the error. `sidecar`: the text is a sidecar written by a
    worker, held to the sidecar bounds (MAX_SIDECAR_BYTES, MAX_EMIT_LIMIT) instead of those for people's files.
    """
    max_bytes, max_specs = (MAX_SIDECAR_BYTES, MAX_EMIT_LIMIT) if sidecar else (MAX_TEXT_BYTES, MAX_SPECS)
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise SpecError([Problem("", f"document too large: {len(text):,} bytes, limit {max_bytes:,}")], source)
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SpecError([Problem("", f"not UTF-8 text ({exc.reason} at byte {exc.start})")], source) from None
    if len(text) > max_bytes:
        raise SpecError([Problem("", f"document too large: more than {max_bytes:,} characters")], source)
    try:
        docs, lines, parse_problems = _parse(text)
    except SpecError as exc:
        raise SpecError(exc.problems, source) from None
    return specs_from_data(docs, lines, source, parse_problems, max_specs)


def spec_from_mapping(fields: Mapping[str, Any], source: str | None = None) -> ComputationSpec:
    """Validate one computation given as a mapping (what `ctx.emit` and rules produce)."""
    return specs_from_data([dict(fields)], None, source)[0]
