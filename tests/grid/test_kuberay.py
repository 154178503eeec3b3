"""deploy/kuberay, validated offline: core Kubernetes objects (and the pod templates inside the ray.io ones) with
kubernetes-validate against a pinned Kubernetes release, RayCluster / RayJob against the project's schema of
KubeRay v1.6.2's fields (deploy/kuberay/schema), and the project's own promises: nothing secret written down,
Ollama on loopback, and the resources and labels Ray advertises agreeing with the Ollama sidecar that serves them.
Nothing here talks to a Kubernetes cluster; what only a real one would show is said in docs/clusters.md."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from grid import cluster_secrets
from grid.placement import MAX_MODELS_LABEL
from trainables.providers.ollama import PORT_LABEL

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
SCHEMA = yaml.safe_load((KUBERAY / "schema" / "kuberay-v1.6.2.schema.yaml").read_text())
K8S_VERSION = "1.31.0"  # oldest Kubernetes the manifests need: native sidecars (restartPolicy: Always) are GA-beta


def _docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERAY.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _docs() if doc["kind"] == kind]


def _raycluster() -> dict[str, Any]:
    (cluster,) = _kind("RayCluster")
    return cluster


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec", spec) if doc["kind"] == "RayJob" else spec
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])] if "headGroupSpec" in cluster else []
    templates = [g["template"] for g in groups]
    if "submitterPodTemplate" in spec:
        templates.append(spec["submitterPodTemplate"])
    return templates


def _validate_ray(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, SCHEMA)
    for template in _pod_templates(doc):
        # a core v1 PodTemplate wraps the template, so Kubernetes' own schema checks every container field
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                      "template": template}, K8S_VERSION, strict=True)  # fmt: skip


def test_every_manifest_validates() -> None:
    docs = _docs()
    assert {d["kind"] for d in docs} >= {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service", "Job"}
    for doc in docs:
        if doc["apiVersion"].startswith("ray.io/"):
            _validate_ray(doc)
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda c: c["spec"].__setitem__("workerGroupSpec", []), "workerGroupSpec"),  # a typo of workerGroupSpecs
        (lambda c: c["spec"]["workerGroupSpecs"][0]["rayStartParams"].__setitem__("num-gpus", 1), "is not of type"),
        (lambda c: c["spec"]["authOptions"].__setitem__("mode", "on"), "'on' is not one of"),
        (lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("imag", "x"), "imag"),
    ],
)
def test_validation_catches_a_broken_manifest(mutate: Any, error: str) -> None:
    cluster = copy.deepcopy(_raycluster())
    mutate(cluster)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError), match=error):
        _validate_ray(cluster)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_gpu_workers_advertise_what_their_ollama_sidecar_serves() -> None:
    cluster = _raycluster()
    assert cluster["spec"]["rayVersion"] == __import__("ray").__version__  # the image's Ray (constraints.txt)
    (group,) = [g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    params = group["rayStartParams"]
    assert all(isinstance(v, str) for v in params.values())
    resources = json.loads(json.loads(params["resources"]))  # KubeRay's documented form: a quoted JSON string
    labels = dict(pair.split("=", 1) for pair in params["labels"].split(","))
    pod = group["template"]["spec"]
    (ollama,) = [c for c in pod["initContainers"] if c["name"] == "ollama"]
    (ray,) = pod["containers"]
    env = _env(ollama)
    host, port = env["OLLAMA_HOST"].rsplit(":", 1)
    assert host == "127.0.0.1"  # Ollama has no authentication: the pod's loopback only
    assert labels[PORT_LABEL] == port
    assert resources["ollama_slots"] == int(env["OLLAMA_NUM_PARALLEL"])
    assert labels[MAX_MODELS_LABEL] == env["OLLAMA_MAX_LOADED_MODELS"]
    # the sidecar holds the GPU; Ray advertises it without requesting it (Kubernetes does not share a GPU)
    assert ollama["resources"]["limits"]["nvidia.com/gpu"] == "1" and params["num-gpus"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(ray.get("resources", {}))
    assert ollama["restartPolicy"] == "Always" and ollama["startupProbe"]  # starts before Ray, models pulled
    # the registry's window, and the study's Ollama models pulled
    from trainables.registry import load_registry

    registry = load_registry()
    ollama_models = {e.id for e in registry.models.values() if e.provider == "ollama"}
    assert {int(env["OLLAMA_CONTEXT_LENGTH"])} == {
        e.context for e in registry.models.values() if e.provider == "ollama"
    }
    assert set(env["ARB_OLLAMA_MODELS"].split()) == ollama_models
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no trial on the head


def test_vllm_workers_serve_the_model_their_label_names() -> None:
    """The vLLM group's sidecar serves the registry entry its label names, on the labelled loopback port, with the
    entry's window, prefix caching and a batch size; it holds the GPU and Ray starts once /health answers."""
    from trainables.registry import load_registry

    (group,) = [g for g in _raycluster()["spec"]["workerGroupSpecs"] if g["groupName"] == "vllm"]
    labels = dict(pair.split("=", 1) for pair in group["rayStartParams"]["labels"].split(","))
    pod = group["template"]["spec"]
    (vllm,) = [c for c in pod["initContainers"] if c["name"] == "vllm"]
    entry = next(e for e in load_registry().models.values() if e.id == labels["arb-vllm-model"])
    assert entry.provider == "vllm" and "resources" not in group["rayStartParams"]  # no Ollama slots here
    args = vllm["args"]
    for flag in (f"--served-model-name={entry.id}", "--host=127.0.0.1", f"--port={labels['arb-vllm-port']}",
                 "--enable-prefix-caching", f"--max-model-len={entry.context}"):  # fmt: skip
        assert flag in args, flag
    assert any(a.startswith("--max-num-seqs=") for a in args)
    probe = vllm["startupProbe"]["httpGet"]
    assert (probe["path"], str(probe["port"])) == ("/health", labels["arb-vllm-port"])
    assert vllm["restartPolicy"] == "Always" and vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "value" not in next(e for e in vllm["env"] if e["name"] == "HF_TOKEN")  # from a Secret, never written


def test_token_auth_and_the_job_that_runs_a_grid() -> None:
    cluster = _raycluster()
    assert cluster["spec"]["authOptions"] == {"mode": "token", "secretName": "arb-ray-token"}
    (job,) = _kind("RayJob")
    assert re.fullmatch(r"arb run [\w./-]+", job["spec"]["entrypoint"])
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    submitter = _env(job["spec"]["submitterPodTemplate"]["spec"]["containers"][0])
    assert submitter["RAY_AUTH_MODE"] == "token"
    assert submitter["RAY_AUTH_TOKEN"]["secretKeyRef"] == {"name": "arb-ray-token", "key": "auth_token"}
    # the grid it names exists
    from grid.spec import load_grid

    load_grid(job["spec"]["entrypoint"].split()[-1])


def test_nothing_secret_is_written_and_the_record_outlives_the_cluster() -> None:
    docs = _docs()
    text = "\n".join(p.read_text() for p in KUBERAY.glob("*.yaml"))
    assert not _kind("Secret")  # Secrets are generated (`cluster_secrets k8s-secrets`), never committed
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY")
    for doc in docs:
        for container in _containers(doc):
            for var in container.get("env", []):
                if secretish.search(var["name"]) and var["name"] not in ("RAY_AUTH_MODE",):
                    assert "value" not in var, (doc["metadata"]["name"], var)  # only from a Secret
    assert not re.search(r"postgresql://[^@\s]*:[^@\s]*@", text)  # no password in a database URI
    # every Secret a manifest reads is one `k8s-secrets` makes, or an optional one the user creates (API keys, the
    # vLLM checkpoint's Hugging Face token)
    read = set(re.findall(r"name: (arb-[a-z-]+)\s+key:", text)) | set(
        re.findall(r"secretRef:\s+name: (arb-[a-z-]+)", text)
    )
    assert read - {"arb-api-keys", "arb-hf"} <= set(cluster_secrets.K8S_SECRETS), read
    for user_made in ("arb-api-keys", "arb-hf"):
        assert re.search(rf"name: {user_made}\s+key: \S+\s+optional: true", text), user_made
    generated = list(yaml.safe_load_all(cluster_secrets.k8s_secrets("arb")))
    assert {d["metadata"]["name"] for d in generated if d} == set(cluster_secrets.K8S_SECRETS)
    for doc in filter(None, generated):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # the tracking server: authenticated, on PostgreSQL and a volume, none of them inside the RayCluster
    (mlflow,) = [d for d in _kind("Deployment") if d["metadata"]["name"] == "arb-mlflow"]
    args = " ".join(mlflow["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--app-name=basic-auth" in args and "--allowed-hosts=" in args and "postgresql://" in args
    claims = {d["metadata"]["name"]: d for d in _kind("PersistentVolumeClaim")}
    assert claims["arb-results"]["spec"]["accessModes"] == ["ReadWriteMany"]  # every Ray node writes Tune's state
    assert _kind("StatefulSet")[0]["spec"]["volumeClaimTemplates"]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("containers", "initContainers"):
                if isinstance(node.get(key), list):
                    found.extend(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return found
