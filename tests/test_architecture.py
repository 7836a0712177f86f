"""The folders are the architecture: who may import whom, read from the source with `ast`.

    bot/delivery/            the delivery logic: pure, no I/O; imports only itself and bot.config
    bot/aws, bot/slack,      adapters, each the only place that talks to its system; they build on
    bot/cluster              the logic and share metrics and logging, never import each other
    bot/ci/                  what the buildspec runs in CodeBuild: logic, AWS and the cluster, never the bot's
                             Slack adapter, server or handlers (its progress notes still use slack_sdk
                             directly, with the token CodeBuild reads: moving them to the bot is the
                             security issue's work)
    bot/config.py, metrics,  shared by every room: they import nothing of ours but each other
    jsonlog, the freeze
    calendar
    handlers/                one module per capability: logic, adapters, and of the wiring only the Runtime
                             they are given, the config, metrics and logging
    bot/*.py                 the wiring (app, runtime, HTTP server, consumer, card store, readiness); only
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
# every room may log, count and read the config's types; the freeze calendar is one of them (a config key
# the config validates with it), pure and importing nothing of ours
SHARED = ("bot.config", "bot.metrics", "bot.jsonlog", "bot.delivery.freeze_calendar")
IO_LIBRARIES = ("boto3", "botocore", "aiobotocore", "aiohttp", "httpx", "requests", "urllib3", "urllib.request",
                "http", "socket", "ssl", "subprocess", "asyncio", "threading", "os", "shutil", "pathlib", "tempfile",
                "slack_sdk", "slack_bolt", "kubernetes", "prometheus_client")
WIRING_FOR_HANDLERS = ("bot.runtime",)  # what handlers may take from the wiring, beside the shared modules


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import in the file: statements, relative ones
    resolved, and importlib.import_module / __import__ with a constant name. Module level means outside any
    function (a `try:` around an import at the top counts as module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path, root).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path, root)
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, not in_function) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from bot import config` imports bot.config; `from bot.config import Config`, bot.config.Config
            found.extend((f"{base}.{alias.name}", node.lineno, not in_function) for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__"):
                found.append((node.args[0].value, node.lineno, not in_function))
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, False)
    return found


def _within(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def room_of(module: str) -> str:
    if _within(module, *SHARED):
        return "shared"
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
    if room == "shared":
        if ours and not _within(imported, *SHARED):
            return "config, metrics and logging are shared by every room: they import nothing else of ours"
    elif room == "bot.delivery":
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
        if _within(imported, "bot.ci"):
            return "handlers never reach into CI steps"
        if _within(imported, "bot") and room_of(imported) == "wiring" and not _within(imported, *WIRING_FOR_HANDLERS):
            return "handlers take only the Runtime from the wiring (never the app, server or consumer)"
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


def test_the_heavy_clients_are_imported_only_when_used():
    """Issue 21 item 4: the kubernetes client (about 40 MB, 0.4 s) and Pillow were imported at start by every
    replica, whether or not it ever answered `/erp status` or drew a chart."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, bot.app, bot.__main__, handlers; print(sorted("
                          "m for m in ('kubernetes', 'PIL') if m in sys.modules))"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
