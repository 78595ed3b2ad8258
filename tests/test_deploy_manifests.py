"""build/deploy/: the Kubernetes example validates, strictly, against a pinned Kubernetes; it, the
Containerfile and the executable agree on the port, /health and /metrics; the base image's glibc is new
enough for what `llmpack inspect` says the executable needs; the resource requests follow the model's
size as build/deploy/resources.py documents."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from llmpack.runtime.about.help_page import ENVIRONMENT, HTTP_ROUTES
from support.commands import llmpack

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "build" / "deploy"
KUBERNETES = "1.30.0"  # pinned: the manifests must not silently come to depend on newer API fields
# glibc of the base images the Containerfile may use (Debian's package versions).
BASE_IMAGE_GLIBC = {"debian:12-slim": (2, 36), "debian:13-slim": (2, 41)}
TINY = {"layers": 2, "kv_heads": 4, "head": 16}  # tests/support/tiny_model.py's defaults


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return list(yaml.safe_load_all((DEPLOY / "llmpack.yaml").read_text()))


@pytest.fixture(scope="module")
def containerfile() -> str:
    return (DEPLOY / "Containerfile").read_text()


def kind(documents: list[dict], name: str) -> dict:
    [document] = [d for d in documents if d["kind"] == name]
    return document


def test_every_manifest_is_valid_for_the_pinned_kubernetes_strictly(documents) -> None:
    assert {d["kind"] for d in documents} == {"Deployment", "Service"}
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)
    # Strict: a misspelt field is an error, not silently ignored by the API server.
    broken = copy.deepcopy(kind(documents, "Deployment"))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_probes_ports_and_scrape_annotations_match_the_executable(documents, containerfile) -> None:
    deployment, service = kind(documents, "Deployment"), kind(documents, "Service")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    [port] = container["ports"]
    routes = {path for method, path, _ in HTTP_ROUTES if method == "GET"}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/health" and check["port"] == port["name"], probe
    assert "/health" in routes and "/metrics" in routes
    for scrape in (pod["metadata"]["annotations"], service["metadata"]["annotations"]):
        assert scrape == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port["containerPort"]),
                               "prometheus.io/path": "/metrics"}
    assert service["spec"]["selector"] == pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]

    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", containerfile, re.MULTILINE).group(1))
    assert entrypoint[:2] == ["/app/model.llmpack", "--server"]
    assert entrypoint[entrypoint.index("--port") + 1] == str(port["containerPort"])
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"  # reachable from outside the container
    assert re.search(r"^EXPOSE (\d+)$", containerfile, re.MULTILINE).group(1) == str(port["containerPort"])
    # The image's user is the one the pod runs as; the cache it points at is a variable the runtime reads.
    assert re.search(r"^USER (\d+)$", containerfile, re.MULTILINE).group(1) == str(pod["spec"]["securityContext"]["runAsUser"])
    assert "LLMPACK_CACHE" in {name for name, _ in ENVIRONMENT}
    assert {"name": "LLMPACK_CACHE", "value": "/cache"} in container["env"]
    assert "ENV LLMPACK_CACHE=/cache" in containerfile
    # The Service's names are the ones the server's DNS-rebinding guard is told to answer to.
    allowed = container["args"][container["args"].index("--allowed-hosts") + 1].split(",")
    assert service["metadata"]["name"] in allowed


def test_the_containerfile_copies_what_the_demo_builds(containerfile) -> None:
    executable = re.search(r"^ARG EXECUTABLE=(\S+)$", containerfile, re.MULTILINE).group(1)
    assert re.search(r"^COPY --chmod=0755 \$\{EXECUTABLE\} /app/model\.llmpack$", containerfile, re.MULTILINE)
    # The build context is dist/, where build/demo.sh writes the executable.
    assert f"-o dist/{executable} " in (ROOT / "build" / "demo.sh").read_text()
    assert "podman build -f build/deploy/Containerfile -t llmpack-gemma:1 dist/" in containerfile


def test_the_base_images_glibc_is_new_enough_for_the_executable(containerfile, tiny_bundle: Path) -> None:
    image = re.search(r"^FROM (\S+)$", containerfile, re.MULTILINE).group(1)
    inspected = llmpack("inspect", "--json", str(tiny_bundle))
    assert inspected.returncode == 0, inspected.stderr
    needs = json.loads(inspected.stdout)["manifest"]["runtime"]["min_glibc"]
    assert BASE_IMAGE_GLIBC[image] >= tuple(int(part) for part in needs.split(".")), (image, needs)


def resources_module():
    spec = importlib.util.spec_from_file_location("deploy_resources", DEPLOY / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("ctx", [2048, 16384])
def test_resource_requests_follow_the_models_size(tiny_bundle: Path, ctx: int) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    printed = subprocess.run([sys.executable, str(DEPLOY / "resources.py"), str(tiny_bundle), "-c", str(ctx)],
                             check=False, capture_output=True, text=True, env=env, timeout=120)
    assert printed.returncode == 0, printed.stderr
    block = yaml.safe_load(printed.stdout)["resources"]
    weights = json.loads(llmpack("inspect", "--json", str(tiny_bundle)).stdout)["manifest"]["model"]["size"]
    kv_cache = ctx * TINY["layers"] * TINY["kv_heads"] * 2 * TINY["head"] * 2  # keys and values, f16
    request = math.ceil((weights + kv_cache) / 2**20) + resources_module().OVERHEAD_MIB
    assert block == {"requests": {"cpu": "2", "memory": f"{request}Mi"},
                     "limits": {"memory": f"{math.ceil(request * 1.25)}Mi"}}


def test_the_manifests_limit_is_its_request_plus_the_documented_headroom(documents) -> None:
    [container] = kind(documents, "Deployment")["spec"]["template"]["spec"]["containers"]
    request = int(container["resources"]["requests"]["memory"].removesuffix("Mi"))
    limit = int(container["resources"]["limits"]["memory"].removesuffix("Mi"))
    assert limit == math.ceil(request * resources_module().LIMIT_HEADROOM)
    # Weights of the example's model (Gemma 3 270M Q4_K_M, 241 MiB) at least, plus the runtime.
    assert request >= 241 + resources_module().OVERHEAD_MIB
