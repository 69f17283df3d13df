"""`dlpipe deploy k8s`: the KEDA ScaledObjects cover every stream the workers read, for the bundled
pipelines file (the committed deploy/k8s/overlays/*/keda.yaml) and for one of the user's own, and
are what KEDA accepts (deploy/k8s/keda.schema.json). No kubectl here: the kustomize builds and the
Kubernetes schemas are tests/integration/test_k8s_manifests.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services import cli, keda
from shared import keys
from shared.pipeline_spec import PipelinesConfig, load_pipelines, parse_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE
from tests import stagefns
from workers.preprocess import READ_COUNT

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KEDA_SCHEMA = json.loads((K8S / "keda.schema.json").read_text())


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["deploy", "k8s", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def by_name(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs}


def covered(scaled_object: dict[str, Any], count: str) -> set[tuple[str, str]]:
    """(stream key, consumer group) of the triggers on `count`: lagCount or pendingEntriesCount."""
    return {
        (t["metadata"]["stream"], t["metadata"]["consumerGroup"])
        for t in scaled_object["spec"]["triggers"]
        if count in t["metadata"]
    }


def check_keda(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(doc)
        if doc["kind"] == "ScaledObject":
            spec = doc["spec"]
            assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], doc["metadata"]["name"]


def assert_covers(docs: list[dict[str, Any]], config: PipelinesConfig) -> None:
    """Every stream a worker reads has a lag trigger and a pending trigger on its group, and no other."""
    objects = by_name(docs)
    cpu = {(keys.stream(p), keys.CPU_GROUP) for s in config.cpu_streams() for p in keys.stage_streams(s)}
    model = {
        (keys.stream(p), keys.MODEL_GROUP)
        for s in config.model_streams().values()
        for p in keys.stage_streams(s)
    }
    assert cpu and model
    for name, streams in (("dlpipe-preprocess", cpu), ("dlpipe-model", model)):
        assert covered(objects[name], "lagCount") == streams, name
        assert covered(objects[name], "pendingEntriesCount") == streams, name
        assert len(objects[name]["spec"]["triggers"]) == 2 * len(streams), name
        assert objects[name]["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }


@pytest.mark.parametrize("overlay", sorted(keda.OVERLAYS))
def test_the_committed_scaledobjects_are_rendered_from_the_bundled_pipelines(
    overlay: str, capsys: pytest.CaptureFixture[str]
) -> None:
    committed = K8S / "overlays" / overlay / "keda.yaml"
    code, out, err = render(capsys, "--overlay", overlay, "--pipelines-file", str(DEFAULT_PIPELINES_FILE))
    assert code == 0, err
    where = committed.relative_to(REPO)
    assert committed.read_text() == out, f"{where} is stale: dlpipe deploy k8s --overlay {overlay} > {where}"
    docs = list(yaml.safe_load_all(out))
    check_keda(docs)
    assert_covers(docs, load_pipelines(DEFAULT_PIPELINES_FILE))


def test_the_events_stream_is_left_to_the_single_notifier(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = render(capsys)
    assert code == 0
    streams = {t["metadata"]["stream"] for doc in yaml.safe_load_all(out) for t in doc["spec"]["triggers"]}
    assert keys.EVENTS not in streams and keys.DEADLETTER not in streams


def test_a_custom_pipelines_file_gets_its_own_streams(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = stagefns.pipelines(max_batch_size=4)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = parse_pipelines(doc)
    code, out, err = render(capsys, "--overlay", "gpu", "--pipelines-file", str(path))
    assert code == 0, err
    docs = list(yaml.safe_load_all(out))
    check_keda(docs)
    assert_covers(docs, config)
    bundled = set(load_pipelines(DEFAULT_PIPELINES_FILE).cpu_streams())
    assert not bundled & set(config.cpu_streams())
    assert str(path) in out.splitlines()[0]  # the header names the file it came from
    # Lag targets: what a pod holds at full load (gpu: one model process, two batches of 4).
    overlay = keda.OVERLAYS["gpu"]
    for trigger in by_name(docs)["dlpipe-model"]["spec"]["triggers"]:
        target = trigger["metadata"].get("lagCount") or trigger["metadata"]["pendingEntriesCount"]
        assert int(target) == 2 * 4 * overlay.model_processes
    for trigger in by_name(docs)["dlpipe-preprocess"]["spec"]["triggers"]:
        target = trigger["metadata"].get("lagCount") or trigger["metadata"]["pendingEntriesCount"]
        assert int(target) == READ_COUNT * overlay.preprocess_processes


def test_model_targets_follow_the_devices_batching() -> None:
    config = load_pipelines(DEFAULT_PIPELINES_FILE)
    for overlay in keda.OVERLAYS.values():
        for model in config.model_streams():
            batching = config.models[model].batching_for(overlay.device)
            assert batching is not None
            assert (
                keda.model_target(config, model, overlay)
                == 2 * batching.max_batch_size * overlay.model_processes
            )
    # The bundled file batches bigger on CUDA: the GPU overlay's targets are not the CPU's.
    cpu, gpu = keda.OVERLAYS["cpu"], keda.OVERLAYS["gpu"]
    assert keda.model_target(config, "efficientnet_lite0", gpu) == 2 * 32 * 1
    assert keda.model_target(config, "efficientnet_lite0", cpu) == 2 * 8 * 2


def test_pod_limits_and_namespace_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(capsys, "--overlay", "gpu", "--max-model-pods", "2", "--namespace", "ml")
    assert code == 0, err
    objects = by_name(list(yaml.safe_load_all(out)))
    assert objects["dlpipe-model"]["spec"]["maxReplicaCount"] == 2
    assert objects["dlpipe-preprocess"]["spec"]["maxReplicaCount"] == keda.OVERLAYS["gpu"].max_preprocess_pods
    addresses = {t["metadata"]["address"] for o in objects.values() for t in o["spec"]["triggers"]}
    assert addresses == {"dlpipe-redis.ml.svc:6379"}  # KEDA's operator resolves it from its namespace
    assert "--max-model-pods 2" in out.splitlines()[0]
    with pytest.raises(SystemExit) as exited:
        render(capsys, "--max-model-pods", "0")
    assert exited.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_a_redis_of_your_own_keeps_its_password_out(capsys: pytest.CaptureFixture[str]) -> None:
    url = "rediss://app:s3cr%40t@redis.example.com:6380/2"
    code, out, err = render(capsys, "--redis-url", url)
    assert code == 0, err
    assert "s3cr" not in out and "s3cr" not in err
    docs = list(yaml.safe_load_all(out))
    check_keda(docs)
    objects = by_name(docs)
    auth = objects[keda.REDIS_SECRET]
    assert auth["kind"] == "TriggerAuthentication"
    assert {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]} == {
        "password": "REDIS_PASSWORD",
        "username": "REDIS_USERNAME",
    }
    for name in ("dlpipe-preprocess", "dlpipe-model"):
        for trigger in objects[name]["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert (meta["address"], meta["databaseIndex"], meta["enableTLS"]) == (
                "redis.example.com:6380",
                "2",
                "true",
            )
            assert trigger["authenticationRef"] == {"name": keda.REDIS_SECRET}


@pytest.mark.parametrize(
    ("url", "address", "database", "tls", "password"),
    [
        ("redis://r:6379/0", "r:6379", 0, False, False),
        ("redis://r", "r:6379", 0, False, False),
        ("redis://:pw@[fd00::1]:7000/5", "[fd00::1]:7000", 5, False, True),
        ("rediss://r.example:6380", "r.example:6380", 0, True, False),
    ],
)
def test_redis_urls(url: str, address: str, database: int, tls: bool, password: bool) -> None:
    target = keda.redis_target(url, "dlpipe")
    assert (target.address, target.database, target.tls, target.password) == (
        address,
        database,
        tls,
        password,
    )


@pytest.mark.parametrize(
    "url", ["unix:///run/redis.sock", "redis://r:port/0", "redis://r:6379/zero", "r:6379"]
)
def test_redis_urls_keda_cannot_use_are_refused(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = render(capsys, "--redis-url", url)
    assert code == 1 and out == ""
    assert err.startswith("dlpipe deploy k8s: --redis-url:")


def test_a_broken_pipelines_file_is_refused_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "models: {}\npipelines: {p: {input: image, stages: [{name: s, kind: model, model: nope}]}}\n"
    )
    code, out, err = render(capsys, "--pipelines-file", str(path))
    assert code == 1 and out == ""
    assert "nope" in err


def test_the_schema_catches_what_keda_would_ignore(capsys: pytest.CaptureFixture[str]) -> None:
    """KEDA ignores metadata it does not know: `lag` (its name before 2.11) would silently scale on
    pending entries. The schema must refuse that, and two counts in one trigger."""
    code, out, _ = render(capsys)
    assert code == 0
    scaled = next(yaml.safe_load_all(out))
    validator = jsonschema.Draft202012Validator(KEDA_SCHEMA)
    meta = scaled["spec"]["triggers"][0]["metadata"]
    for broken in (
        {**{k: v for k, v in meta.items() if k != "lagCount"}, "lag": meta["lagCount"]},
        {**meta, "pendingEntriesCount": "5"},
        {k: v for k, v in meta.items() if k != "address"},
        {**meta, "lagCount": "ten"},
    ):
        scaled["spec"]["triggers"][0]["metadata"] = broken
        assert not validator.is_valid(scaled), broken


def test_readme_and_docs_point_at_the_kubernetes_page() -> None:
    readme = (REPO / "README.md").read_text()
    deployment = (REPO / "docs" / "deployment.md").read_text()
    compose = deployment[deployment.index("## Deploy with Docker Compose") :]
    assert "](kubernetes.md)" in compose and "](kubernetes.md)" in deployment.split("\n## ", 1)[0]
    assert "docs/kubernetes.md" in readme
    layout = readme[readme.index("## Repository layout") :]
    assert re.search(r"^deploy/", layout, re.MULTILINE)
    page = (REPO / "docs" / "kubernetes.md").read_text()
    for needed in (
        "dlpipe deploy k8s",
        "lagCount",
        "DLPIPE_MODEL_REPLICAS",
        "NetworkPolicy",
        "PodDisruptionBudget",
    ):
        assert needed in page, needed
