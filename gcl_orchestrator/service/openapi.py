"""The API's OpenAPI 3.0 document, served at /openapi.json and checked against the running API in the tests."""
from __future__ import annotations

from typing import Any

from .. import __version__
from ..model import State

STATES = [s.value for s in State]

_ERROR = {"type": "object", "required": ["error"], "properties": {
    "error": {"type": "string"}, "problems": {"type": "array", "items": {"type": "string"}}}}
_COMPUTATION = {"type": "object", "required": ["computation", "state", "handler_type", "inputs", "output", "attempts"],
                "properties": {
                    "computation": {"type": "string"}, "state": {"type": "string", "enum": STATES},
                    "handler_type": {"type": "string"}, "priority": {"type": "integer"},
                    "inputs": {"type": "array", "items": {"type": "string"}},
                    "inputs_count": {"type": "integer"}, "output": {"type": "string"},
                    "source": {"type": "string"}, "attempts": {"type": "integer", "minimum": 0},
                    "last_error": {"type": "string"}, "errors": {"type": "array", "items": {"type": "string"}},
                    "missing": {"type": "array", "items": {"type": "string"}},
                    "cancelled": {"type": "boolean"}}}
_DETAIL = {"allOf": [_COMPUTATION, {"type": "object", "required": ["spec", "times", "attempt_logs"], "properties": {
    "spec": {"type": "object"},
    "times": {"type": "object", "properties": {k: {"type": ["number", "null"]} for k in
                                               ("registered", "ready", "started", "finished")}},
    "running_attempt": {"type": ["integer", "null"]},
    "attempt_logs": {"type": "array", "items": {"type": "integer"}},
    "log_tail": {"type": ["string", "null"]},
    "lineage": {"type": "array", "items": {"type": "string"}}}}]}
_STATE_PARAM = {"name": "state", "in": "query", "schema": {"type": "string", "enum": STATES},
                "description": "only computations in this state"}
_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
               "description": "a computation, or a key (then the computation that produces it)"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    words = {400: "bad request: every problem listed", 401: "no token, or a wrong one",
             404: "no such computation", 409: "not possible in its state", 413: "the body is too large",
             503: "the orchestrator did not answer in time"}
    return {str(c): _json(_ERROR, words[c]) for c in codes}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "gcl-orchestrator", "version": __version__,
                 "description": "Submit GCL, watch and steer the graph of one running orchestrator."},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/status": {"get": {"summary": "counts by state, the orchestrator, the last event id", "responses": {
                "200": _json({"type": "object", "required": ["counts", "computations", "last_event_id"]}, "status"),
                **_errors(401, 503)}}},
            "/v1/specs": {"post": {
                "summary": "submit a GCL document; nothing is registered unless all of it can be",
                "requestBody": {"required": True, "content": {
                    "application/yaml": {"schema": {"type": "string"}},
                    "application/json": {"schema": {}}}},
                "responses": {
                    "202": _json({"type": "object", "required": ["source", "computations"], "properties": {
                        "source": {"type": "string"},
                        "computations": {"type": "array", "items": {
                            "type": "object", "required": ["computation", "state"]}}}},
                        "accepted: each computation's state, and the object that keeps the submission"),
                    **_errors(400, 401, 413, 503)}}},
            "/v1/computations": {"get": {
                "summary": "computations, in registration order, a page at a time",
                "parameters": [_STATE_PARAM,
                               {"name": "handler_type", "in": "query", "schema": {"type": "string"}},
                               {"name": "prefix", "in": "query", "schema": {"type": "string"}},
                               {"name": "limit", "in": "query",
                                "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                               {"name": "cursor", "in": "query", "schema": {"type": "integer", "minimum": 0}}],
                "responses": {"200": _json({"type": "object", "required": ["computations", "next_cursor", "total"],
                                            "properties": {
                                                "computations": {"type": "array", "items": _COMPUTATION},
                                                "next_cursor": {"type": ["integer", "null"]},
                                                "total": {"type": "integer"}}}, "a page"),
                              **_errors(400, 401, 503)}}},
            "/v1/computations/{name}": {"get": {
                "summary": "one computation: spec, state, attempts and errors, times, log tail, lineage",
                "parameters": [_NAME_PARAM],
                "responses": {"200": _json(_DETAIL, "the computation"), **_errors(401, 404, 503)}}},
            "/v1/computations/{name}/cancel": {"post": {
                "summary": "stop it: a running attempt is cancelled, it fails as cancelled, its dependents "
                           "upstream-failed",
                "parameters": [_NAME_PARAM],
                "responses": {"200": _json({"type": "object", "required": ["computation", "state"]}, "cancelled"),
                              **_errors(401, 404, 409, 503)}}},
            "/v1/computations/{name}/rerun": {"post": {
                "summary": "run it again (and everything downstream with downstream=true)",
                "parameters": [_NAME_PARAM, {"name": "downstream", "in": "query",
                                             "schema": {"type": "string", "enum": ["true", "false"]}}],
                "responses": {"202": _json({"type": "object", "required": ["computation", "state"]}, "asked"),
                              **_errors(401, 404, 503)}}},
            "/v1/graph": {"get": {
                "summary": "the graph as JSON, DOT or Mermaid, with the filters of gclo graph",
                "parameters": [{"name": "format", "in": "query",
                                "schema": {"type": "string", "enum": ["json", "dot", "mermaid"]}},
                               _STATE_PARAM,
                               {"name": "around", "in": "query", "schema": {"type": "string"}},
                               {"name": "limit", "in": "query",
                                "schema": {"type": "integer", "minimum": 0, "maximum": 1000000}}],
                "responses": {"200": {"description": "the graph", "content": {
                    "application/json": {"schema": {"type": "object", "required": ["nodes", "edges"]}},
                    "text/plain": {"schema": {"type": "string"}}}}, **_errors(400, 401, 503)}}},
            "/v1/events": {"get": {
                "summary": "server-sent events: `states` messages, each a JSON array of up to 1,000 state "
                           "changes; resumable with Last-Event-ID",
                "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "an endless event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_errors(401)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401, 503)}}},
        },
    }
