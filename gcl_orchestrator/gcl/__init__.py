"""The Graph Construction Language: schema, loader, metadata codec and rules for plain files."""
from .follow import what_follows
from .loader import load_gcl, schema, spec_from_mapping, specs_from_data
from .metadata import EncodedGcl, GclReference, encode_gcl, read_gcl_fields, specs_to_text
from .rules import RuleSet

__all__ = ["load_gcl", "schema", "spec_from_mapping", "specs_from_data", "EncodedGcl", "GclReference",
           "encode_gcl", "read_gcl_fields", "specs_to_text", "RuleSet", "what_follows"]
