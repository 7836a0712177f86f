"""Rollout state as `kubectl rollout status` reads it (kubectl's rollout_status.go): the controller must have
observed the Deployment's newest generation before anything in its status, an old failure included, counts."""

from __future__ import annotations

from kubernetes.client import (
    V1Container,
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1PodSpec,
    V1PodTemplateSpec,
)

from bot.cluster.kube import rollout_of


def deployment(generation: int, observed: int, *, ready: int = 3, progressing: tuple[str, str] | None = None,
               replicas: int | None = 3) -> V1Deployment:
    conditions = [V1DeploymentCondition(type="Progressing", status=progressing[0], reason=progressing[1])] \
        if progressing else None
    return V1Deployment(
        metadata=V1ObjectMeta(name="employee-service", generation=generation),
        spec=V1DeploymentSpec(replicas=replicas, selector=V1LabelSelector(match_labels={"app": "employee"}),
                              template=V1PodTemplateSpec(spec=V1PodSpec(containers=[
                                  V1Container(name="employee", image="erp/employee-service:v1.1.0")]))),
        status=V1DeploymentStatus(observed_generation=observed, replicas=ready, updated_replicas=ready,
                                  ready_replicas=ready, available_replicas=ready, conditions=conditions))


def test_a_new_generation_is_progressing_even_if_the_last_one_timed_out():
    """A rollback right after a deploy that ran out of time: the old ProgressDeadlineExceeded belongs to the
    previous generation until the controller observes the new one."""
    state = rollout_of(deployment(generation=7, observed=6, progressing=("False", "ProgressDeadlineExceeded")))
    assert state.state == "progressing" and state.reason == "waiting for the controller"


def test_a_timed_out_current_generation_has_failed():
    state = rollout_of(deployment(generation=7, observed=7, ready=1, progressing=("False", "ProgressDeadlineExceeded")))
    assert state.state == "failed" and state.reason == "ProgressDeadlineExceeded"


def test_an_observed_fully_updated_generation_is_complete():
    state = rollout_of(deployment(generation=7, observed=7, progressing=("True", "NewReplicaSetAvailable")))
    assert state.state == "complete" and (state.ready, state.desired, state.image_tag) == (3, 3, "v1.1.0")
