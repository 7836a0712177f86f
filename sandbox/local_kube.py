"""A real Kubernetes API server on this machine, as controller-runtime's envtest runs one.

etcd (Debian's etcd-server) and kube-apiserver (built by scripts/build-test-tools.sh)
on free loopback ports, with a CA and serving certificate made here, token
authentication, RBAC on, and kubeconfigs for an admin and for any service account.
No kubelet or controllers run: whoever needs a rollout to progress plays the
Deployment controller through the status subresource (see `set_rollout`).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sandbox.local_aws import free_port, stop_process


class KubeUnavailable(Exception):
    pass


def find_tools() -> Path | None:
    """The directory holding kube-apiserver and helm, if they have been built."""
    given = os.environ.get("ERP_TOOLS_BIN")
    if given and (Path(given) / "kube-apiserver").exists():
        return Path(given)
    return None


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _certs(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1 / localhost; returns (ca, cert, key) paths."""
    now = dt.datetime.now(dt.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erp-chatops-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = _key()
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (workdir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (workdir / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (workdir / "apiserver.key").write_bytes(_pem_key(key))
    sa = _key()
    (workdir / "sa.key").write_bytes(_pem_key(sa))
    (workdir / "sa.pub").write_bytes(sa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return workdir / "ca.crt", workdir / "apiserver.crt", workdir / "apiserver.key"


class LocalKube:
    def __init__(self, tools: Path, workdir: Path | None = None) -> None:
        etcd = shutil.which("etcd")
        if etcd is None or not (tools / "kube-apiserver").exists():
            raise KubeUnavailable("etcd (apt-get install etcd-server) or kube-apiserver (make tools) is missing")
        self.tools = tools
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="erp-kube-"))
        self.admin_token = secrets.token_hex(16)
        ca, cert, key = _certs(self.workdir)
        self.ca = ca
        (self.workdir / "tokens.csv").write_text(f'{self.admin_token},admin,admin,"system:masters"\n')
        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._logs = [(self.workdir / "etcd.log").open("w"), (self.workdir / "apiserver.log").open("w")]
        self.etcd = subprocess.Popen(  # noqa: S603 - fixed arguments
            [etcd, "--data-dir", str(self.workdir / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}", "--log-level", "warn"],
            stdout=self._logs[0], stderr=subprocess.STDOUT)
        self.apiserver: subprocess.Popen[bytes] | None = None
        try:
            self.apiserver = self._start_apiserver(tools, etcd_port, ca, cert, key)
            self._wait_ready()
        except BaseException:
            self.stop()  # neither process outlives a start that failed
            raise
        self.kubeconfig = self.write_kubeconfig(self.admin_token, "admin")

    def _start_apiserver(self, tools: Path, etcd_port: int, ca: Path, cert: Path, key: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603 - fixed arguments
            [str(tools / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
             f"--secure-port={self.port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--tls-cert-file={cert}", f"--tls-private-key-file={key}", f"--client-ca-file={ca}",
             f"--token-auth-file={self.workdir / 'tokens.csv'}", "--authorization-mode=RBAC",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-account-key-file={self.workdir / 'sa.pub'}",
             f"--service-account-signing-key-file={self.workdir / 'sa.key'}",
             "--service-cluster-ip-range=10.96.0.0/24", f"--cert-dir={self.workdir / 'certs'}",
             "--enable-priority-and-fairness=false", "--disable-admission-plugins=ServiceAccount", "--v=1"],
            stdout=self._logs[1], stderr=subprocess.STDOUT)

    def _ssl(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def request(self, method: str, path: str, body: Any = None, token: str | None = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={  # noqa: S310
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=self._ssl(), timeout=10) as resp:  # noqa: S310
                raw = resp.read()
                return resp.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw[:1] == b"{" else raw.decode()

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc, name in ((self.etcd, "etcd"), (self.apiserver, "kube-apiserver")):
                if proc is not None and proc.poll() is not None:
                    log = (self.workdir / f"{'etcd' if name == 'etcd' else 'apiserver'}.log").read_text()[-2000:]
                    raise KubeUnavailable(f"{name} exited with {proc.returncode}: {log}")
            try:
                status, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            except (OSError, ssl.SSLError):
                pass
            time.sleep(0.2)
        raise KubeUnavailable(f"kube-apiserver not ready within {timeout}s")

    def write_kubeconfig(self, token: str, name: str) -> Path:
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": name,
            "clusters": [{"name": "local", "cluster": {
                "server": self.url, "certificate-authority-data": base64.b64encode(self.ca.read_bytes()).decode()}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
        }
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def apply(self, manifest: dict[str, Any]) -> None:
        """Create an object as the admin (enough for fixtures: namespaces, CRDs, service accounts)."""
        api = "/api/v1" if manifest["apiVersion"] == "v1" else f"/apis/{manifest['apiVersion']}"
        plural = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Secret": "secrets",
                  "CustomResourceDefinition": "customresourcedefinitions",
                  "ResourceQuota": "resourcequotas"}[manifest["kind"]]
        ns = manifest["metadata"].get("namespace")
        path = f"{api}/namespaces/{ns}/{plural}" if ns else f"{api}/{plural}"
        status, body = self.request("POST", path, manifest)
        if status not in (200, 201, 409):
            raise KubeUnavailable(f"cannot create {manifest['kind']}: {body}")

    def install_external_secrets_crds(self) -> None:
        """The External Secrets Operator's two kinds the charts use, so they install as in a real cluster.

        Only the declarations: no operator runs here, and the schema is left open.
        """
        for kind, plural in (("ExternalSecret", "externalsecrets"), ("SecretStore", "secretstores")):
            self.apply({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.external-secrets.io"},
                "spec": {"group": "external-secrets.io", "scope": "Namespaced",
                         "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                         "versions": [{"name": "v1beta1", "served": True, "storage": True, "schema": {
                             "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
            })
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # established once the API server serves the new group
            if self.request("GET", "/apis/external-secrets.io/v1beta1")[0] == 200:
                return
            time.sleep(0.2)
        raise KubeUnavailable("the External Secrets CRDs were not established")

    def service_account_token(self, namespace: str, name: str) -> str:
        status, body = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                     "spec": {"expirationSeconds": 3600}})
        if status != 201:
            raise KubeUnavailable(f"cannot get a token for {namespace}/{name}: {body}")
        return str(body["status"]["token"])

    def set_rollout(self, namespace: str, name: str, *, ready: int | None = None,
                    failed_reason: str | None = None) -> None:
        """Play the Deployment controller: report the current generation as rolled out to `ready` pods."""
        status, dep = self.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        if status != 200:
            raise KubeUnavailable(f"no deployment {namespace}/{name}")
        desired = int(dep["spec"].get("replicas", 1))
        ready = desired if ready is None else ready
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        progressing = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                       "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now,
                       "lastTransitionTime": now}
        if failed_reason:
            progressing.update(status="False", reason="ProgressDeadlineExceeded", message=failed_reason)
        elif ready < desired:
            progressing.update(reason="ReplicaSetUpdated", message="ReplicaSet is progressing.")
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"], "replicas": desired, "updatedReplicas": ready,
            "readyReplicas": ready, "availableReplicas": ready, "unavailableReplicas": max(desired - ready, 0),
            "conditions": [{"type": "Available", "status": "True" if ready else "False", "reason": "MinimumReplicas",
                            "lastUpdateTime": now, "lastTransitionTime": now}, progressing],
        }
        status, body = self.request("PUT", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", dep)
        if status != 200:
            raise KubeUnavailable(f"cannot set the status of {namespace}/{name}: {body}")

    def observe(self, namespace: str, name: str) -> None:
        """Play the Deployment controller's first step on a new spec: it observes the generation and starts a
        new ReplicaSet; the old pods still serve (maxUnavailable 0), none is updated yet. Until then
        status.observedGeneration trails metadata.generation (Kubernetes' Deployment documentation, "Deployment
        status"; `kubectl rollout status` waits for it)."""
        status, dep = self.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        if status != 200:
            raise KubeUnavailable(f"no deployment {namespace}/{name}")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        current = dep.get("status") or {}
        serving = int(current.get("availableReplicas", 0))
        dep["status"] = {**current, "observedGeneration": dep["metadata"]["generation"], "updatedReplicas": 0,
                         "conditions": [c for c in current.get("conditions", []) if c.get("type") != "Progressing"]
                         + [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetCreated",
                             "message": "Created new replica set.", "lastUpdateTime": now, "lastTransitionTime": now}],
                         "replicas": max(serving, int(dep["spec"].get("replicas", 1)))}
        status, body = self.request("PUT", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", dep)
        if status != 200:
            raise KubeUnavailable(f"cannot set the status of {namespace}/{name}: {body}")

    def autoscale(self, namespace: str, demand: dict[str, int] | None = None) -> dict[str, int]:
        """Play the HPA controller: each HPA sets its Deployment's replicas through the scale subresource, to
        what the load asks for (`demand`, by Deployment name; otherwise what it runs now), never outside
        minReplicas..maxReplicas (Kubernetes' "Horizontal Pod Autoscaling" documentation). Returns the
        replicas it set."""
        status, listing = self.request("GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers")
        if status != 200:
            raise KubeUnavailable(f"cannot list the HPAs of {namespace}: {listing}")
        scaled: dict[str, int] = {}
        for hpa in listing.get("items", []):
            target = hpa["spec"]["scaleTargetRef"]["name"]
            path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{target}/scale"
            status, scale = self.request("GET", path)
            if status != 200:
                continue
            wanted = (demand or {}).get(target, int(scale["spec"].get("replicas", 1)))
            replicas = max(int(hpa["spec"].get("minReplicas", 1)), min(int(hpa["spec"]["maxReplicas"]), wanted))
            if replicas != scale["spec"].get("replicas"):
                scale["spec"]["replicas"] = replicas
                status, body = self.request("PUT", path, scale)
                if status != 200:
                    raise KubeUnavailable(f"cannot scale {namespace}/{target}: {body}")
            scaled[target] = replicas
        return scaled

    def stop(self) -> None:
        for proc in (self.apiserver, self.etcd):
            if proc is not None:
                stop_process(proc, 15)
        for f in self._logs:
            f.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
