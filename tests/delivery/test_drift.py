"""What counts as drift, against the shapes a real API server returns (review findings)."""

from __future__ import annotations

from bot.delivery.drift import cluster_drift, quantity


def deployment(**container: object) -> dict:
    return {"spec": {"template": {"spec": {"containers": [{"name": "employee", "image": "r/e:1", **container}]}}}}


def test_what_the_api_server_rewrites_or_adds_is_not_drift():
    declared = deployment(resources={"requests": {"cpu": "1000m", "memory": "0.5Gi"}, "limits": {"cpu": 1}},
                          env=[{"name": "MODE", "value": "prod"}, {"name": "EMPTY", "value": ""},
                               {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                          readinessProbe={"httpGet": {"path": "/health", "port": "http"}})
    live = deployment(resources={"requests": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"},
                                 "limits": {"cpu": "1"}},
                      env=[{"name": "MODE", "value": "prod"}, {"name": "EMPTY"},
                           {"name": "POD", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
                      readinessProbe={"httpGet": {"path": "/health", "port": "http", "scheme": "HTTP"},
                                      "timeoutSeconds": 1, "periodSeconds": 10})
    assert cluster_drift("employee", declared, live) == []
    assert quantity("0.5Gi") == quantity("512Mi") and quantity("1000m") == quantity(1)


def test_a_changed_variable_is_named_never_shown():
    declared = deployment(env=[{"name": "DB_PASSWORD", "value": "s3cret"}])
    live = deployment(env=[{"name": "DB_PASSWORD", "value": "other-s3cret"}, {"name": "DEBUG", "value": "1"}])
    [drift] = cluster_drift("employee", declared, live)
    assert drift.source == "environment changed outside Helm"
    assert drift.actual == "changed: DB_PASSWORD; added: DEBUG" and "s3cret" not in drift.line()
