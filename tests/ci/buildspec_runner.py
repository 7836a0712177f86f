"""Runs buildspec.yml the way CodeBuild does, on this machine.

Phases in order (install, pre_build, build, post_build), each command in bash
with the environment carried from one command to the next; `finally` blocks;
`on-failure` (ABORT by default, CONTINUE); a failed build phase still runs
post_build; CODEBUILD_BUILD_SUCCEEDING goes to 0 after a failure;
env.variables, env.parameter-store and env.secrets-manager resolved against
AWS (moto's server here) as CodeBuild resolves them; exported-variables read
at the end. Only `docker` is replaced, by tests/ci/docker_stand_in.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import yaml

PHASES = ("install", "pre_build", "build", "post_build")
TOP_KEYS = {"version", "run-as", "env", "proxy", "batch", "phases", "reports", "artifacts", "cache"}
ENV_KEYS = {"shell", "variables", "parameter-store", "exported-variables", "secrets-manager", "git-credential-helper"}
PHASE_KEYS = {"run-as", "on-failure", "runtime-versions", "commands", "finally"}


class BuildspecInvalid(Exception):
    pass


def validate(spec: Any) -> None:
    """CodeBuild's buildspec format: keys and types (the checks CodeBuild makes before running)."""
    if not isinstance(spec, dict):
        raise BuildspecInvalid("a buildspec is a YAML mapping")
    if str(spec.get("version")) not in ("0.2", "0.1"):
        raise BuildspecInvalid("version must be 0.2")
    unknown = set(spec) - TOP_KEYS
    if unknown:
        raise BuildspecInvalid(f"unknown top-level keys: {sorted(unknown)}")
    env = spec.get("env", {})
    if not isinstance(env, dict) or set(env) - ENV_KEYS:
        raise BuildspecInvalid(f"env: unknown keys {sorted(set(env) - ENV_KEYS)}")
    for key in ("variables", "parameter-store", "secrets-manager"):
        for name, value in (env.get(key) or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise BuildspecInvalid(f"env.{key}.{name}: values must be strings (quote numbers)")
    if not isinstance(env.get("exported-variables", []), list):
        raise BuildspecInvalid("env.exported-variables must be a list")
    phases = spec.get("phases")
    if not isinstance(phases, dict) or set(phases) - set(PHASES):
        raise BuildspecInvalid("phases: only install, pre_build, build and post_build")
    for name, phase in phases.items():
        if not isinstance(phase, dict) or set(phase) - PHASE_KEYS:
            raise BuildspecInvalid(f"phases.{name}: unknown keys")
        if "runtime-versions" in phase and name != "install":
            raise BuildspecInvalid(f"phases.{name}: runtime-versions only in install")
        if phase.get("on-failure", "ABORT") not in ("ABORT", "CONTINUE"):
            raise BuildspecInvalid(f"phases.{name}.on-failure must be ABORT or CONTINUE")
        for key in ("commands", "finally"):
            if key in phase and not (isinstance(phase[key], list) and all(isinstance(c, str) for c in phase[key])):
                raise BuildspecInvalid(f"phases.{name}.{key} must be a list of strings")


@dataclass
class BuildResult:
    phases: dict[str, str] = field(default_factory=dict)  # phase -> SUCCEEDED / FAILED / skipped
    exported: dict[str, str] = field(default_factory=dict)
    output: str = ""

    @property
    def succeeded(self) -> bool:
        return all(s == "SUCCEEDED" for s in self.phases.values()) and len(self.phases) > 0


def resolve_env(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("env", {})
    out = dict(env.get("variables") or {})
    ssm = boto3.client("ssm")
    for name, parameter in (env.get("parameter-store") or {}).items():
        out[name] = ssm.get_parameter(Name=parameter, WithDecryption=True)["Parameter"]["Value"]
    sm = boto3.client("secretsmanager")
    for name, reference in (env.get("secrets-manager") or {}).items():
        secret_id, _, key = reference.partition(":")
        value = sm.get_secret_value(SecretId=secret_id)["SecretString"]
        out[name] = json.loads(value)[key.split(":")[0]] if key else value
    return out


class BuildspecRunner:
    def __init__(self, buildspec: Path, source: Path, environ: dict[str, str]) -> None:
        self.spec = yaml.safe_load(buildspec.read_text())
        validate(self.spec)
        self.source = source
        self.environ = environ
        self.state = source.parent / f"{source.name}-codebuild-env.sh"

    def _run_command(self, command: str, log: list[str]) -> int:
        # Each command in bash, in the source directory, with what earlier commands exported.
        script = (f"set -a; [ -f {shlex.quote(str(self.state))} ] && . {shlex.quote(str(self.state))}; set +a\n"
                  f"trap 'export -p > {shlex.quote(str(self.state))}' EXIT\n{command}\n")
        proc = subprocess.run(["bash", "-c", script], cwd=self.source, env=self.environ, capture_output=True,
                              text=True, timeout=900)
        log.append(f"$ {command.strip()}\n{proc.stdout}{proc.stderr}")
        return proc.returncode

    def _set(self, name: str, value: str) -> None:
        with self.state.open("a") as f:
            f.write(f"export {name}={shlex.quote(value)}\n")

    def run(self, variables: dict[str, str]) -> BuildResult:
        result = BuildResult()
        log: list[str] = []
        self.state.unlink(missing_ok=True)
        for name, value in {**resolve_env(self.spec), **variables, "CODEBUILD_BUILD_SUCCEEDING": "1",
                            "CODEBUILD_SRC_DIR": str(self.source)}.items():
            self._set(name, value)
        stop = False
        for phase_name in PHASES:
            phase = self.spec["phases"].get(phase_name)
            if phase is None:
                continue
            if stop:
                result.phases[phase_name] = "skipped"
                continue
            status = "SUCCEEDED"
            for command in phase.get("commands", []):
                if self._run_command(command, log) != 0:
                    status = "FAILED"
                    break
            for command in phase.get("finally", []):
                if self._run_command(command, log) != 0:
                    status = "FAILED"
            result.phases[phase_name] = status
            if status == "FAILED":
                self._set("CODEBUILD_BUILD_SUCCEEDING", "0")
                if phase.get("on-failure", "ABORT") == "ABORT" and phase_name in ("install", "pre_build"):
                    stop = True  # no build; post_build runs only after the build phase itself
                # a failed build phase goes on to post_build, as CodeBuild does
        final = subprocess.run(["bash", "-c", f". {shlex.quote(str(self.state))}; env -0"], capture_output=True,
                               text=True, env={"PATH": os.environ["PATH"]})
        env = dict(e.split("=", 1) for e in final.stdout.split("\0") if "=" in e)
        result.exported = {n: env.get(n, "") for n in self.spec.get("env", {}).get("exported-variables", [])}
        result.output = "\n".join(log)
        return result
