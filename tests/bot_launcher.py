"""Starts bot processes for the tests by forking one that has already imported the bot.

Every test that needs a bot starts `erp-chatops serve` as a process of its own, about 175 times a run, and
each one spent most of a second of CPU importing aiohttp, Bolt and boto3 before doing anything (a quarter of
the suite's CPU went to starting and ending bots). This process imports what `serve` imports, once, and forks
a child for each start; the child takes the test's environment, working folder and log file and runs the
bot's own `main(["serve", ...])`, and the interpreter ends it as it ends `python -m bot serve`. What the
bot and its handlers read from the environment they read at run time, after the fork; the `random` module
reseeds itself in a forked child. What a fork cannot take from the test's environment: what the interpreter
reads at its start (PYTHONHASHSEED: every forked bot of a worker hashes strings alike; PYTHONPATH,
PYTHONWARNINGS, locale) and what libraries read at import (aiohttp's and prometheus_client's switches,
SSL_CERT_FILE); no test sets any of them. Where that matters, BotProcess(start="exec") starts
`python -m bot serve` afresh: the bench (start-up time and memory are measured on the real thing), the
soak (replicas racing each other should not share a hash seed) and the entry point's own test.

Protocol, one JSON object per line: a start request on stdin ({"argv", "env", "cwd", "log"}) is answered on
stdout with {"pid": N}; each child's end is reported as {"exited": N, "code": C} (C as Popen's returncode:
negative for a signal). End of stdin ends the launcher. It forks only while it has one thread.

Run as `python -u -m tests.bot_launcher` from the repository's root.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import selectors
import signal
import sys
import threading
from typing import Any, NoReturn


def _preload() -> None:
    """What `erp-chatops serve` imports before it answers anything (bot.__main__._serve)."""
    import bot.__main__
    import bot.app
    import bot.config
    import bot.http_server
    import bot.slack_credentials  # noqa: F401


def _become_child(request: dict[str, Any], keep_closed: list[int]) -> NoReturn:
    """In the forked child: become the requested bot process; never return into the launcher's loop. An
    exception out of the bot leaves through the launcher's main, so the interpreter ends the process as it
    ends `python -m bot serve`: the traceback, exit code 1, -2 for an uncaught KeyboardInterrupt."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the launcher ignores it; a bot does not
    for fd in keep_closed:
        os.close(fd)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(devnull)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["erp-chatops", *request["argv"]]
    from bot.__main__ import main

    code = main(request["argv"])  # an exception leaves through the launcher's main, as said above
    # A bot that returned ends as the interpreter would end it, but for tearing down every module one by
    # one (a third of a second of CPU with boto3's models loaded, and nothing the bot logs)
    threading._shutdown()  # type: ignore[attr-defined]  # non-daemon threads joined
    atexit._run_exitfuncs()  # logging.shutdown among them
    gc.collect()  # what is left unclosed says so now, as in the interpreter's last collection
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reply({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    _preload()
    if threading.active_count() != 1:  # forking a process with threads leaves their locks held in the child
        raise SystemExit(f"bot_launcher: {threading.active_count()} threads after the imports; cannot fork")
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD writes to the wakeup pipe
    # Ctrl-C reaches the whole process group: the bots stop on it; the launcher waits for its test process
    # to close stdin, so the bots' ends are still reported and stop() still works
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "request")
    selector.register(wake_r, selectors.EVENT_READ, "child")
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                _reap()
                continue
            chunk = os.read(0, 65536)
            if not chunk:  # the test process is gone or done: so is the launcher
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _become_child(request, [wake_r, wake_w, selector.fileno()])
                _reply({"pid": pid})


if __name__ == "__main__":
    main()
