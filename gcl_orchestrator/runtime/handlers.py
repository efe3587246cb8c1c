"""Handler registration: `@handler("type")` tags a function; a HandlerRegistry instance is built from
`--handlers` sources (file paths or module names), in the orchestrator and again in each worker process.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..errors import HandlerLoadError

F = TypeVar("F", bound=Callable[..., Any])
_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ATTR = "__gcl_handler_types__"


def handler(handler_type: str) -> Callable[[F], F]:
    """Register the decorated function `fn(ctx)` as the handler for `handler_type`.

    Only marks the function: nothing global changes, and the registry that runs it is built from the module.
    """
    if not isinstance(handler_type, str) or not _TYPE.match(handler_type):
        raise HandlerLoadError(f"handler type {handler_type!r} must match {_TYPE.pattern}")

    def mark(fn: F) -> F:
        if not callable(fn):
            raise HandlerLoadError(f"@handler({handler_type!r}) must decorate a function")
        setattr(fn, _ATTR, getattr(fn, _ATTR, ()) + (handler_type,))
        return fn

    return mark


class HandlerRegistry:
    """Handler type -> function, with where each came from (for error messages)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._origins: dict[str, str] = {}

    def register(self, handler_type: str, fn: Callable[[Any], Any], origin: str = "") -> None:
        if handler_type in self._handlers and self._handlers[handler_type] is not fn:
            raise HandlerLoadError(f"handler type {handler_type!r} is registered twice: by "
                                   f"{self._origins[handler_type]} and by {origin or fn.__qualname__}")
        self._handlers[handler_type] = fn
        self._origins[handler_type] = origin or getattr(fn, "__qualname__", repr(fn))

    def get(self, handler_type: str) -> Callable[[Any], Any] | None:
        return self._handlers.get(handler_type)

    def __contains__(self, handler_type: object) -> bool:
        return handler_type in self._handlers

    def types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def origin(self, handler_type: str) -> str:
        return self._origins.get(handler_type, "")

    @classmethod
    def from_sources(cls, sources: Iterable[str]) -> "HandlerRegistry":
        """Import every source and register its tagged functions. Raises HandlerLoadError naming the source."""
        registry = cls()
        for source in sources:
            module = import_source(source)
            found = 0
            for name, obj in vars(module).items():
                for handler_type in getattr(obj, _ATTR, ()) if callable(obj) else ():
                    if getattr(obj, "__module__", None) != module.__name__:
                        continue  # imported from elsewhere: registered by its own module
                    registry.register(handler_type, obj, f"{source}:{name}")
                    found += 1
            if not found:
                raise HandlerLoadError(f"no @handler functions found in {source}")
        return registry


def import_source(source: str) -> Any:
    """A handler source is a path to a .py file or an importable module name."""
    path = Path(source)
    try:
        if source.endswith(".py") or path.exists():
            if not path.is_file():
                raise HandlerLoadError(f"handler file {source} does not exist")
            resolved = path.resolve()
            digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
            name = f"gclo_handlers_{re.sub(r'[^A-Za-z0-9_]', '_', resolved.stem)}_{digest}"
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, resolved)
            if spec is None or spec.loader is None:
                raise HandlerLoadError(f"cannot load handler file {source}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
            return module
        return importlib.import_module(source)
    except HandlerLoadError:
        raise
    except ModuleNotFoundError as exc:
        raise HandlerLoadError(f"cannot import handlers {source!r}: {exc} "
                               "(give a .py file path or an importable module name)") from None
    except Exception as exc:  # the user's module failed while importing: say where
        raise HandlerLoadError(f"cannot load handlers from {source}: {describe_exception(exc)}") from None


def describe_exception(exc: BaseException) -> str:
    """`Type: message (at file:line in function)`, pointing at the innermost frame."""
    text = f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def handler_signature_ok(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind(object())
        return True
    except (TypeError, ValueError):
        return False
