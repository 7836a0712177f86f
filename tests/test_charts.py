"""Both Helm charts, rendered by the real helm and checked against the Kubernetes schemas."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sandbox.erp_services import SERVICES
from tests.support import ROOT

ERP = ROOT / "charts" / "erp"
BOT = ROOT / "charts" / "erp-chatops"
KUBE_VERSION = "1.31.0"
CRD_KINDS = {"ExternalSecret", "SecretStore"}  # External Secrets Operator: not in the core schemas


def render(helm: str, chart: Path, *values: str, namespace: str = "erp-dev") -> list[dict[str, Any]]:
    args = [helm, "template", "erp", str(chart), "--namespace", namespace]
    for v in values:
        args += ["-f", str(chart / v)]
    out = subprocess.run(args, capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    for d in docs:
        d["__source"] = ""
    sources = re.findall(r"^# Source: (\S+)", out.stdout, re.M)
    for d, source in zip(docs, sources, strict=False):
        d["__source"] = source
    return docs


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize(("chart", "values"), [(ERP, ()), (ERP, ("values-dev.yaml",)), (ERP, ("values-prod.yaml",)),
                                               (BOT, ())])
def test_charts_lint_and_validate_against_the_kubernetes_schemas(helm: str, chart: Path, values: tuple[str, ...]):
    args = [helm, "lint", str(chart), "--strict"] + [a for v in values for a in ("-f", str(chart / v))]
    lint = subprocess.run(args, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for doc in render(helm, chart, *values):
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "external-secrets.io/v1beta1"
            continue
        clean = {k: v for k, v in doc.items() if k != "__source"}
        kubernetes_validate.validate(clean, KUBE_VERSION, strict=True)


@pytest.mark.parametrize(("values", "employee_replicas"), [("values-dev.yaml", 2), ("values-prod.yaml", 5)])
def test_four_services_from_one_template_per_kind(helm: str, values: str, employee_replicas: int):
    docs = render(helm, ERP, values)
    deployments = kinds(docs, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(f"{s}-service" for s in SERVICES)
    for kind, template in (("Deployment", "deployment.yaml"), ("Service", "service.yaml"),
                           ("HorizontalPodAutoscaler", "hpa.yaml")):
        assert {d["__source"] for d in kinds(docs, kind)} == {f"erp/templates/{template}"}
        assert len(kinds(docs, kind)) == len(SERVICES)
    employee = next(d for d in deployments if d["metadata"]["name"] == "employee-service")
    # the HPA owns the replica count (Kubernetes' HPA documentation: leave spec.replicas out of the manifest, or
    # every apply resets it); the environment's baseline is the HPA's minimum
    assert "replicas" not in employee["spec"]
    hpa = next(d for d in kinds(docs, "HorizontalPodAutoscaler") if d["metadata"]["name"] == "employee-service")
    assert hpa["spec"]["minReplicas"] == employee_replicas
    assert len(kinds(docs, "PodDisruptionBudget")) == (len(SERVICES) if values == "values-prod.yaml" else 0)


def test_no_load_balancer_and_websocket_affinity(helm: str):
    docs = render(helm, ERP, "values-prod.yaml")
    for svc in kinds(docs, "Service"):
        assert svc["spec"]["type"] == "ClusterIP"
    notification = next(s for s in kinds(docs, "Service") if s["metadata"]["name"] == "notification-service")
    assert notification["spec"]["sessionAffinity"] == "ClientIP"
    assert notification["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 10800


def test_secrets_come_from_secrets_manager_only(helm: str):
    prod = render(helm, ERP, "values-prod.yaml")
    assert kinds(prod, "Secret") == []
    [external] = kinds(prod, "ExternalSecret")
    assert external["spec"]["target"]["name"] == "db-secret"
    remote = {d["secretKey"]: d["remoteRef"]["key"] for d in external["spec"]["data"]}
    assert remote == {"password": "prod/rds/password", "mongodb-uri": "prod/mongodb/uri"}
    refs = [env["valueFrom"]["secretKeyRef"] for d in kinds(prod, "Deployment")
            for env in d["spec"]["template"]["spec"]["containers"][0]["env"] if "valueFrom" in env]
    assert refs and all(r["name"] == "db-secret" and r["key"] in remote for r in refs)
    # no value that looks like a credential anywhere in either chart's files
    for path in list(ERP.rglob("*")) + list(BOT.rglob("*")):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"(?i)(password|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{12,}", text), path
            assert "xoxb-" not in text


@pytest.mark.parametrize("chart", [ERP, BOT])
def test_pods_run_non_root_read_only_with_probes(helm: str, chart: Path):
    for d in kinds(render(helm, chart, *(["values-prod.yaml"] if chart == ERP else [])), "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["livenessProbe"] and c["readinessProbe"] and c["resources"]["limits"]
    if chart == ERP:
        probes = {c["readinessProbe"]["httpGet"]["path"] for d in kinds(render(helm, ERP), "Deployment")
                  for c in d["spec"]["template"]["spec"]["containers"]}
        assert probes == {"/actuator/health/readiness"}


def test_bot_chart_wires_config_irsa_and_namespaced_rbac(helm: str):
    docs = render(helm, BOT, namespace="erp-chatops")
    [deployment] = kinds(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    [sa] = kinds(docs, "ServiceAccount")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::806332783810:role/")
    [config] = kinds(docs, "ConfigMap")
    parsed = yaml.safe_load(config["data"]["config.yaml"])
    from bot.config import parse_config  # the bot must accept what the chart gives it
    assert parse_config(parsed, "configmap").pipeline == "erp-pipeline"
    roles = kinds(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["erp-dev", "erp-prod"]
    assert kinds(docs, "ClusterRole") == [] and kinds(docs, "ClusterRoleBinding") == []
    [external] = kinds(docs, "ExternalSecret")
    assert external["spec"]["dataFrom"][0]["extract"]["key"] == "erp-chatops/slack"


def test_schema_refuses_bad_values(helm: str):
    bad = subprocess.run([helm, "lint", str(ERP), "--set", "services.employee.replicas=lots"], capture_output=True,
                         text=True)
    assert bad.returncode != 0
    bad = subprocess.run([helm, "template", "x", str(ERP), "--set", "services.employee.image.tag=a b"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "tag" in bad.stderr


def test_the_bot_container_gives_boto3_its_region(helm: str):
    """botocore reads AWS_DEFAULT_REGION, not AWS_REGION (botocore/configprovider.py): the container's own
    environment, and nothing else, must resolve the region."""
    [deployment] = kinds(render(helm, BOT, namespace="erp-chatops"), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: str(e["value"]) for e in container["env"] if "value" in e}
    code = "import boto3; print(boto3.session.Session().region_name)"
    resolved = subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ["PATH"], **env},
                              capture_output=True, text=True, check=True).stdout.strip()
    assert resolved == "ap-northeast-2"


def test_a_service_without_autoscaling_keeps_its_replica_count(helm: str):
    docs = render(helm, ERP, "values-dev.yaml")
    plain = render_with(helm, "--set", "services.employee.autoscaling.enabled=false")
    employee = next(d for d in kinds(plain, "Deployment") if d["metadata"]["name"] == "employee-service")
    assert employee["spec"]["replicas"] == 2
    assert "employee-service" not in {d["metadata"]["name"] for d in kinds(plain, "HorizontalPodAutoscaler")}
    assert len(kinds(docs, "HorizontalPodAutoscaler")) == 4


def render_with(helm: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([helm, "template", "erp", str(ERP), "-n", "erp-dev", "-f", str(ERP / "values-dev.yaml"),
                          *args], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_the_bot_takes_traffic_on_the_slack_port_only_and_calls_out_to_dns_and_https_only(helm: str):
    """Issue 18 item 11: no NetworkPolicy let anything reach the bot and the bot reach anything."""
    docs = render(helm, BOT, namespace="erp-chatops")
    [policy] = kinds(docs, "NetworkPolicy")
    [deployment] = kinds(docs, "Deployment")
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    open_to_all = [rule for rule in spec["ingress"] if "from" not in rule]
    assert [p["port"] for rule in open_to_all for p in rule["ports"]] == ["http"]  # Slack's requests, probes
    [monitoring] = [rule for rule in spec["ingress"] if "from" in rule]
    assert [p["port"] for p in monitoring["ports"]] == ["metrics"]
    assert monitoring["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    out = sorted((p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"])
    assert out == [(53, "TCP"), (53, "UDP"), (443, "TCP")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PORT"] == str(ports["http"]) and env["METRICS_PORT"] == str(ports["metrics"]) != env["PORT"]
