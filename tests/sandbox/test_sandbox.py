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
    env["TMPDIR"] = str(tmp_path / "tmp")  # what the sandbox leaves behind in the temp folder, if anything
    (tmp_path / "tmp").mkdir()
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
    assert list((tmp_path / "tmp").iterdir()) == []  # its config folder went with it (one a run had piled up)


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


def test_ctrl_c_while_kubernetes_starts_leaves_no_etcd_or_api_server_behind(tmp_path, tools):
    """SIGINT to the sandbox alone (as a supervisor or a test's clean-up sends it, not a terminal's Ctrl-C to
    the whole group) while the API server is still starting: the start finishes on its thread, and what it
    started is stopped, not orphaned."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "BOT_"))}
    env.update(PORT=str(free_port()), ERP_TOOLS_BIN=str(tools))
    log = (tmp_path / "sandbox.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "sandbox"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)

    def children(name: str) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", name], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]
    try:
        deadline = time.monotonic() + 60
        while not children("kube-apiserver") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        started = children("kube-apiserver") + children("etcd")
        assert started, (tmp_path / "sandbox.log").read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()

    def alive(pid: int) -> bool:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"
    deadline = time.monotonic() + 20
    while any(alive(p) for p in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in started if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "left running after the sandbox exited"
