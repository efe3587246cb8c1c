"""Rules for plain files: key globs mapped to GCL templates, so an object dropped without metadata starts a
pipeline. Placeholders are {key}, {name}, {stem}, {parent}, and {stem_id} and {key_id}, which are always
valid in a computation name; substitution is plain text replacement, never code.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from ..errors import RulesError, SpecError
from ..model import ComputationSpec
from .loader import specs_from_data

PLACEHOLDERS = ("key", "name", "stem", "parent", "stem_id", "key_id")
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.:@/+=-]")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_]*)\}")


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """`*` and `?` stay inside one path segment, `**` crosses segments (`a/**/b` also matches `a/b`)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out += re.escape(c)
                i += 1
            else:
                body = pattern[i + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out += f"[{body}]"
                i = end + 1
        else:
            out += re.escape(c)
            i += 1
    return re.compile(out + r"\Z")


def name_id(text: str) -> str:
    """`text` as it may appear in a computation name: unchanged when it only has letters, digits and
    `_ . : @ / + = -`; otherwise every other character becomes `_` and a short hash of the original is added,
    so that two keys that differ only there still get two names."""
    if not _NOT_IN_NAMES.search(text):
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{_NOT_IN_NAMES.sub('_', text)}-{digest}"


def key_values(key: str) -> dict[str, str]:
    """The placeholders for `key`: `incoming/a.b.csv` has name `a.b.csv`, stem `a.b` (the name without its last
    suffix), parent `incoming`."""
    name = posixpath.basename(key)
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return {"key": key, "name": name, "stem": stem, "parent": posixpath.dirname(key), "stem_id": name_id(stem),
            "key_id": name_id(key)}


RANGE_PLACEHOLDER = "i"  # `{i}` belongs to a range of keys in `inputs`: left for it to expand


def _render(template: Any, values: Mapping[str, str]) -> Any:
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: m.group(0) if m.group(1) == RANGE_PLACEHOLDER else values[m.group(1)],
                                template)
    if isinstance(template, Mapping):
        return {_render(k, values): _render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [_render(v, values) for v in template]
    return template


def _placeholders(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(_placeholders(k) | _placeholders(v) for k, v in template.items())) if template else set()
    if isinstance(template, list):
        return set().union(*(_placeholders(v) for v in template)) if template else set()
    return set()


@dataclass(frozen=True)
class Rule:
    match: str
    regex: re.Pattern[str]
    template: Any  # a mapping or list of mappings with placeholders


class RuleSet:
    """Ordered rules; every rule whose glob matches a key contributes its computations."""

    def __init__(self, rules: tuple[Rule, ...] = (), source: str = "rules"):
        self.rules = rules
        self.source = source

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __add__(self, other: "RuleSet") -> "RuleSet":
        return RuleSet(self.rules + other.rules, f"{self.source}+{other.source}")

    @classmethod
    def parse(cls, text: str, source: str = "rules") -> "RuleSet":
        """Parse a rules document; every template is checked now by rendering it for a sample key."""
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise RulesError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(data, Mapping) or not isinstance(data.get("rules"), list):
            raise RulesError(f"{source}: expected a mapping with a 'rules' list")
        extra = set(data) - {"rules"}
        if extra:
            raise RulesError(f"{source}: unknown top-level field(s) {', '.join(sorted(map(str, extra)))}")
        rules = []
        for i, entry in enumerate(data["rules"]):
            where = f"{source}: rules[{i}]"
            if not isinstance(entry, Mapping) or set(entry) != {"match", "gcl"}:
                raise RulesError(f"{where}: each rule needs exactly the fields 'match' (a key glob) and 'gcl'")
            if not isinstance(entry["match"], str) or not entry["match"]:
                raise RulesError(f"{where}.match: must be a non-empty glob string")
            template = entry["gcl"]
            unknown = _placeholders(template) - set(PLACEHOLDERS) - {RANGE_PLACEHOLDER}
            if unknown:
                raise RulesError(f"{where}.gcl: unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))}"
                                 f" (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})")
            rule = Rule(entry["match"], glob_to_regex(entry["match"]), template)
            try:
                _expand(rule, "sample/dir/sample.csv", where)
            except SpecError as exc:
                raise RulesError(f"{where}.gcl: template is not valid GCL: {exc.one_line()}") from None
            rules.append(rule)
        return cls(tuple(rules), source)

    def specs_for(self, key: str) -> tuple[ComputationSpec, ...]:
        """Specs of every matching rule for `key`, rendered and validated (SpecError names the rule)."""
        out: list[ComputationSpec] = []
        for i, rule in enumerate(self.rules):
            if rule.regex.match(key):
                out.extend(_expand(rule, key, f"{self.source}: rules[{i}] for {key!r}"))
        return tuple(out)


def _expand(rule: Rule, key: str, where: str) -> tuple[ComputationSpec, ...]:
    rendered = _render(rule.template, key_values(key))
    return specs_from_data([rendered], None, where)
