"""Handler registration: `@handler("type")` tags a function; a HandlerRegistry instance is built from
`--handlers` sources (file paths or module names), in the orchestrator and again in each worker process.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import importlib.util
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..errors import HandlerLoadError

F = TypeVar("F", bound=Callable[..., Any])
_TYPE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ATTR = "__gcl_handler_types__"
_COMPLETION_ATTR = "__gcl_completion_types__"


def _marker(attr: str, what: str) -> Callable[[str], Callable[[F], F]]:
    def decorator(handler_type: str) -> Callable[[F], F]:
        if not isinstance(handler_type, str) or not _TYPE.match(handler_type):
            raise HandlerLoadError(f"handler type {handler_type!r} must match {_TYPE.pattern}")

        def mark(fn: F) -> F:
            if not callable(fn):
                raise HandlerLoadError(f"@{what}({handler_type!r}) must decorate a function")
            setattr(fn, attr, getattr(fn, attr, ()) + (handler_type,))
            return fn

        return mark

    return decorator


class _HandlerDecorator:
    """`@handler("type")` registers `fn(ctx)` as the handler for a type; `@handler.on_complete("type")`
    registers `fn(completion)`, called when a computation that names the type in `notify` (or whose emitting
    handler asked through `ctx.notify_on_completion()`) ends. Both only mark the function: nothing global
    changes, and the registry that runs it is built from the module."""

    def __init__(self) -> None:
        self._handler = _marker(_ATTR, "handler")
        self.on_complete = _marker(_COMPLETION_ATTR, "handler.on_complete")

    def __call__(self, handler_type: str) -> Callable[[F], F]:
        return self._handler(handler_type)


handler = _HandlerDecorator()


class HandlerRegistry:
    """Handler type -> function, with where each came from (for error messages)."""

    def __init__(self) -> None:
        self._handlers: dict[str, Callable[[Any], Any]] = {}
        self._origins: dict[str, str] = {}
        self._completion: dict[str, Callable[[Any], Any]] = {}

    def register_completion(self, handler_type: str, fn: Callable[[Any], Any], origin: str = "") -> None:
        if handler_type in self._completion and self._completion[handler_type] is not fn:
            raise HandlerLoadError(f"completion handler for {handler_type!r} is registered twice "
                                   f"(second: {origin or fn.__qualname__})")
        self._completion[handler_type] = fn

    def completion(self, handler_type: str) -> Callable[[Any], Any] | None:
        return self._completion.get(handler_type)

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
                if not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
                    continue  # imported from elsewhere: registered by its own module
                for handler_type in getattr(obj, _ATTR, ()):
                    registry.register(handler_type, obj, f"{source}:{name}")
                    found += 1
                for handler_type in getattr(obj, _COMPLETION_ATTR, ()):
                    registry.register_completion(handler_type, obj, f"{source}:{name}")
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


_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent) + os.sep


def describe_exception(exc: BaseException, handler_file: str | None = None) -> str:
    """`Type: message (at file:line in function)`, the message cut to a bounded length. The line named is the
    handler's own: the innermost frame in `handler_file` when given, else the innermost one outside this
    package (an error raised by `ctx.read_json` points at the handler line that called it)."""
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > 1000:
        text = text[:1000] + f"... ({len(text):,} characters)"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        mine = [f for f in frames if handler_file and f.filename == handler_file]
        outside = [f for f in frames if not str(Path(f.filename).resolve()).startswith(_PACKAGE_DIR)]
        where = (mine or outside or frames)[-1]
        text += f" (at {Path(where.filename).name}:{where.lineno} in {where.name})"
    return text
