"""deploy/k8s builds (`kubectl kustomize`, offline) into manifests Kubernetes accepts and that run
dlpipe as compose does: both overlays, and the kustomization `dlpipe deploy k8s --out` writes for
a pipelines file of the user's own.

Every built resource is checked in strict mode against the Kubernetes schemas kubernetes-validate
carries (unknown fields are errors), at the oldest and the newest Kubernetes we claim; KEDA's
objects against deploy/k8s/keda.schema.json. Then what they say: the commands, probes, grace
periods, security contexts, Redis's flags, who the NetworkPolicies let reach whom, the GPU.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from services import cli, cli_args, keda
from services.supervisor import CHILD_COMMANDS
from shared import keys
from shared.pipeline_spec import load_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE, Settings
from tests import stagefns
from tests.support.netpolicy import may_connect, selects

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSIONS = (
    "1.30",
    "1.37",
)  # the oldest we claim (PDB unhealthyPodEvictionPolicy), the newest known
KEDA_SCHEMA = json.loads((K8S / "keda.schema.json").read_text())
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
WORKER_KINDS = ("preprocess", "model", "notifier")


@functools.cache
def kubectl() -> str:
    """A kubectl whose built-in kustomize builds deploy/k8s (components: kustomize 4+, kubectl 1.21+),
    else the test skips saying why."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip(
            "no kubectl to run `kubectl kustomize` (`make tools` installs Debian's kubernetes-client)"
        )
    done = subprocess.run(
        [found, "version", "--client"], capture_output=True, text=True, timeout=60, check=False
    )
    version = re.search(r"^Kustomize Version: v(\d+)\.", done.stdout, re.MULTILINE)
    if version is None or int(version.group(1)) < 4:
        pytest.skip(
            f"{found} is too old to build deploy/k8s (its kustomize predates components: kubectl 1.21+ "
            f"needed; Debian 12's kubernetes-client is 1.20): {(done.stdout.strip() or '?').splitlines()[0]}"
        )
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module", autouse=True)
def cached_schemas() -> Iterator[None]:
    """kubernetes-validate reads its 1.2 MB of definitions again for every resource (~45 ms each):
    read each schema file once for this module."""
    with pytest.MonkeyPatch.context() as patch:
        cached = functools.lru_cache(maxsize=None)(kubernetes_validate.utils.schema_contents)
        patch.setattr(kubernetes_validate.utils, "schema_contents", cached)
        yield


@pytest.fixture(scope="module")
def built() -> dict[str, list[dict[str, Any]]]:
    return {overlay: kustomize(K8S / "overlays" / overlay) for overlay in keda.OVERLAYS}


@pytest.fixture(scope="module")
def custom(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """`dlpipe deploy k8s --out` for a pipelines file of our own, in another namespace, then built."""
    root = tmp_path_factory.mktemp("k8s")
    pipelines = root / "mine.yaml"
    pipelines.write_text(yaml.safe_dump(stagefns.pipelines(max_batch_size=4)))
    out = root / "deploy"
    argv = [
        "deploy",
        "k8s",
        "--overlay",
        "gpu",
        "--pipelines-file",
        str(pipelines),
        "--namespace",
        "ml",
        "--registry",
        "registry.example.com/team",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    return pipelines, kustomize(out)


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = find(docs, kind, name)
    return doc


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }


def container(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (only,) = pod_specs(docs)[name]["containers"]
    return only


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def validate_all(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(doc)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {where}: {exc.message}")


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_every_manifest_validates_strictly(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    validate_all(docs)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in ("dlpipe-api", "dlpipe-preprocess", "dlpipe-model", "dlpipe-notifier"):
        assert ("Deployment", name) in kinds and ("PodDisruptionBudget", name) in kinds
    assert ("StatefulSet", "dlpipe-redis") in kinds and ("HorizontalPodAutoscaler", "dlpipe-api") in kinds
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {keda.NAMESPACE}


def test_the_custom_kustomization_validates_and_scales_its_own_streams(
    custom: tuple[Path, list[dict[str, Any]]],
) -> None:
    pipelines, docs = custom
    validate_all(docs)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"ml"}
    assert one(docs, "Namespace", "ml")
    config = load_pipelines(pipelines)
    want = {
        "dlpipe-preprocess": {
            (keys.stream(p), keys.CPU_GROUP) for s in config.cpu_streams() for p in keys.stage_streams(s)
        },
        "dlpipe-model": {
            (keys.stream(p), keys.MODEL_GROUP)
            for s in config.model_streams().values()
            for p in keys.stage_streams(s)
        },
    }
    for name, streams in want.items():
        triggers = one(docs, "ScaledObject", name)["spec"]["triggers"]
        for count in ("lagCount", "pendingEntriesCount"):
            got = {
                (t["metadata"]["stream"], t["metadata"]["consumerGroup"])
                for t in triggers
                if count in t["metadata"]
            }
            assert got == streams, (name, count)
        assert {t["metadata"]["address"] for t in triggers} == {"dlpipe-redis.ml.svc:6379"}
    # The pipelines file reaches every dlpipe process, from the generated ConfigMap.
    (configmap,) = [
        d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("dlpipe-pipelines-")
    ]
    assert configmap["data"]["pipelines.yaml"] == pipelines.read_text()
    for name, spec in pod_specs(docs).items():
        if name == "dlpipe-redis":
            continue
        (c,) = spec["containers"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "pipelines")
        assert env(c)["DLPIPE_PIPELINES_FILE"] == f"{mount['mountPath']}/pipelines.yaml" and mount["readOnly"]
        volume = next(v for v in spec["volumes"] if v["name"] == "pipelines")
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        assert c["image"].startswith("registry.example.com/team/dlpipe-")


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_each_process_runs_its_supervisor_command_with_its_probes(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = built[overlay]
    parser = cli_args.build_parser()
    specs = pod_specs(docs)
    seen = set()
    for child, args in CHILD_COMMANDS.items():
        c = container(docs, f"dlpipe-{child}")
        assert c["command"][0] == "dlpipe" and tuple(c["command"][1 : 1 + len(args)]) == args, child
        parser.parse_args(c["command"][1:])
        seen.add(child)
        if child == "api":
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert env(c)["DLPIPE_HOST"] == "0.0.0.0"
        else:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert c[probe]["exec"]["command"] == ["dlpipe", "healthcheck", child], (child, probe)
        # Warm shutdown: at least what compose gives it, and what `dlpipe up` gives its children.
        compose_grace = int(COMPOSE[child]["stop_grace_period"].rstrip("s"))
        grace = specs[f"dlpipe-{child}"]["terminationGracePeriodSeconds"]
        assert grace >= compose_grace and grace >= Settings().shutdown_grace_s, child
        assert c["command"] == COMPOSE[child]["command"], child
    assert seen == set(CHILD_COMMANDS)


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_pods_run_unprivileged_on_a_read_only_root(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    for name, spec in pod_specs(built[overlay]).items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would put DLPIPE_API_PORT=tcp://... and the like in the environment.
        assert spec["enableServiceLinks"] is False, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
            assert "emptyDir" in volumes[tmp["name"]], name
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_redis_runs_as_compose_runs_it(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    redis = container(docs, "dlpipe-redis")
    assert redis["image"] == COMPOSE["redis"]["image"] and redis["image"].startswith("redis:7")  # lag: 7+
    assert redis["args"] == [str(part) for part in COMPOSE["redis"]["command"]]
    text = " ".join(redis["args"])
    assert "--appendonly yes" in text and "--appendfsync everysec" in text
    assert "--maxmemory-policy noeviction" in text and "--maxmemory 2gb" in text
    statefulset = one(docs, "StatefulSet", "dlpipe-redis")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in redis["volumeMounts"]
    assert statefulset["spec"]["replicas"] == 1
    # The pods' Redis is this one (the URL in the ConfigMap; a Secret may override it).
    (config,) = [d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("dlpipe-config-")]
    assert config["data"]["DLPIPE_REDIS_URL"] == f"redis://{keda.REDIS_SERVICE}:6379/0"
    assert one(docs, "Service", keda.REDIS_SERVICE)["spec"]["clusterIP"] == "None"


def _pod(docs: list[dict[str, Any]], name: str) -> tuple[str, dict[str, str]]:
    workload = next(
        d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name
    )
    return workload["metadata"]["namespace"], workload["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_only_dlpipe_and_keda_reach_redis_and_only_the_api_is_exposed(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    docs = built[overlay]
    ns = keda.NAMESPACE
    redis = _pod(docs, "dlpipe-redis")
    dlpipe = {name: _pod(docs, f"dlpipe-{name}") for name in CHILD_COMMANDS}
    keda_operator = ("keda", {"app.kubernetes.io/name": "keda-operator"})
    stranger = (ns, {"app": "something-else"})
    outsider = ("default", {"app.kubernetes.io/name": "dlpipe", "app.kubernetes.io/component": "api"})
    for name, pod in dlpipe.items():
        assert may_connect(docs, pod, redis, 6379), name
        assert not may_connect(docs, pod, redis, 6380), name
    assert may_connect(docs, keda_operator, redis, 6379)
    assert not may_connect(docs, stranger, redis, 6379)
    assert not may_connect(docs, outsider, redis, 6379)  # dlpipe's labels, another namespace
    assert not may_connect(docs, redis, dlpipe["api"], 8000)  # Redis opens nothing
    # The API takes connections from anywhere; the workers from no one (they listen on nothing).
    assert may_connect(docs, stranger, dlpipe["api"], 8000) and may_connect(
        docs, outsider, dlpipe["api"], 8000
    )
    for kind in WORKER_KINDS:
        assert not may_connect(docs, stranger, dlpipe[kind], 8000), kind
        assert not may_connect(docs, dlpipe["api"], dlpipe[kind], 8000), kind
    # Only the notifier gets out of the cluster (webhooks), and the model worker only to Redis.
    assert not may_connect(docs, dlpipe["model"], stranger, 443)
    assert {s["metadata"]["name"] for s in find(docs, "Service")} == {"dlpipe-api", keda.REDIS_SERVICE}
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in find(docs, "Service"))
    public = [
        p
        for p in find(docs, "NetworkPolicy")
        if any("ipBlock" in peer for r in p["spec"].get("egress", []) for peer in r.get("to", []))
    ]
    assert [selects(p["spec"]["podSelector"], dlpipe[k][1]) for p in public for k in CHILD_COMMANDS] == [
        k == "notifier" for k in CHILD_COMMANDS
    ]


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_autoscalers_and_disruption_budgets(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    plan = keda.OVERLAYS[overlay]
    targets = [(h["spec"]["scaleTargetRef"]["name"], "hpa") for h in find(docs, "HorizontalPodAutoscaler")]
    targets += [(s["spec"]["scaleTargetRef"]["name"], "keda") for s in find(docs, "ScaledObject")]
    assert sorted(targets) == [("dlpipe-api", "hpa"), ("dlpipe-model", "keda"), ("dlpipe-preprocess", "keda")]
    for deployment in find(docs, "Deployment"):
        name = deployment["metadata"]["name"]
        # A scaled Deployment leaves `replicas` to its autoscaler (an apply would reset the count).
        assert ("replicas" in deployment["spec"]) == (name == "dlpipe-notifier"), name
        (pdb,) = [p for p in find(docs, "PodDisruptionBudget") if p["metadata"]["name"] == name]
        assert selects(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
        assert (
            pdb["spec"]["maxUnavailable"] >= 1 and pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        )
    hpa = one(docs, "HorizontalPodAutoscaler", "dlpipe-api")["spec"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu" and hpa["minReplicas"] >= 2
    api = container(docs, "dlpipe-api")
    assert api["resources"]["requests"]["cpu"]  # the HPA's utilisation is of the request
    # What services/keda.py assumes a pod runs, it runs.
    preprocess = container(docs, "dlpipe-preprocess")["command"]
    assert int(preprocess[preprocess.index("--concurrency") + 1]) == plan.preprocess_processes
    model = env(container(docs, "dlpipe-model"))
    assert (
        model["DLPIPE_DEVICE"] == plan.device and int(model["DLPIPE_MODEL_REPLICAS"]) == plan.model_processes
    )
    assert int(container(docs, "dlpipe-model")["resources"]["limits"]["cpu"]) >= plan.model_processes
    assert one(docs, "ScaledObject", "dlpipe-model")["spec"]["maxReplicaCount"] == plan.max_model_pods
    assert (
        one(docs, "ScaledObject", "dlpipe-preprocess")["spec"]["maxReplicaCount"] == plan.max_preprocess_pods
    )


def test_the_gpu_overlay_gives_each_model_pod_one_gpu(built: dict[str, list[dict[str, Any]]]) -> None:
    gpu = built["gpu"]
    model = container(gpu, "dlpipe-model")
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env(model)["DLPIPE_MODEL_REPLICAS"] == "1" and env(model)["DLPIPE_DEVICE"] == "cuda"
    spec = pod_specs(gpu)["dlpipe-model"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert one(gpu, "Deployment", "dlpipe-model")["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    for name, other in pod_specs(gpu).items():
        if name != "dlpipe-model":
            assert "nvidia.com/gpu" not in json.dumps(other), name
    assert "nvidia.com/gpu" not in json.dumps(built["cpu"])


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_secrets_come_from_secrets(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = built[overlay]
    secret = env(container(docs, "dlpipe-notifier"))["DLPIPE_WEBHOOK_SECRET"]["secretKeyRef"]
    assert secret["key"] == "DLPIPE_WEBHOOK_SECRET" and not secret.get("optional")  # no secret: no start
    api_keys = env(container(docs, "dlpipe-api"))["DLPIPE_API_KEYS"]["secretKeyRef"]
    assert api_keys["key"] == "DLPIPE_API_KEYS" and api_keys["optional"] is True
    assert not find(docs, "Secret"), "no secret is committed"
    for name in CHILD_COMMANDS:
        sources = container(docs, f"dlpipe-{name}")["envFrom"]
        assert {"secretRef": {"name": keda.REDIS_SECRET, "optional": True}} == sources[-1], (
            name
        )  # wins over the ConfigMap


def test_the_bundled_pipelines_file_needs_no_configmap(built: dict[str, list[dict[str, Any]]]) -> None:
    for docs in built.values():
        assert not [
            d for d in find(docs, "ConfigMap") if d["metadata"]["name"].startswith("dlpipe-pipelines")
        ]
        for name in CHILD_COMMANDS:
            assert "DLPIPE_PIPELINES_FILE" not in env(container(docs, f"dlpipe-{name}"))
    assert DEFAULT_PIPELINES_FILE.is_file()  # the image has it (package data)
