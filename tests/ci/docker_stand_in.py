"""Stands in for `docker` in the buildspec tests: no engine runs on this machine.

Records every call (JSON lines in $DOCKER_LOG). `build` fails like docker when
the context is missing or the service is in $DOCKER_FAIL_BUILD; `push` puts the
image into ECR (moto's server) and gives it scan findings, CRITICAL ones for
services in $CRITICAL_SERVICES, as a registry with scan-on-push would.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    with open(os.environ["DOCKER_LOG"], "a") as log:
        log.write(json.dumps(argv) + "\n")
    if not argv:
        return 1
    command = argv[0]
    if command == "login":
        sys.stdin.read()
        print("Login Succeeded")
        return 0
    if command == "build":
        context = Path(argv[-1])
        if not context.is_dir():
            print(f"ERROR: unable to prepare context: path {context!r} not found", file=sys.stderr)
            return 1
        service = context.name
        if service in os.environ.get("DOCKER_FAIL_BUILD", "").split(","):
            print(f"ERROR: failed to solve: process \"/bin/sh -c ./gradlew :{service}:bootJar\" did not complete"
                  " successfully: exit code: 1", file=sys.stderr)
            return 1
        return 0
    if command == "push":
        image = argv[1]
        _registry, _, path = image.partition("/")
        repository, _, tag = path.rpartition(":")
        from bot.aws.clients import AwsClients
        from sandbox.ecr_images import publish_image

        service = repository.removeprefix("erp/").removesuffix("-service")
        critical = 1 if service in os.environ.get("CRITICAL_SERVICES", "").split(",") else 0
        statuses = dict(pair.split("=", 1) for pair in os.environ.get("SCAN_STATUSES", "").split(",") if "=" in pair)
        publish_image(AwsClients(), repository, tag, critical=critical, status=statuses.get(service, "COMPLETE"),
                      description=os.environ.get("SCAN_DESCRIPTION"))
        print(f"{tag}: digest: sha256:... size: 1234")
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
