"""Images and their scan findings in the sandbox's ECR (moto), with realistic CVEs.

moto answers DescribeImageScanFindings with the result configured through its
moto-api for that exact repository and image, so each image gets findings
drawn from the catalog below, and the same counts go into its scan event.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from bot.aws.clients import AwsClients
from sandbox.erp_services import repository_of

# (id, CVSS, package, version, fixed in, title) by severity
CveRow = tuple[str, float, str, str, str | None, str]
CATALOG: dict[str, list[CveRow]] = {
    "CRITICAL": [
        ("CVE-2022-22965", 9.8, "org.springframework:spring-beans", "5.3.17", "5.3.18", "Spring4Shell: RCE via data binding"),
        ("CVE-2023-44981", 9.1, "org.apache.zookeeper:zookeeper", "3.6.3", "3.8.3", "SASL quorum peer auth bypass"),
        ("CVE-2022-37434", 9.8, "zlib1g", "1:1.2.11.dfsg-2", "1:1.2.11.dfsg-2+deb11u2", "inflateGetHeader heap overflow"),
    ],
    "HIGH": [
        ("CVE-2023-44487", 7.5, "io.netty:netty-codec-http2", "4.1.97.Final", "4.1.100.Final", "HTTP/2 rapid reset"),
        ("CVE-2022-1471", 8.3, "org.yaml:snakeyaml", "1.33", "2.0", "Constructor deserialization RCE"),
        ("CVE-2023-6378", 7.5, "ch.qos.logback:logback-classic", "1.2.12", "1.2.13", "Serialization DoS"),
        ("CVE-2023-25194", 8.8, "org.apache.kafka:kafka-clients", "3.3.1", "3.4.0", "JNDI injection via SASL JAAS"),
        ("CVE-2022-42003", 7.5, "com.fasterxml.jackson.core:jackson-databind", "2.13.3", "2.13.4.1",
         "Deep wrapper array nesting DoS"),
        ("CVE-2023-4911", 7.8, "libc6", "2.31-13+deb11u5", "2.31-13+deb11u7", "Looney Tunables"),
    ],
    "MEDIUM": [
        ("CVE-2023-20863", 6.5, "org.springframework:spring-expression", "5.3.26", "5.3.27", "SpEL DoS"),
        ("CVE-2024-47535", 5.5, "io.netty:netty-common", "4.1.97.Final", "4.1.115.Final", "Windows env file DoS"),
        ("CVE-2023-2976", 7.1, "com.google.guava:guava", "31.1-jre", "32.0.0-jre", "Temp dir permissions"),
        ("CVE-2023-34055", 5.3, "org.springframework.boot:spring-boot-actuator", "2.7.16", "2.7.18",
         "Actuator DoS"),
        ("CVE-2023-5363", 7.5, "libssl3", "3.0.9-1", "3.0.11-1~deb12u2", "Key and IV length processing"),
    ],
    "LOW": [
        ("CVE-2011-3374", 3.7, "apt", "2.2.4", None, "apt-key does not verify keyrings"),
        ("CVE-2022-3219", 3.3, "gnupg", "2.2.27-2+deb11u2", None, "Compressed packet DoS"),
        ("CVE-2023-4039", 4.8, "gcc-10-base", "10.2.1-6", None, "-fstack-protector on AArch64"),
    ],
}
PER_SEVERITY = {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 5, "LOW": 3}  # a typical service image


def findings_for(repository: str, tag: str, critical: int = 0) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Severity counts and basic-scan findings for an image, stable for the same repository and tag."""
    seed = int(hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest(), 16)
    wanted = {**PER_SEVERITY, "CRITICAL": critical}
    counts: dict[str, int] = {}
    findings = []
    for severity, n in wanted.items():
        pool = CATALOG[severity]
        for i in range(n):
            cve, score, package, version, _fixed, title = pool[(seed + i) % len(pool)]
            findings.append({
                "name": cve if i < len(pool) else f"{cve}#{i}", "description": title, "severity": severity,
                "uri": f"https://nvd.nist.gov/vuln/detail/{cve}",
                "attributes": [{"key": "package_name", "value": package}, {"key": "package_version", "value": version},
                               {"key": "CVSS3_SCORE", "value": str(score)}],
            })
        if n:
            counts[severity] = n  # AWS leaves out the levels with no findings
    return counts, findings


def publish_image(aws: AwsClients, repository: str, tag: str, critical: int = 0, *, status: str = "COMPLETE",
                  description: str | None = None) -> tuple[dict[str, int], str]:
    """Push an image (its manifest) to ECR, scan it, and configure its findings; returns (counts, digest).

    `status` is ECR's scan status (botocore's ECR model, ScanStatus): COMPLETE for basic scanning, ACTIVE
    for enhanced (Inspector) scanning, which reports its findings as `enhancedFindings`; a status where the
    scan could not run (FAILED, UNSUPPORTED_IMAGE, ...) has no findings, only the status's description.
    """
    ecr = aws.client("ecr")
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                                      "digest": "sha256:" + hashlib.sha256(f"cfg{repository}{tag}".encode()).hexdigest()},
                           # moto derives the image digest from the layers: each image gets its own
                           "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                       "size": 52_428_800,
                                       "digest": "sha256:" + hashlib.sha256(f"layer{repository}{tag}".encode()).hexdigest()}]})
    pushed = ecr.put_image(repositoryName=repository, imageManifest=manifest, imageTag=tag)
    digest = pushed["image"]["imageId"]["imageDigest"]
    ecr.start_image_scan(repositoryName=repository, imageId={"imageTag": tag})
    counts, findings = findings_for(repository, tag, critical)
    found: dict[str, Any] = {"imageScanCompletedAt": datetime.now(UTC).timestamp(),
                             "vulnerabilitySourceUpdatedAt": datetime.now(UTC).timestamp(),
                             "findingSeverityCounts": counts}
    if status == "ACTIVE":
        found["enhancedFindings"] = [_as_enhanced(f, repository) for f in findings]
        default = "Continuous scan is selected for image."
    elif status == "COMPLETE":
        found["findings"] = findings
        default = "The scan was completed successfully."
    else:
        found, counts = {}, {}
        default = f"The scan could not run ({status})."
    result = {
        "registryId": pushed["image"]["registryId"], "repositoryName": repository,
        "imageId": {"imageDigest": digest, "imageTag": tag},
        "imageScanStatus": {"status": status, "description": description or default},
        **({"imageScanFindings": found} if found else {}),
    }
    endpoint = ecr.meta.endpoint_url
    request = urllib.request.Request(  # noqa: S310 - moto's own API on loopback
        f"{endpoint}/moto-api/static/ecr/scan-finding-results", method="POST",
        data=json.dumps({"results": [result], "region": ecr.meta.region_name,
                         "account_id": pushed["image"]["registryId"]}).encode(),  # moto keys them by account
        headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310
    return counts, digest


def create_repositories(aws: AwsClients, services: list[str]) -> None:
    ecr = aws.client("ecr")
    for service in services:
        ecr.create_repository(repositoryName=repository_of(service),
                              imageScanningConfiguration={"scanOnPush": True})


def _as_enhanced(basic: dict[str, Any], repository: str) -> dict[str, Any]:
    """A basic finding as Inspector reports it under enhanced scanning (ECR's EnhancedImageScanFinding)."""
    attrs = {a["key"]: a["value"] for a in basic["attributes"]}
    return {"awsAccountId": "806332783810", "severity": basic["severity"], "score": float(attrs["CVSS3_SCORE"]),
            "status": "ACTIVE", "title": f"{basic['name']} - {attrs['package_name']}", "type": "PACKAGE_VULNERABILITY",
            "description": basic["description"],
            "resources": [{"type": "AWS_ECR_CONTAINER_IMAGE", "id": f"arn:aws:ecr:ap-northeast-2:806332783810:"
                                                                    f"repository/{repository}"}],
            "packageVulnerabilityDetails": {
                "vulnerabilityId": basic["name"].split("#")[0], "source": "NVD", "sourceUrl": basic["uri"],
                "vulnerablePackages": [{"name": attrs["package_name"], "version": attrs["package_version"]}]}}
