"""The folders are the architecture: who may import whom, read from the source with `ast`.

    bot/delivery/            the delivery logic: pure, no I/O; imports only itself and bot.config
    bot/aws, bot/slack,      adapters, each the only place that talks to its system; they build on
    bot/cluster              the logic and share metrics and logging, never import each other
    bot/ci/                  what the buildspec runs in CodeBuild: logic, AWS and the cluster, never Slack's
                             adapter (CI holds no Slack credential of the bot's) and never the server
    handlers/                one module per capability: logic, adapters and the wiring's Runtime
    bot/*.py                 the wiring (config, app, runtime, HTTP server, consumer, metrics); only
                             bot/app.py imports handlers, to register them
    sandbox/                 the local stand-ins: beside the bot, never imported by it (bot/__main__.py's
                             `sandbox` command imports it lazily, from a checkout)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support import ROOT

ADAPTERS = ("bot.aws", "bot.slack", "bot.cluster")
SHARED = ("bot.config", "bot.metrics", "bot.jsonlog")  # every room may log, count and read the config's types
IO_LIBRARIES = ("boto3", "botocore", "aiohttp", "slack_sdk", "slack_bolt", "kubernetes", "subprocess", "socket",
                "urllib.request", "http.client", "requests", "asyncio.subprocess")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path, root).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path, root)
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno, id(node) in top_level))
            found += [(f"{base}.{alias.name}", node.lineno, id(node) in top_level) for alias in node.names]
    return found


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def room_of(module: str) -> str:
    for adapter in ADAPTERS:
        if _within(module, adapter):
            return adapter
    for room in ("bot.delivery", "bot.ci", "handlers", "sandbox"):
        if _within(module, room):
            return room
    return "wiring" if _within(module, "bot") else "other"


def violation(module: str, imported: str, top_level: bool) -> str | None:
    """Why `module` may not import `imported`; None when the import is allowed."""
    room = room_of(module)
    ours = _within(imported, "bot", "handlers", "sandbox", "tests", "bench")
    if _within(imported, "tests", "bench"):
        return "the product never imports the tests or the benchmarks"
    if _within(imported, "sandbox") and room != "sandbox":
        if module == "bot.__main__" and not top_level:
            return None  # `python -m bot sandbox`, from a checkout
        return "only the sandbox imports the sandbox: it does not ship"
    if room == "bot.delivery":
        if _within(imported, *IO_LIBRARIES):
            return f"the delivery logic does no I/O ({imported.split('.')[0]})"
        if ours and not _within(imported, "bot.delivery", "bot.config"):
            return "the delivery logic imports only itself and bot.config"
    elif room in ADAPTERS:
        if ours and not _within(imported, room, "bot.delivery", *SHARED):
            return f"an adapter ({room}) builds on the logic only: not on another adapter, the wiring or handlers"
    elif room == "bot.ci":
        if ours and not _within(imported, "bot.ci", "bot.delivery", "bot.aws", "bot.cluster", *SHARED):
            return "CI steps use the logic, AWS and the cluster only (no Slack adapter, no server, no handlers)"
    elif room == "handlers":
        if _within(imported, "bot.ci", "bot.app", "bot.__main__"):
            return "handlers never reach into CI steps or the entry points"
    elif room == "wiring":
        if _within(imported, "handlers") and module != "bot.app":
            return "only bot/app.py imports handlers (to register them)"
        if _within(imported, "bot.ci") and module != "bot.__main__":
            return "only the entry point runs the CI steps"
    return None


def violations(root: Path) -> list[str]:
    found = []
    for folder in ("bot", "handlers", "sandbox"):
        for path in sorted((root / folder).rglob("*.py")):
            module = module_name(path, root)
            reported: set[int] = set()  # one finding per import statement
            for imported, line, top_level in imports_of(path, root):
                why = violation(module, imported, top_level)
                if why and line not in reported:
                    reported.add(line)
                    found.append(f"{path.relative_to(root)}:{line}: imports {imported}: {why}")
    return found


def test_imports_follow_the_layers():
    assert violations(ROOT) == []


def test_every_room_exists_and_holds_code():
    for folder in ("bot/delivery", "bot/aws", "bot/slack", "bot/cluster", "bot/ci", "handlers", "sandbox"):
        assert list((ROOT / folder).glob("*.py")), f"{folder} is empty"
    assert not (ROOT / "bot" / "sandbox").exists(), "the sandbox lives beside the bot, not inside it"


@pytest.mark.parametrize(("where", "line", "why"), [
    ("bot/delivery/deploy_card.py", "import boto3", "does no I/O"),
    ("bot/delivery/deploy_card.py", "from bot.aws.state import StateStore", "imports only itself"),
    ("bot/delivery/command_parser.py", "from slack_sdk.models.blocks import SectionBlock", "does no I/O"),
    ("bot/slack/web_client.py", "from bot.aws.clients import AwsClients", "not on another adapter"),
    ("bot/aws/state.py", "from handlers import deploy", "not on another adapter, the wiring or handlers"),
    ("bot/ci/notify.py", "from bot.slack.web_client import make_web_client", "no Slack adapter"),
    ("bot/runtime.py", "import handlers", "only bot/app.py imports handlers"),
    ("bot/runtime.py", "from sandbox.seed import SERVICES", "only the sandbox imports the sandbox"),
    ("handlers/deploy.py", "from tests.support import http", "never imports the tests"),
    ("handlers/logs.py", "from bot.ci.build_steps import deploy", "never reach into CI steps"),
])
def test_a_planted_import_against_the_layers_is_caught(tmp_path: Path, where: str, line: str, why: str):
    for folder in ("bot", "handlers", "sandbox"):
        for path in (ROOT / folder).rglob("*.py"):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    target = tmp_path / where
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(where) and why in found[0], found


def test_relative_imports_are_resolved(tmp_path: Path):
    (tmp_path / "bot" / "delivery").mkdir(parents=True)
    (tmp_path / "bot" / "delivery" / "x.py").write_text("from ..aws import state\nfrom . import deploy_card\n")
    (tmp_path / "handlers").mkdir()
    (tmp_path / "sandbox").mkdir()
    found = violations(tmp_path)
    assert len(found) == 1 and "bot.aws" in found[0]
