"""The sandbox page in headless Chromium, used as a person uses it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, free_port, http, wait_for_http, wait_until

pytestmark = pytest.mark.slow  # a whole sandbox and a browser each: started first on parallel workers

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine has no network beyond loopback: keep Chromium from reaching out.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def sandbox(tmp_path: Path, tools: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "BOT_"))}
    # the demo freeze (weekends in Seoul, holidays) would refuse the prod deploy on those days
    env.update(PORT=str(port), SANDBOX_STEP_SECONDS="0.3", ERP_TOOLS_BIN=str(tools), SANDBOX_FREEZE="0")
    env.update(getattr(request, "param", {}))  # a test's own settings (indirect parametrization)
    log = (tmp_path / "sandbox.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "bot", "sandbox"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/", timeout=90, proc=proc)
    probe = b'{"user":"U0ONCALL","channel":"C0ONCALL","text":"/erp help"}'  # the bot starts just after the page
    wait_until(lambda: proc.poll() is not None or json.loads(
        http("POST", f"{url}/ui/command", probe, {"Content-Type": "application/json"})[1]).get("ok"),
        timeout=40, what="the sandbox's bot")
    assert proc.poll() is None, (tmp_path / "sandbox.log").read_text()
    yield url
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    log.close()


def open_page(p: Any, url: str) -> tuple[Any, Any]:
    """Headless Chromium (Debian's) on the sandbox page, a laptop's window size."""
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(url)
    return browser, page


def test_prod_deploy_with_approval_in_the_browser(sandbox: str):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = open_page(p, sandbox)
        page.locator("#channels .ch", has_text="erp-prod").click()
        page.select_option("#user", "U0DEV1")

        page.fill("#text", "/erp help")
        page.press("#text", "Enter")
        expect(page.locator(".msg.ephemeral").last).to_contain_text("What I can do")
        expect(page.locator(".msg.ephemeral").last).to_contain_text("Only visible to you")

        page.fill("#text", "/erp deploy employee prod")
        page.press("#text", "Enter")
        card = page.locator(".msg", has_text="Deploy employee to prod").first
        expect(card).to_contain_text("Waiting for approval", timeout=30_000)

        page.select_option("#user", "U0APPR1")  # the approver looks at the same channel
        card = page.locator(".msg", has_text="Deploy employee to prod").first
        card.locator("button", has_text="Approve").click()
        expect(page.locator("#dialog")).to_contain_text("Approve this deploy?")  # Slack's confirm dialog
        page.locator("#dlg-ok").click()
        expect(card).to_contain_text("Succeeded", timeout=30_000)
        expect(card).to_contain_text("Approved by")
        expect(card).to_contain_text("Ari Approver")
        card.locator(".replies").click()
        expect(page.locator("#thread-body")).to_contain_text("Scan of")
        # the buildspec's own progress lines, posted into the deploy's thread
        expect(page.locator("#thread-body")).to_contain_text("Built and pushed employee-service")
        expect(page.locator("#thread-body")).to_contain_text("Deployed to prod")
        page.screenshot(path=str(ROOT / "docs" / "sandbox-prod-deploy.png"))
        browser.close()


def _post(url: str, path: str, body: dict) -> dict:
    return json.loads(http("POST", f"{url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"})[1])


def _state(url: str, user: str) -> dict:
    return json.loads(http("GET", f"{url}/ui/state?user={user}")[1])


def _answer(url: str, user: str, text: str, channel: str) -> str:
    before = len([m for m in _state(url, user)["messages"] if m["ephemeral"]])
    assert _post(url, "/ui/command", {"user": user, "channel": channel, "text": text})["ok"]
    return wait_until(lambda: [m["text"] for m in _state(url, user)["messages"] if m["ephemeral"]][before:]
                      and [m["text"] for m in _state(url, user)["messages"] if m["ephemeral"]][-1], timeout=30, what=text)


def test_sandbox_cluster_status_and_prod_rollback(sandbox: str):
    status = _answer(sandbox, "U0ONCALL", "/erp status prod", "C0ONCALL")
    assert "revision *2*" in status and "employee `release-2024" in status and "5/5 complete" in status
    answer = _answer(sandbox, "U0DEV1", "/erp rollback employee prod", "C0PROD")
    assert "an approver must confirm" in answer
    plan = wait_until(lambda: [m for m in _state(sandbox, "U0APPR1")["messages"] if m["channel"] == "C0PROD"
                               and "Roll back employee" in json.dumps(m["blocks"])], what="the plan")[0]
    assert "release-2024.12.26` -> `release-2024.12.23" in json.dumps(plan["blocks"])
    assert _post(sandbox, "/ui/click", {"user": "U0APPR1", "channel": "C0PROD", "ts": plan["ts"],
                                        "action_id": "rollback_confirm"})["ok"]
    done = wait_until(lambda: [m for m in _state(sandbox, "U0APPR1")["messages"] if m["ts"] == plan["ts"]
                               and "Rolled back" in json.dumps(m["blocks"])], timeout=60, what="the rollback")[0]
    assert "5/5 complete" in json.dumps(done["blocks"])
    after = _answer(sandbox, "U0ONCALL", "/erp status prod", "C0ONCALL")
    assert "revision *3*" in after and "employee `release-2024" in after and "rolled back by <@U0APPR1>" in after


@pytest.mark.parametrize("sandbox", [{"DRIFT_CHECK_SECONDS": "1"}], indirect=True)
def test_an_alarm_in_the_deploys_thread_and_a_drift_re_deployed_in_the_browser(sandbox: str):
    """Issue 20 on the page: a dev deploy, *Fire dev alarm* (the alarm in the deploy's thread, shown in the
    channel), *Clear dev alarm* (resolved), *Patch dev behind Helm* (a drift message), and its *Re-deploy
    via the pipeline* through Slack's confirm dialog, which clears the drift."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser, page = open_page(p, sandbox)
        page.locator("#channels .ch", has_text="erp-dev").click()
        page.select_option("#user", "U0DEV1")
        page.fill("#text", "/erp deploy employee dev")
        page.press("#text", "Enter")
        card = page.locator(".msg", has_text="Deploy employee to dev").first
        expect(card).to_contain_text("Succeeded", timeout=60_000)

        page.locator("#alarm", has_text="Fire dev alarm").click()
        alarm = page.locator("#messages .msg", has_text="went to ALARM").first  # broadcast: in the channel too
        expect(alarm).to_contain_text("after the deploy of employee", timeout=30_000)
        for button in ("Logs", "Roll back", "Lock dev"):
            expect(alarm.locator("button", has_text=button)).to_be_visible()
        card.locator(".replies").click()
        expect(page.locator("#thread-body")).to_contain_text("went to ALARM")
        page.locator("#alarm", has_text="Clear dev alarm").click()
        expect(alarm).to_contain_text("resolved after", timeout=30_000)

        page.locator("#drift").click()
        drift = page.locator("#messages .msg", has_text="Drift in dev").first
        expect(drift).to_contain_text("image changed outside Helm", timeout=60_000)
        drift.locator("button", has_text="Re-deploy via the pipeline").click()
        expect(page.locator("#dialog")).to_contain_text("Re-deploy?")  # Slack's confirm dialog
        page.locator("#dlg-ok").click()
        redeploy = page.locator(".msg", has_text="Re-deploy of the recorded version").first
        expect(redeploy).to_contain_text("Succeeded", timeout=60_000)
        expect(drift).to_contain_text("cleared", timeout=60_000)
        browser.close()


def test_a_lock_on_the_cards_and_a_promotion_end_to_end_in_the_browser(sandbox: str):
    """Issue 19 on the page: a prod card waiting for approval shows a lock taken after it, another person's
    deploy is refused in one line while the holder's goes out under the lock; after the unlock, dev's image is
    promoted to prod (an approver overrides the soak time with a reason) and another approver approves it."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    def say(page: Any, user: str, text: str) -> None:
        page.select_option("#user", user)
        page.fill("#text", text)
        page.press("#text", "Enter")

    with sync_playwright() as p:
        browser, page = open_page(p, sandbox)
        page.locator("#channels .ch", has_text="erp-dev").click()
        say(page, "U0DEV1", "/erp deploy employee dev")
        dev_card = page.locator(".msg", has_text="Deploy employee to dev").first
        expect(dev_card).to_contain_text("Succeeded", timeout=60_000)

        page.locator("#channels .ch", has_text="erp-prod").click()
        say(page, "U0APPR1", "/erp deploy notification prod")
        waiting = page.locator(".msg", has_text="Deploy notification to prod").first
        expect(waiting).to_contain_text("Waiting for approval", timeout=30_000)
        say(page, "U0DEV1", '/erp lock prod for 1h "INC-9 payments down"')
        expect(page.locator(".msg.ephemeral").last).to_contain_text("prod is locked by", timeout=15_000)
        expect(waiting).to_contain_text("🔒 prod is locked by", timeout=15_000)  # drawn, not a raw :lock:
        expect(waiting).to_contain_text("Deploy stage would refuse it")
        say(page, "U0APPR1", "/erp deploy employee prod")
        expect(page.locator(".msg.ephemeral").last).to_contain_text("INC-9 payments down", timeout=15_000)
        say(page, "U0DEV1", "/erp deploy employee prod")
        mine = page.locator(".msg", has_text="Deploy employee to prod").first
        expect(mine).to_contain_text("Deployed under", timeout=30_000)
        expect(mine).to_contain_text("Dana Developer")
        page.select_option("#user", "U0APPR1")
        mine.locator("button", has_text="Approve").click()
        page.locator("#dlg-ok").click()
        expect(mine).to_contain_text("Succeeded", timeout=60_000)
        say(page, "U0DEV1", "/erp unlock prod")
        expect(waiting).not_to_contain_text("prod is locked by", timeout=15_000)

        say(page, "U0APPR1", '/erp promote employee override "verified in dev by QA"')
        promoted = page.locator(".msg", has_text="Promoted from dev").first
        expect(promoted).to_contain_text("Waiting for approval", timeout=30_000)
        expect(promoted).to_contain_text("soak overridden by")
        page.select_option("#user", "U0ONCALL")  # never the one who asked: another approver approves
        promoted.locator("button", has_text="Approve").click()
        page.locator("#dlg-ok").click()
        expect(promoted).to_contain_text("Succeeded", timeout=60_000)
        page.screenshot(path=str(ROOT / "docs" / "sandbox-lock-and-promotion.png"))
        browser.close()
