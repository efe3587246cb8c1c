"""Views of the graph for people and tools: the status document, the graph export and the attempts' logs, for the
CLI (and the HTTP API and page to come). They read the core and the store; nothing here changes the graph."""
from .graph import DEFAULT_LIMIT, render_graph, select
from .lineage import lineage_lines
from .logs import attempts_with_logs, log_key, read_log, tail
from .status import STATUS_KEY, build_status, read_status, render_status, write_status

__all__ = ["STATUS_KEY", "build_status", "read_status", "render_status", "write_status", "render_graph", "select", "DEFAULT_LIMIT",
           "lineage_lines", "attempts_with_logs", "log_key", "read_log", "tail"]
