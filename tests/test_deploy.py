"""The deployment files stay valid and keep the topology docs/deploy.md describes.

``docker compose config`` needs the Compose plugin, which these machines lack (and images cannot
be pulled here), so ``deploy/compose.yaml`` is validated against the Compose Specification's JSON
schema (``deploy/compose-spec.schema.json``: ``compose/config/compose_spec.json`` from the
``docker-compose`` 1.29.2 wheel, Apache-2.0), and tests/test_replicas.py proves the same topology
— replicas, PostgreSQL, Redis, a bucket — with processes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from imagegate.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_file_matches_the_compose_spec() -> None:
    schema = json.loads((DEPLOY / "compose-spec.schema.json").read_text())
    jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)(schema).validate(compose())


def test_compose_topology() -> None:
    services = compose()["services"]
    gateways = sorted(name for name in services if name.startswith("gateway-"))
    assert len(gateways) >= 2
    assert {"postgres", "redis", "minio", "proxy", "migrate", "bucket"} <= set(services)
    for name in gateways:
        gw = services[name]
        assert gw["build"]["dockerfile"] == "Dockerfile" and gw["command"][:2] == ["imagegate", "serve"]
        assert gw["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert gw["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    assert all(f"{name}:8000" in caddyfile for name in gateways)  # the proxy spreads over every replica
    assert "health_uri /readyz" in caddyfile


def test_gateway_config_loads_with_the_compose_environment() -> None:
    env = {k: re.sub(r"\$\{[A-Z_]+:?[-?]([^}]*)\}", r"\1", str(v))
           for k, v in compose()["services"]["gateway-1"]["environment"].items()}
    env |= {"POSTGRES_PASSWORD": "pw", "IMAGEGATE_SECRET_KEY": "s" * 32, "AWS_SECRET_ACCESS_KEY": "minio-secret"}
    settings = load_settings(str(DEPLOY / "imagegate.yaml"), env)
    assert settings.database_url == "postgresql+asyncpg://imagegate:pw@postgres:5432/imagegate"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.storage_url == "s3://imagegate/images"
    assert settings.storage.endpoint_url == "http://minio:9000"
    assert settings.storage.secret_access_key == "minio-secret"
    assert settings.public_url == "http://localhost:8080"


def test_dockerfile_is_multi_stage_non_root_and_without_node() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert sum(line.startswith("FROM ") for line in lines) >= 2
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    assert not re.search(r"\b(node|npm|nodejs)\b", "\n".join(lines))
    assert "pip install" in text and "imagegate" in lines[-1]


def test_kubernetes_manifests() -> None:
    k8s = DEPLOY / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    docs = {}
    for name in kustomization["resources"]:
        doc = yaml.safe_load((k8s / name).read_text())
        docs[doc["kind"]] = doc
    assert {"Deployment", "Service", "Job", "PodDisruptionBudget"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (gateway,) = pod["containers"]
    assert gateway["args"][:2] == ["imagegate", "serve"] and pod["securityContext"]["runAsNonRoot"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert docs["Job"]["spec"]["template"]["spec"]["containers"][0]["command"] == ["imagegate", "migrate"]
    config = kustomization["configMapGenerator"][0]["files"][0].split("=", 1)[1]
    assert (k8s / config).resolve() == DEPLOY / "imagegate.yaml"
