"""The KEDA objects that scale dlpipe's workers on their streams (`dlpipe deploy k8s` renders them).

The workers' streams are named after the pipelines file (a CPU stream per preprocess or
postprocess stage, a model stream per model: PipelinesConfig.cpu_streams, model_streams; each
one per job priority, keys.stage_streams), so the autoscaler's triggers cannot be written once by
hand. For each stream a worker reads there are two `redis-streams` triggers on its consumer
group (keys.stream_group); the HPA takes the largest (a trigger reads one stream: work split
among a stage's priorities is scaled for by its largest part):

- lag (`lagCount`; XINFO GROUPS, Redis 7+): entries queued that no worker has taken yet. It
  grows the moment the pods fall behind, so it is what adds pods: one per `lagCount` waiting.
  The pending count cannot: workers take entries as soon as they have room and acknowledge
  them when done, so it never exceeds what the running pods hold.
- pending (`pendingEntriesCount`; XPENDING): entries taken and not acknowledged yet, the work
  in the pods' hands. Lag alone falls to zero as soon as the pods keep up, and the autoscaler
  would then take away the very pods that keep up (then add them back as lag returns): this
  keeps as many pods as are busy. KEDA reads one count per trigger, hence two a stream.

Both targets are what one pod holds at full load, from the numbers the manifests run with
(Overlay): a CPU stream, READ_COUNT entries per preprocess process; a model stream, two full
batches of that model on the overlay's device (the one on the device and the next one,
collected meanwhile) per model process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from shared import keys
from shared.priority import CPU_READ_COUNT

if TYPE_CHECKING:  # the CLI builds its parser from services/deploy_k8s.py: keep imports light
    from shared.pipeline_spec import PipelinesConfig

NAMESPACE = "dlpipe"
REDIS_SERVICE = "dlpipe-redis"  # deploy/k8s/redis: its headless Service
REDIS_SECRET = "dlpipe-redis"  # optional Secret: DLPIPE_REDIS_URL for the pods, REDIS_PASSWORD for KEDA
MIN_PODS = 1  # never zero: the API's /readyz wants a live worker on every stream
POLLING_INTERVAL_S = 15


class DeployError(ValueError):
    """A setting the KEDA objects cannot be rendered from; the message says which and why."""


@dataclass(frozen=True)
class Overlay:
    """What an overlay's pods run (deploy/k8s: base and components/<name>; a test checks them)."""

    device: str  # DLPIPE_DEVICE of the model worker
    preprocess_processes: int  # `dlpipe worker preprocess --concurrency` of a preprocess pod
    model_processes: int  # DLPIPE_MODEL_REPLICAS of a model pod
    max_preprocess_pods: int
    max_model_pods: int  # on a GPU: the GPUs it may take, one a pod


OVERLAYS = {
    "cpu": Overlay(
        "cpu", preprocess_processes=2, model_processes=2, max_preprocess_pods=10, max_model_pods=10
    ),
    "gpu": Overlay(
        "cuda", preprocess_processes=2, model_processes=1, max_preprocess_pods=20, max_model_pods=4
    ),
}


@dataclass(frozen=True)
class RedisTarget:
    """Where KEDA's operator reads the streams: from its own namespace, so a name it resolves."""

    address: str  # host:port
    database: int
    tls: bool
    username: str | None
    password: bool  # KEDA gets it from the Secret (a TriggerAuthentication), never from here


def redis_target(url: str | None, namespace: str) -> RedisTarget:
    """The in-cluster Redis of deploy/k8s/redis (url None), else the Redis `url` names."""
    if url is None:
        return RedisTarget(f"{REDIS_SERVICE}.{namespace}.svc:6379", 0, False, None, False)
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise DeployError(f"--redis-url: expected redis://[user:password@]host[:port][/db], got {url!r}")
    try:
        port = parts.port or 6379
        database = int(parts.path.lstrip("/") or 0)
    except ValueError:
        raise DeployError(f"--redis-url: bad port or database number in {url!r}") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    username = unquote(parts.username) if parts.username else None
    return RedisTarget(
        f"{host}:{port}", database, parts.scheme == "rediss", username, parts.password is not None
    )


def cpu_target(overlay: Overlay) -> int:
    """Entries of one CPU stream a preprocess pod holds at full load."""
    return CPU_READ_COUNT * overlay.preprocess_processes


def model_target(config: PipelinesConfig, model: str, overlay: Overlay) -> int:
    """Entries of one model's stream a model pod holds at full load: two batches a process."""
    batching = config.models[model].batching_for(overlay.device)
    if batching is None:  # parse_pipelines requires it for every model a pipeline uses
        raise DeployError(f"model {model!r} has no batching settings")
    return 2 * batching.max_batch_size * overlay.model_processes


def triggers(stream_name: str, target: int, redis: RedisTarget) -> list[dict[str, Any]]:
    """The lag trigger and the pending trigger of one stream."""
    stream_key = keys.stream(stream_name)
    common = {
        "address": redis.address,
        "databaseIndex": str(redis.database),  # DLPIPE_REDIS_URL's /<db>
        "stream": stream_key,
        "consumerGroup": keys.stream_group(stream_key),
    }
    if redis.tls:
        common["enableTLS"] = "true"
    out: list[dict[str, Any]] = [
        {"type": "redis-streams", "metadata": {**common, "lagCount": str(target)}},
        {"type": "redis-streams", "metadata": {**common, "pendingEntriesCount": str(target)}},
    ]
    if redis.password:
        for trigger in out:
            trigger["authenticationRef"] = {"name": REDIS_SECRET}
    return out


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "dlpipe",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "dlpipe",
    }


def scaled_object(component: str, max_pods: int, stream_triggers: list[dict[str, Any]]) -> dict[str, Any]:
    """A ScaledObject for the Deployment dlpipe-<component>."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": f"dlpipe-{component}", "labels": _labels(component)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"dlpipe-{component}"},
            "minReplicaCount": MIN_PODS,
            "maxReplicaCount": max_pods,
            "pollingInterval": POLLING_INTERVAL_S,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        # Up: at most double (or +2) a minute; a new model pod loads for a while.
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 60},
                                {"type": "Pods", "value": 2, "periodSeconds": 60},
                            ],
                        },
                        # Down: after 5 quiet minutes, one pod a minute (each stops warmly).
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    }
                }
            },
            "triggers": stream_triggers,
        },
    }


def render(config: PipelinesConfig, overlay: Overlay, redis: RedisTarget) -> list[dict[str, Any]]:
    """The ScaledObjects of the preprocess and model workers (and KEDA's Redis credentials)."""
    cpu = [
        t
        for stage in config.cpu_streams()
        for name in keys.stage_streams(stage)
        for t in triggers(name, cpu_target(overlay), redis)
    ]
    model = [
        t
        for model, stream in config.model_streams().items()
        for name in keys.stage_streams(stream)
        for t in triggers(name, model_target(config, model, overlay), redis)
    ]
    docs = [
        scaled_object("preprocess", overlay.max_preprocess_pods, cpu),
        scaled_object("model", overlay.max_model_pods, model),
    ]
    if redis.password:
        secret_refs = [{"parameter": "password", "name": REDIS_SECRET, "key": "REDIS_PASSWORD"}]
        if redis.username:
            secret_refs.append({"parameter": "username", "name": REDIS_SECRET, "key": "REDIS_USERNAME"})
        docs.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": REDIS_SECRET, "labels": _labels("redis")},
                "spec": {"secretTargetRef": secret_refs},
            }
        )
    return docs
