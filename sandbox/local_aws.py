"""moto in server mode as a child process: boto3 reaches it over HTTP, as it reaches AWS."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

REGION = "ap-northeast-2"  # the ERP platform's region
ACCOUNT = "806332783810"  # and its account


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process(Protocol):
    """What these helpers use of a child process (subprocess.Popen, or the tests' forked bot)."""

    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


def wait_for_http(url: str, timeout: float = 20.0, proc: Process | None = None) -> None:
    """Until `url` answers at all (any status), or the process behind it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: Process, grace: float) -> None:
    """SIGTERM, and SIGKILL if it has not exited after `grace` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class LocalAws:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argument list, no user text
            # moto's server, with DynamoDB's conditional writes made atomic as DynamoDB's are (see moto_atomic)
            [sys.executable, "-m", "sandbox.moto_atomic", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "MOTO_ACCOUNT_ID": ACCOUNT})  # queue URLs and ARNs name the platform's account
        wait_for_http(f"{self.url}/moto-api/", proc=self.proc)

    def env(self) -> dict[str, str]:
        """What boto3 needs to talk to it, through its own endpoint resolution."""
        return {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox",
                "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}

    def stop(self) -> None:
        stop_process(self.proc, 10)
