"""Real parts for tests: moto's server, the local Slack workspace, the bot as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from sandbox.local_aws import LocalAws, free_port, stop_process, wait_for_http
from sandbox.seed import sandbox_config

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

SIGNING_SECRET = "sandbox-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-0000000000-erp-sandbox-token"


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, str, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), dict(e.headers)


MotoServer = LocalAws  # moto in server mode, as its own process


class BackgroundLoop:
    """An asyncio loop in a thread, for servers the test process hosts (the local Slack)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def serve(self, app: web.Application) -> tuple[web.AppRunner, int]:
        async def start() -> tuple[web.AppRunner, int]:
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return runner, runner.addresses[0][1]
        return self.run(start())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def base_config(queue_url: str, table: str, progress_queue_url: str | None = None) -> dict[str, Any]:
    """The sandbox's config without its demo calendar: a test that needs a freeze, a lock after a rollback
    or a soak time sets its own, relative to its own clock."""
    config = sandbox_config(queue_url, table, progress_queue_url)
    for key in ("freeze", "lock_after_rollback", "approval_reminders"):
        config["environments"]["prod"].pop(key, None)
    config.pop("promotion", None)
    config.pop("drift_check", None)
    return config


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class LaunchedProcess:
    """A bot forked by tests/bot_launcher.py, with the part of Popen's interface the tests use. Signals go
    through a pidfd, so a pid the launcher has reaped and the system reused is never signalled."""

    def __init__(self, launcher: BotLauncher, pid: int) -> None:
        self.launcher, self.pid = launcher, pid
        self.returncode: int | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # already ended (and reaped): its exit report is on its way
            self._pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.launcher.exit_code(self.pid, timeout=0)
            if self.returncode is not None:
                self._close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.launcher.exit_code(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"bot {self.pid}", timeout or 0)
            self._close()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile, as Popen.send_signal allows
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


class BotLauncher:
    """This test process's tests/bot_launcher.py: bots forked from one that has imported the bot already."""

    _shared: BotLauncher | None = None
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls) -> BotLauncher:
        with cls._shared_lock:
            if cls._shared is None or cls._shared.gone:
                cls._shared = cls()
            return cls._shared

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.bot_launcher"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.gone = False
        self._started: queue.Queue[int | None] = queue.Queue()
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self._starting = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name="bot-launcher").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            said = json.loads(line)
            if "pid" in said:
                self._started.put(said["pid"])
            else:
                with self._changed:
                    self._exits[said["exited"]] = said["code"]
                    self._changed.notify_all()
        self._lost()

    def _lost(self) -> None:
        with self._changed:
            self.gone = True
            self._changed.notify_all()
        self._started.put(None)

    def start(self, argv: list[str], env: dict[str, str], log_path: Path) -> LaunchedProcess:
        assert self.proc.stdin is not None
        with self._starting:  # one start at a time: its pid is the next one the launcher says
            self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "cwd": str(ROOT),
                                              "log": str(log_path)}).encode() + b"\n")
            self.proc.stdin.flush()
            try:
                pid = self._started.get(timeout=30)
            except queue.Empty:  # its late answer would be taken for the next start's: no next start here
                self.proc.kill()
                self._lost()
                raise TimeoutError("the bot launcher did not start a bot within 30 s") from None
        if pid is None:
            raise RuntimeError(f"the bot launcher exited with {self.proc.wait()} (its error is on stderr)")
        with self._changed:
            self._exits.pop(pid, None)  # an earlier bot's end, under a pid the system has given out again
        return LaunchedProcess(self, pid)

    def exit_code(self, pid: int, timeout: float | None) -> int | None:
        """The child's returncode once it has exited; None if it is still running after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or self.gone, timeout)
            if pid in self._exits:
                return self._exits[pid]
            if not self.gone:
                return None
        # The launcher died, and with it what it would have said: the bot may still run (stop() must still
        # be able to end it), and once it has ended its code is unknown.
        while _alive(pid):
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
        raise RuntimeError(f"the bot launcher exited: bot {pid} ended, with a code nobody saw")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class BotProcess:
    """The bot as its own process: `python -m bot serve` (start="exec"), exactly as it runs in the cluster,
    or (start="fork", the tests' default) that same `serve` forked from a process that has imported the bot
    already (tests/bot_launcher.py), which spares each test most of a second of CPU."""

    def __init__(self, env: dict[str, str], log_path: Path, start: str = "fork") -> None:
        self.log_path = log_path
        for attempt in range(3):
            self.port, self.metrics_port = free_port(), free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"  # a port of its own, as in the pod
            self._log = log_path.open("w")
            full_env = {**os.environ, **env, "PORT": str(self.port), "METRICS_PORT": str(self.metrics_port),
                        "PYTHONUNBUFFERED": "1"}
            argv = ["serve", "--host", "127.0.0.1"]
            self.proc: subprocess.Popen[bytes] | LaunchedProcess
            if start == "fork":
                self.proc = BotLauncher.shared().start(argv, full_env, log_path)
            else:
                self.proc = subprocess.Popen([sys.executable, "-m", "bot", *argv], env=full_env,
                                             stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                # Its own log saying it bound the port, not just an answer there: another worker's server that
                # took the port in between answers too (a 404 on /healthz once passed for this bot). Logging
                # warnings only (the bench), it says nothing of the kind: /healthz alone then.
                if full_env.get("LOG_LEVEL", "INFO").upper() in ("DEBUG", "INFO"):
                    self._wait_listening(timeout=20)
                wait_for_http(f"{self.url}/healthz", proc=self.proc)
                return
            except TimeoutError:
                stop_process(self.proc, 5)  # never left running behind a start that failed
                self._log.close()
                raise
            except RuntimeError:
                self._log.close()
                # a free port another test process took in between (parallel workers): start again elsewhere
                if attempt == 2 or "address already in use" not in log_path.read_text():
                    raise

    def _wait_listening(self, timeout: float) -> None:
        said = f"listening on 127.0.0.1:{self.port} "
        deadline = time.monotonic() + timeout
        while said not in self.log_path.read_text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bot exited with {self.proc.returncode} before it listened")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not listen on {self.port} within {timeout}s")
            time.sleep(0.02)

    def log_lines(self) -> list[dict[str, Any]]:
        self._log.flush()
        return self.read_log(self.log_path)

    @staticmethod
    def read_log(path: Path) -> list[dict[str, Any]]:
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"raw": line})
        return lines

    def stop(self) -> int:
        try:
            stop_process(self.proc, 25)
        finally:
            self._log.close()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def stop_soon(self) -> None:
        """SIGTERM now; wait for the end (its last long poll returning, a second here) when the run ends
        (`stop_the_rest`). For a fixture's teardown: no test looks at how this bot ends, and the wait was a
        second per test. A test that does look calls stop()."""
        if self.proc.poll() is None:
            self.proc.terminate()
        STOPPING.append(self)


STOPPING: list[BotProcess] = []


def stop_the_rest() -> None:
    """Wait for the bots told to stop soon (SIGKILL after the usual grace). A bot whose end nobody can read
    any more (the harness test kills the launcher that reports it) is past waiting for: the others still are."""
    while STOPPING:
        bot = STOPPING.pop()
        try:
            bot.stop()
        except RuntimeError as e:  # "the bot launcher exited: bot N ended, with a code nobody saw"
            print(f"tests: {e}", file=sys.stderr)


def wait_until(check: Callable[[], T], timeout: float = 20.0, what: str = "the condition",
               every: float = 0.05) -> T:
    """Poll until `check()` returns something truthy; return it. A check that costs the service it asks
    (moto's SQS walks the whole queue to count it) polls less often (`every`)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def tools_bin() -> Path | None:
    """Where kube-apiserver and helm were built (scripts/build-test-tools.sh), if they were."""
    import shutil

    given = os.environ.get("ERP_TOOLS_BIN")
    if given and (Path(given) / "helm").exists():
        return Path(given)
    if shutil.which("go") is None:
        return None
    out = subprocess.run(["bash", str(ROOT / "scripts" / "build-test-tools.sh")], capture_output=True, text=True,
                         timeout=3600)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


S = TypeVar("S")


@contextlib.contextmanager
def served(loop: BackgroundLoop, stand_in: S) -> Iterator[S]:
    """A stand-in's web app served on a free loopback port for the test; its `url` set, cleaned up after."""
    runner, port = loop.serve(stand_in.web_app())  # type: ignore[attr-defined]
    stand_in.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        yield stand_in
    finally:
        loop.run(runner.cleanup())
