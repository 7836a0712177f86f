"""The test harness's own promises, where breaking them would make other tests pass or fail for nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

import tests.support
from tests.support import BotProcess, free_port, http


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
