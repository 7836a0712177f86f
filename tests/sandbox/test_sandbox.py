"""`python -m bot sandbox` as a new user runs it: one command, then the page answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.support import ROOT, free_port, http, wait_for_http


def test_sandbox_starts_answers_help_and_stops_cleanly(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "BOT_"))}
    env["PORT"] = str(port)
    log = (tmp_path / "sandbox.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "sandbox"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", timeout=90, proc=proc)
        status, page, _ = http("GET", f"http://127.0.0.1:{port}/")
        assert status == 200 and "erp-chatops sandbox" in page
        body = json.dumps({"user": "U0DEV1", "channel": "C0DEV", "text": "/erp help deploy"}).encode()
        deadline = time.monotonic() + 20
        while True:  # the bot starts right after the page; give it a moment
            status, reply, _ = http("POST", f"http://127.0.0.1:{port}/ui/command", body,
                                    {"Content-Type": "application/json"})
            if json.loads(reply).get("ok") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert json.loads(reply) == {"ok": True, "status": 200}
        state = json.loads(http("GET", f"http://127.0.0.1:{port}/ui/state?user=U0DEV1")[1])
        [answer] = [m for m in state["messages"] if m["ephemeral"]]
        assert "/erp deploy employee prod" in json.dumps(answer["blocks"])
        # another person does not see Dana's ephemeral answer
        other = json.loads(http("GET", f"http://127.0.0.1:{port}/ui/state?user=U0APPR1")[1])
        assert other["messages"] == []
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        log.close()
    assert code == 0, (tmp_path / "sandbox.log").read_text()[-2000:]


def test_the_page_shows_every_emoji_the_bot_writes():
    """The page draws `:code:` as Slack does; one it does not know shows as raw text (the lock, freeze and
    promotion lines did, until this test read every code the bot and the buildspec write)."""
    import re

    page = (ROOT / "sandbox" / "static" / "index.html").read_text()
    known = set(re.findall(r"([a-z0-9_+-]+):\"", re.search(r"const EMOJI = \{(.*?)\};", page, re.S).group(1)))
    sources = [*(ROOT / "bot").rglob("*.py"), *(ROOT / "handlers").rglob("*.py"), ROOT / "buildspec.yml"]
    written = {code for path in sources for code in re.findall(r"(?<![\w:]):([a-z0-9_+-]+):(?![\w/])", path.read_text())
               if not code.isdigit()}
    assert written - known == set()
