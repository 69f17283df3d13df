"""`dlpipe deploy k8s`: the KEDA ScaledObjects of a pipelines file (services/keda.py), or a
kustomization that deploys dlpipe with them.

    dlpipe deploy k8s [--overlay cpu|gpu]           the ScaledObjects, to stdout
    dlpipe deploy k8s [--overlay ...] --out DIR      a kustomization: kubectl apply -k DIR

deploy/k8s/overlays/<overlay>/keda.yaml is the first for the bundled pipelines file (a test keeps
it so). DIR builds on deploy/k8s (base, redis, components), with the pipelines file as a
ConfigMap when it is not the bundled one (docs/kubernetes.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.keda import NAMESPACE, OVERLAYS, REDIS_SECRET, DeployError, RedisTarget, redis_target, render
from shared.settings import DEFAULT_PIPELINES_FILE, Settings

K8S_DIR = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
IMAGES = ("dlpipe-api", "dlpipe-worker")


def to_yaml(docs: list[dict[str, Any]], header: str) -> str:
    import yaml  # noqa: PLC0415

    body = "---\n".join(yaml.safe_dump(doc, sort_keys=False) for doc in docs)
    return "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()) + body


def _is_bundled(path: Path) -> bool:
    return path.resolve() == DEFAULT_PIPELINES_FILE.resolve()


def _header(args: argparse.Namespace, path: Path, redis: RedisTarget) -> str:
    """What rendered the file, to render it again (never the Redis password)."""
    flags = [f"--overlay {args.overlay}"]
    if args.namespace != NAMESPACE:
        flags.append(f"--namespace {args.namespace}")
    if args.redis_url is not None:
        flags.append(f"--redis-url <Redis at {redis.address}>")
    flags += [
        f"--{f.replace('_', '-')} {getattr(args, f)}"
        for f in ("max_preprocess_pods", "max_model_pods")
        if getattr(args, f)
    ]
    source = "the bundled shared/pipelines.yaml" if _is_bundled(path) else str(path)
    return (
        f"Rendered by `dlpipe deploy k8s {' '.join(flags)}` from {source}:\n"
        "render it again when the pipelines file changes. Per stream: a lag trigger (adds pods)\n"
        "and a pending trigger (keeps the busy ones); docs/kubernetes.md, services/deploy_k8s.py.\n"
    )


def kustomization(
    out: Path,
    k8s_dir: Path,
    overlay: str,
    namespace: str,
    *,
    pipelines: bool,
    in_cluster_redis: bool,
    registry: str | None,
) -> dict[str, Any]:
    """The kustomization.yaml of DIR: deploy/k8s's parts, keda.yaml, maybe the pipelines ConfigMap."""
    rel = os.path.relpath(k8s_dir, out.resolve())
    data: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": [f"{rel}/base", *([f"{rel}/redis"] if in_cluster_redis else []), "keda.yaml"],
        "components": [f"{rel}/components/{overlay}"],
    }
    if pipelines:
        data["components"].append(f"{rel}/components/pipelines-configmap")
        data["configMapGenerator"] = [{"name": "dlpipe-pipelines", "files": ["pipelines.yaml"]}]
    if registry:
        data["images"] = [{"name": image, "newName": f"{registry.rstrip('/')}/{image}"} for image in IMAGES]
    return data


def run(settings: Settings, args: argparse.Namespace) -> int:
    """`dlpipe deploy k8s`: print the ScaledObjects, or write DIR; 1 with the reason on a problem."""
    from shared.pipeline_spec import PipelineConfigError, load_pipelines  # noqa: PLC0415

    path = Path(settings.pipelines_file)
    limits = {f: getattr(args, f) for f in ("max_preprocess_pods", "max_model_pods") if getattr(args, f)}
    try:
        config = load_pipelines(path)
        redis = redis_target(args.redis_url, args.namespace)
        docs = render(config, replace(OVERLAYS[args.overlay], **limits), redis)
    except (PipelineConfigError, DeployError) as exc:
        print(f"dlpipe deploy k8s: {exc}", file=sys.stderr)
        return 1
    text = to_yaml(docs, _header(args, path, redis))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    k8s_dir = Path(args.k8s_dir or K8S_DIR).resolve()
    if not (k8s_dir / "base" / "kustomization.yaml").is_file():
        print(f"dlpipe deploy k8s: no deploy/k8s base in {k8s_dir} (pass --k8s-dir)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    custom = not _is_bundled(path)
    if custom:
        (out / "pipelines.yaml").write_text(path.read_text())
    (out / "keda.yaml").write_text(text)
    data = kustomization(
        out,
        k8s_dir,
        args.overlay,
        args.namespace,
        pipelines=custom,
        in_cluster_redis=args.redis_url is None,
        registry=args.registry,
    )
    (out / "kustomization.yaml").write_text(
        to_yaml([data], f"Written by `dlpipe deploy k8s`: kubectl apply -k {out}")
    )
    print(f"dlpipe deploy k8s: wrote {out}: kubectl apply -k {out}", file=sys.stderr)
    if args.redis_url is not None:
        extra = " and REDIS_PASSWORD (for KEDA)" if redis.password else ""
        print(
            f"dlpipe deploy k8s: the pods read DLPIPE_REDIS_URL{extra} from the Secret {REDIS_SECRET}: "
            "create it first (docs/kubernetes.md, Redis)",
            file=sys.stderr,
        )
    return 0


def add_parser(sub: Any, count: Any = int) -> None:
    """`dlpipe deploy k8s` and its flags, on the CLI's subcommands (`count`: its type for a number >= 1)."""
    deploy = sub.add_parser("deploy", help="render deployment manifests", description="Render manifests.")
    targets = deploy.add_subparsers(dest="target", required=True, metavar="TARGET")
    parser = targets.add_parser(
        "k8s",
        help="Kubernetes: the KEDA ScaledObjects of the pipelines file, or a kustomization (--out)",
        description="Print the KEDA ScaledObjects that scale the workers on their streams (named after "
        "the pipelines file), or write a kustomization to `kubectl apply -k` (--out).",
    )
    parser.add_argument(
        "--overlay", choices=sorted(OVERLAYS), default="cpu", help="where the model runs (default cpu)"
    )
    parser.add_argument(
        "--pipelines-file", help="pipelines file to scale for (default: DLPIPE_PIPELINES_FILE)"
    )
    parser.add_argument(
        "--namespace", default=NAMESPACE, help=f"namespace to deploy in (default {NAMESPACE})"
    )
    parser.add_argument(
        "--redis-url",
        help="a Redis of your own, as DLPIPE_REDIS_URL names it, reachable from KEDA's namespace "
        "(default: the in-cluster one of deploy/k8s/redis); its password is never written",
    )
    parser.add_argument(
        "--max-preprocess-pods", type=count, help="most preprocess pods (default: the overlay's)"
    )
    parser.add_argument("--max-model-pods", type=count, help="most model pods; on GPUs, the GPUs to use")
    parser.add_argument("--out", help="write a kustomization here (else print the ScaledObjects)")
    parser.add_argument(
        "--registry", help="with --out: pull the images from this registry (e.g. ghcr.io/you)"
    )
    parser.add_argument(
        "--k8s-dir", help="with --out: the deploy/k8s folder to build on (default: this checkout's)"
    )
