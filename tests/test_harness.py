"""The test harness's own promises, where breaking them would make other tests pass or fail for nothing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

import tests.support
from tests.support import ROOT, BotLauncher, BotProcess, free_port, http, stop_the_rest


class _NotTheBot(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_bot_whose_port_another_server_took_starts_elsewhere_not_on_the_others_answer(
        bot_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Parallel workers pick free ports at once: one picked, then taken by another worker's server before the
    bot bound it, must not pass for the bot because something answered there."""
    squatter = HTTPServer(("127.0.0.1", 0), _NotTheBot)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    taken = squatter.server_address[1]

    def ports() -> Iterator[int]:
        yield taken
        while True:
            yield free_port()
    picks = ports()
    monkeypatch.setattr(tests.support, "free_port", lambda: next(picks))
    process = BotProcess(bot_env, tmp_path / "bot.log")
    try:
        assert process.port != taken
        assert http("GET", f"{process.url}/healthz")[0] == 200
    finally:
        process.stop()
        squatter.shutdown()


def test_a_forked_bot_ends_as_the_same_bot_started_afresh_would(bot_env: dict[str, str], tmp_path: Path):
    """The tests fork bots from a process that has imported the bot (tests/bot_launcher.py): what a test reads
    of the process (its exit code, what it said, a signal's end) must be what `python -m bot serve` gives."""
    broken = {**bot_env, "BOT_CONFIG": str(tmp_path / "missing.yaml")}
    ends = {}
    for start in ("exec", "fork"):
        log = tmp_path / f"{start}.log"
        with pytest.raises(RuntimeError, match="exited with 2 before it listened"):
            BotProcess(broken, log, start=start)
        ends[start] = [line for line in log.read_text().splitlines() if line.startswith("erp-chatops:")]
    assert ends["fork"] == ends["exec"] and ends["fork"][0].startswith("erp-chatops: cannot start:")
    for start in ("exec", "fork"):
        process = BotProcess(bot_env, tmp_path / f"{start}-killed.log", start=start)
        process.proc.kill()
        assert process.proc.wait(10) == -9, start
        assert process.stop() == -9


def test_a_bot_whose_port_is_taken_says_so_in_one_line_forked_or_not(bot_env: dict[str, str], tmp_path: Path):
    """A port another process holds ends the bot with one line saying so and exit code 2, as a bad config
    does (not a traceback and an unclosed Slack session); a forked bot ends exactly as `python -m bot serve`."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, **bot_env, "PORT": str(port), "METRICS_PORT": str(free_port())}
        argv = ["serve", "--host", "127.0.0.1"]
        ends = {}
        for start in ("exec", "fork"):
            log = tmp_path / f"{start}.log"
            if start == "fork":
                proc: Any = BotLauncher.shared().start(argv, env, log)
            else:
                with log.open("w") as out:
                    proc = subprocess.Popen([sys.executable, "-m", "bot", *argv], env=env, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT)
            code = proc.wait(30)
            # what it said, but the times that differ from one run to the next
            ends[start] = (code, re.sub(r'"time": "[^"]*"', "", log.read_text()).splitlines())
    assert ends["fork"] == ends["exec"], ends
    code, said = ends["fork"]
    assert code == 2 and said[-2] == f"erp-chatops: cannot start: cannot listen on 127.0.0.1:{port}: address already in use"
    assert not [line for line in said if "Traceback" in line or "Unclosed" in line], said


def test_a_bot_outlives_its_launcher_and_still_stops(bot_env: dict[str, str], tmp_path: Path):
    """Should the launcher die, a test's stop() must still end its bot (never an orphan left running) and say
    that its exit code was lost; the next bot gets a new launcher."""
    stop_the_rest()  # earlier tests' bots, still ending: their ends read while the launcher can report them
    process = BotProcess(bot_env, tmp_path / "orphan.log")
    launcher = BotLauncher.shared()
    launcher.proc.kill()
    launcher.proc.wait(10)
    with pytest.raises(RuntimeError, match="with a code nobody saw"):
        process.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(process.proc.pid, 0)
    again = BotProcess(bot_env, tmp_path / "again.log")
    assert BotLauncher.shared() is not launcher
    assert again.stop() == 0


def test_bots_told_to_stop_soon_are_all_ended_even_when_the_launcher_died(bot_env: dict[str, str], tmp_path: Path):
    """stop_soon() leaves the wait to the run's end (stop_the_rest): a bot whose exit report died with its
    launcher must not stop the others from being waited for, nor the session's servers from stopping."""
    first, second = (BotProcess(bot_env, tmp_path / f"{n}.log") for n in ("first", "second"))
    first.stop_soon()
    second.stop_soon()
    launcher = BotLauncher.shared()
    launcher.proc.kill()
    launcher.proc.wait(10)
    stop_the_rest()
    for bot in (first, second):
        with pytest.raises(ProcessLookupError):
            os.kill(bot.proc.pid, 0)


def test_a_bot_that_logs_only_warnings_still_starts(bot_env: dict[str, str], tmp_path: Path):
    """The bench runs its bots at LOG_LEVEL=WARNING, where `listening on ...` is not logged: the harness must
    not wait for that line then (it waited 20 s and gave up, and `make bench` failed)."""
    process = BotProcess({**bot_env, "LOG_LEVEL": "WARNING"}, tmp_path / "quiet.log", start="exec")
    try:
        assert http("GET", f"{process.url}/healthz")[0] == 200
    finally:
        process.stop()
