"""One declared list of services: the bot's config (`config.services` in charts/erp-chatops/values.yaml).

The bot reads it as BOT_CONFIG, the sandbox's seed and stand-ins derive theirs from it
(sandbox/erp_services.py), and CI builds what the chart it deploys declares. Files that must keep a
copy of their own (the ERP chart's values, the Terraform module, the pipeline definition) are held to
it here: a service added or dropped in one of them fails this test, naming the file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from bot.ci.build_steps import chart_services
from bot.config import parse_config
from sandbox import erp_services
from sandbox.seed import sandbox_config
from tests.support import ROOT

BOT_VALUES = Path("charts/erp-chatops/values.yaml")
ERP_CHART = Path("charts/erp")
TERRAFORM = Path("infra/terraform/erp-dev-ChatOps")
PIPELINE = Path("infra/pipeline.json")


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def declared(root: Path) -> dict[str, dict[str, str]]:
    return dict(_yaml(root / BOT_VALUES)["config"]["services"])


def _terraform_services(root: Path) -> list[str]:
    for block in hcl2.load((root / TERRAFORM / "variables.tf").open()).get("variable", []):
        body = block.get("services") or block.get('"services"')  # python-hcl2 may keep HCL's quotes
        if body:
            return [str(s).strip('"') for s in body["default"]]
    raise AssertionError("variables.tf declares no `services` variable")


def _terraform_repository(root: Path, service: str) -> str:
    """The ECR repository the module makes for a service, from its `repositories` expression."""
    main = (root / TERRAFORM / "main.tf").read_text(encoding="utf-8")
    match = re.search(r'repositories\s*=\s*\[for s in var\.services\s*:\s*"([^"]+)"\]', main)
    assert match, "main.tf no longer derives the repositories from var.services"
    return match.group(1).replace("${s}", service)


def disagreements(root: Path) -> list[str]:
    """Every way a file that keeps its own copy of the services disagrees with the declared list."""
    services = declared(root)
    names = list(services)
    problems: list[str] = []

    def compare(where: str, listed: list[str]) -> None:
        missing, extra = [n for n in names if n not in listed], [n for n in listed if n not in names]
        if missing:
            problems.append(f"{where}: lacks {', '.join(missing)}")
        if extra:
            problems.append(f"{where}: has {', '.join(extra)}, which the bot's config does not declare")

    chart = _yaml(root / ERP_CHART / "values.yaml")["services"]
    compare(f"{ERP_CHART}/values.yaml", list(chart))
    for name, svc in chart.items():
        if name not in services:
            continue
        if svc["image"]["repository"] != services[name]["image_repository"]:
            problems.append(f"{ERP_CHART}/values.yaml: {name} pulls {svc['image']['repository']}, the bot's config"
                            f" says {services[name]['image_repository']}")
        if f"{name}-service" != services[name]["deployment"]:  # the chart names each Deployment <name>-service
            problems.append(f"{ERP_CHART}: {name}'s Deployment is {name}-service, the bot's config says"
                            f" {services[name]['deployment']}")
    for values in sorted((root / ERP_CHART).glob("values-*.yaml")):
        extra = [n for n in (_yaml(values).get("services") or {}) if n not in names]
        if extra:
            problems.append(f"{values.relative_to(root)}: has {', '.join(extra)}, which the bot's config does not"
                            " declare")
    compare(f"{TERRAFORM}/variables.tf var.services", _terraform_services(root))
    for name in names:
        if _terraform_repository(root, name) != services[name]["image_repository"]:
            problems.append(f"{TERRAFORM}/main.tf: makes {_terraform_repository(root, name)} for {name}, the bot's"
                            f" config says {services[name]['image_repository']}")
    repositories = {s["image_repository"] for s in services.values()}
    for named in sorted(set(re.findall(r"erp/[a-z0-9-]+-service", (root / PIPELINE).read_text()))):
        if named not in repositories:
            problems.append(f"{PIPELINE}: names {named}, which is no declared service's repository")
    return problems


def test_every_copy_agrees_with_the_declared_list():
    assert disagreements(ROOT) == []


def test_the_declared_list_is_a_valid_bot_config():
    config = parse_config(_yaml(ROOT / BOT_VALUES)["config"], str(BOT_VALUES))
    assert list(config.services) == list(declared(ROOT))


def test_the_sandbox_and_ci_derive_theirs():
    names = list(declared(ROOT))
    assert list(erp_services.SERVICES) == names
    assert list(sandbox_config("q")["services"]) == names
    assert [erp_services.repository_of(n) for n in names] == [s["image_repository"] for s in declared(ROOT).values()]
    assert chart_services({"CHART": str(ROOT / ERP_CHART)}, "/") == {
        n: s["image_repository"] for n, s in declared(ROOT).items()}


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for part in (BOT_VALUES, ERP_CHART, TERRAFORM, PIPELINE):
        source, target = ROOT / part, tmp_path / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    return tmp_path


def _edit_yaml(path: Path, change: Any) -> None:
    data = _yaml(path)
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def test_a_chart_that_drops_a_service_is_caught(copy: Path):
    _edit_yaml(copy / ERP_CHART / "values.yaml", lambda d: d["services"].pop("notification"))
    assert disagreements(copy) == ["charts/erp/values.yaml: lacks notification"]


def test_a_chart_that_adds_a_service_is_caught(copy: Path):
    _edit_yaml(copy / ERP_CHART / "values-prod.yaml", lambda d: d["services"].update({"payroll": {"replicas": 2}}))
    [problem] = disagreements(copy)
    assert problem.startswith("charts/erp/values-prod.yaml: has payroll")


def test_terraform_that_adds_or_drops_a_service_is_caught(copy: Path):
    variables = copy / TERRAFORM / "variables.tf"
    text = variables.read_text()
    variables.write_text(text.replace('"approval-processing", "notification"', '"notification", "payroll"'))
    problems = disagreements(copy)
    assert f"{TERRAFORM}/variables.tf var.services: lacks approval-processing" in problems
    assert any(p.startswith(f"{TERRAFORM}/variables.tf var.services: has payroll") for p in problems)


def test_a_renamed_repository_is_caught(copy: Path):
    _edit_yaml(copy / ERP_CHART / "values.yaml",
               lambda d: d["services"]["employee"]["image"].update({"repository": "erp/employees"}))
    [problem] = disagreements(copy)
    assert "employee pulls erp/employees" in problem


def test_a_pipeline_naming_an_unknown_service_is_caught(copy: Path):
    data = json.loads((copy / PIPELINE).read_text())
    data["pipeline"]["variables"][0]["description"] = "e.g. erp/payroll-service"
    (copy / PIPELINE).write_text(json.dumps(data))
    assert disagreements(copy) == [f"{PIPELINE}: names erp/payroll-service, which is no declared service's repository"]
