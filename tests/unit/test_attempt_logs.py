"""Per-attempt logs: the bounded buffer an attempt writes into, the worker that keeps it under `.gclo/logs/`, the
reader the CLI and the HTTP API share, and `gclo logs`."""
from __future__ import annotations

import io
import logging
import queue
import sys
import threading

import pytest

from gcl_orchestrator import cli, commands
from gcl_orchestrator.errors import TransientStorageError
from gcl_orchestrator.executors import ProcessExecutor, ThreadExecutor
from gcl_orchestrator.gcl import spec_from_mapping
from gcl_orchestrator.interfaces import Task
from gcl_orchestrator.model import ComputationFailed, ComputationSucceeded
from gcl_orchestrator.runtime import HandlerRegistry
from gcl_orchestrator.runtime.attempt_log import HEAD_CHARS, TAIL_CHARS, AttemptLogBuffer
from gcl_orchestrator.runtime.worker import run_task
from gcl_orchestrator.storage import LocalDirectoryStore
from gcl_orchestrator.storage.memory import MemoryObjectStore
from gcl_orchestrator.views.logs import attempts_with_logs, log_key, read_log, tail

# --- the buffer --------------------------------------------------------------------------------------------------


def test_a_short_log_is_kept_whole():
    buffer = AttemptLogBuffer()
    assert not buffer
    buffer.write("one\n")
    buffer.write("two\n")
    assert buffer and buffer.text() == "one\ntwo\n" and buffer.cut == 0


def test_a_long_log_keeps_its_first_and_last_characters_and_says_how_many_were_cut():
    buffer = AttemptLogBuffer()
    total = 0
    for i in range(20_000):  # about 290 KB, in small writes as print makes them
        line = f"line {i:05d}\n"
        buffer.write(line)
        total += len(line)
    text = buffer.text()
    cut = total - HEAD_CHARS - TAIL_CHARS
    assert buffer.cut == cut
    assert text.startswith("line 00000\n") and text.endswith("line 19999\n")
    assert f"[... {cut:,} characters cut here" in text
    head, _, tail_part = text.partition("[... ")
    assert len(head.rstrip("\n")) <= HEAD_CHARS and len(tail_part.partition("\n")[2]) == TAIL_CHARS


def test_the_bounds_hold_for_one_huge_write_and_are_parameters():
    buffer = AttemptLogBuffer(head_chars=10, tail_chars=20)
    buffer.write("a" * 10 + "b" * 1000 + "c" * 20)
    assert buffer.text() == "a" * 10 + "\n[... 1,000 characters cut here: a log keeps its first 10 and its last 20 " \
                            "characters ...]\n" + "c" * 20


def test_log_lines_have_a_time_stamp_a_level_and_a_traceback_when_asked():
    buffer = AttemptLogBuffer()
    buffer.log_call(logging.WARNING, "%d rows skipped", (3,))
    try:
        raise KeyError("col")
    except KeyError:
        buffer.log_call(logging.ERROR, "reading failed", (), exc_info=True)
    lines = buffer.text().splitlines()
    assert lines[0].endswith(" WARNING 3 rows skipped") and lines[0][:4].isdigit() and lines[0][23] == "Z"
    assert " ERROR   reading failed" in lines[1] and "Traceback (most recent call last):" in lines[2]
    assert lines[-1] == "KeyError: 'col'"


# --- the reader --------------------------------------------------------------------------------------------------


def test_log_keys_quote_the_whole_name_so_names_with_slashes_cannot_collide():
    assert log_key("profile:sales", 2) == ".gclo/logs/profile%3Asales/2.log"
    assert log_key("a/b", 1) == ".gclo/logs/a%2Fb/1.log"
    assert log_key("a", 1) != log_key("a/1.log", 1)


def test_the_reader_lists_only_attempt_logs_of_that_computation_and_reads_the_latest_by_default():
    store = MemoryObjectStore()
    assert attempts_with_logs(store, "a") == [] and read_log(store, "a") is None
    for attempt in (2, 10, 1):
        store.put(log_key("a", attempt), f"attempt {attempt}\n".encode())
    store.put(log_key("a/b", 7), b"another computation")  # under .gclo/logs/a%2Fb/, not a's
    store.put(".gclo/logs/a/notes.txt", b"x")
    store.put(".gclo/logs/a/3.log/deeper", b"x")
    store.put(".gclo/logs/a/04.log", b"x")
    assert attempts_with_logs(store, "a") == [1, 2, 10]
    assert read_log(store, "a") == (10, "attempt 10\n")
    assert read_log(store, "a", 2) == (2, "attempt 2\n")
    assert read_log(store, "a", 5) is None
    assert read_log(store, "a/b") == (7, "another computation")


def test_tail_keeps_the_last_lines():
    text = "".join(f"{i}\n" for i in range(100))
    assert tail(text, 3) == "97\n98\n99\n"
    assert tail("a\nb", 1) == "b" and tail("a\nb\n", 5) == "a\nb\n" and tail(text, 0) == ""
    assert tail(text) == "".join(f"{i}\n" for i in range(50, 100))


# --- the worker --------------------------------------------------------------------------------------------------

def noisy(ctx):
    print(f"printed by {ctx.computation}")
    print("on stderr", file=sys.stderr)
    ctx.log.info("logged %d", ctx.attempt)
    ctx.log.debug("not kept unless the logger is at DEBUG")
    raise ValueError("the handler failed")


def silent(ctx):
    return b"ok"


def says_hello(ctx):
    ctx.log.warning("hello from %s", ctx.computation)
    return b"ok"


_barrier = threading.Barrier(2)


def interleaved(ctx):
    _barrier.wait(10)  # both attempts print at the same time
    for i in range(200):
        print(f"{ctx.computation} {i}")
    return b"ok"


def _registry() -> HandlerRegistry:
    registry = HandlerRegistry()
    for fn in (noisy, silent, says_hello, interleaved):
        registry.register(fn.__name__, fn)
    return registry


class CountingStore(MemoryObjectStore):
    """Counts its requests (as the S3 store does), and can be told to refuse writes under a prefix."""

    def __init__(self, refuse: str | None = None):
        super().__init__()
        self.requests = 0
        self.refuse = refuse

    def request_count(self):
        return self.requests

    def get(self, key):
        self.requests += 1
        return super().get(key)

    def put(self, key, body, metadata=None):
        self.requests += 1
        if self.refuse and key.startswith(self.refuse):
            raise TransientStorageError(f"the server refused {key!r}")
        return super().put(key, body, metadata)

    def create(self, key, body, metadata=None):
        self.requests += 1
        return super().create(key, body, metadata)


def _task(store, name, handler_type, attempt=1):
    spec = spec_from_mapping({"computation": name, "handler_type": handler_type, "inputs": ["in.txt"],
                              "output": f"out/{name}"})
    return Task(spec, attempt, store.uri)


@pytest.fixture
def store():
    s = CountingStore()
    s.put("in.txt", b"hello")
    return s


def test_an_attempt_that_logs_prints_and_raises_leaves_all_of_it_with_the_traceback_in_its_log(store, capsys):
    outcome = run_task(_task(store, "x/1", "noisy", attempt=3), _registry(), store)
    assert isinstance(outcome, ComputationFailed)
    found = read_log(store, "x/1")
    assert found is not None and found[0] == 3
    text = found[1]
    assert "printed by x/1\n" in text and "on stderr\n" in text
    assert " INFO    logged 3\n" in text and "not kept" not in text
    assert " ERROR   the attempt failed: ValueError: the handler failed (at test_attempt_logs.py:" in text
    assert "Traceback (most recent call last):" in text and 'raise ValueError("the handler failed")' in text
    assert text.rstrip().endswith("ValueError: the handler failed")
    assert store.get(log_key("x/1", 3)).info.metadata == {"content-type": "text/plain; charset=utf-8"}
    assert "printed by x/1" in capsys.readouterr().out  # still printed where it went before


def test_a_silent_successful_attempt_writes_no_log_and_one_that_logs_counts_the_write(store):
    silent_outcome = run_task(_task(store, "quiet", "silent"), _registry(), store)
    assert isinstance(silent_outcome, ComputationSucceeded)
    assert list(store.list(".gclo/logs/")) == []
    talking = run_task(_task(store, "talks", "says_hello"), _registry(), store)
    assert isinstance(talking, ComputationSucceeded)
    assert talking.requests == silent_outcome.requests + 1  # its log, one PUT
    assert " WARNING hello from talks\n" in read_log(store, "talks")[1]


def test_a_log_that_cannot_be_written_is_a_warning_naming_the_key_and_the_outcome_stands(caplog):
    store = CountingStore(refuse=".gclo/logs/")
    store.put("in.txt", b"hello")
    with caplog.at_level(logging.WARNING, logger="gclo.worker"):
        outcome = run_task(_task(store, "talks", "says_hello"), _registry(), store)
    assert isinstance(outcome, ComputationSucceeded)
    assert store.get("out/talks").body == b"ok"
    assert "could not write the log of attempt talks #1 to '.gclo/logs/talks/1.log'" in caplog.text


def test_a_ctx_log_line_that_a_logging_handler_also_prints_to_stderr_is_recorded_once(store):
    run_task(_task(store, "first", "silent"), _registry(), store)  # stdout and stderr are captured from here on
    printer = logging.StreamHandler()  # writes to sys.stderr as it is now: the capturing stream
    logger = logging.getLogger("gclo.handler")
    logger.addHandler(printer)
    try:
        run_task(_task(store, "talks", "says_hello"), _registry(), store)
    finally:
        logger.removeHandler(printer)
    assert read_log(store, "talks")[1].count("hello from talks") == 1


def test_threads_running_attempts_side_by_side_each_keep_only_their_own_output(store):
    # two attempts run in threads of one process (the thread executor), printing at the same time
    ex = ThreadExecutor(2, _registry(), store)
    outcomes = []
    ex.start(outcomes.append)
    try:
        for name in ("left", "right"):
            spec = spec_from_mapping({"computation": name, "handler_type": "interleaved", "inputs": ["in.txt"],
                                      "output": f"out/{name}"})
            ex.submit(Task(spec, 1, store.uri))
    finally:
        ex.stop(grace_s=10)
    assert len(outcomes) == 2 and all(isinstance(o, ComputationSucceeded) for o in outcomes)
    for name, other in (("left", "right"), ("right", "left")):
        text = read_log(store, name)[1]
        assert text.count(f"{name} ") == 200 and other not in text


# --- gclo logs ---------------------------------------------------------------------------------------------------


def test_gclo_logs_prints_the_latest_or_the_asked_attempt_under_a_header_and_fails_clearly_without_one(
        tmp_path, capsys):
    store = LocalDirectoryStore(tmp_path / "bucket")
    store.put(log_key("report:a/b", 1), b"first\n")
    store.put(log_key("report:a/b", 2), b"second")
    root = str(tmp_path / "bucket")

    out = io.StringIO()
    assert commands.logs(root, "report:a/b", out=out) == 0
    assert out.getvalue() == ("# log of computation 'report:a/b', attempt 2 (.gclo/logs/report%3Aa%2Fb/2.log; "
                              "attempts with a log: 1, 2)\nsecond\n")
    out = io.StringIO()
    assert commands.logs(root, "report:a/b", 1, out=out) == 0
    assert out.getvalue() == "# log of computation 'report:a/b', attempt 1 (.gclo/logs/report%3Aa%2Fb/1.log)\nfirst\n"
    assert cli.main(["logs", "report:a/b", "--attempt", "1", "--store", root]) == 0

    assert cli.main(["logs", "report:a/b", "--attempt", "5", "--store", root]) == 1
    err = capsys.readouterr().err
    assert "no log for attempt 5 of computation 'report:a/b' in" in err and "attempts with a log: 1, 2" in err
    assert cli.main(["logs", "never-ran", "--store", root]) == 1
    err = capsys.readouterr().err
    assert err.startswith("no log for computation 'never-ran' in ") and "has not run there" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["logs", "x", "--attempt", "0", "--store", root]) == 2
    assert "--attempt counts from 1" in capsys.readouterr().err


def test_gclo_logs_help_says_what_a_log_holds(capsys):
    with pytest.raises(SystemExit) as ended:
        cli.main(["logs", "--help"])
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert "usage: gclo logs" in out and "--attempt N" in out and "traceback" in out and "--store" in out


def test_a_worker_process_keeps_the_output_of_every_thread_of_the_attempt_in_its_log(tmp_path):
    handlers = tmp_path / "threads.py"
    handlers.write_text(
        "import sys, threading\n"
        "from gcl_orchestrator import handler\n\n"
        "@handler('spawns')\n"
        "def spawns(ctx):\n"
        "    t = threading.Thread(target=lambda: print('from a thread of the handler'))\n"
        "    t.start()\n"
        "    t.join()\n"
        "    print('from the handler', file=sys.stderr)\n"
        "    raise KeyError('missing')\n")
    store = LocalDirectoryStore(tmp_path / "store")
    store.put("in.txt", b"hello")
    outcomes: queue.Queue = queue.Queue()
    ex = ProcessExecutor(1, (str(handlers),), store.uri)
    ex.start(outcomes.put)
    try:
        ex.submit(_task(store, "spawner", "spawns"))
        outcome = outcomes.get(timeout=30)
    finally:
        ex.stop()
    assert isinstance(outcome, ComputationFailed)
    text = read_log(store, "spawner")[1]
    assert "from a thread of the handler\n" in text and "from the handler\n" in text
    assert "File \"" + str(handlers) + "\", line 10, in spawns" in text and text.rstrip().endswith("KeyError: 'missing'")
