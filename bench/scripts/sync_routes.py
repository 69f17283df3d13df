"""What the synchronous protocol routes cost next to submit-and-wait, on the same inputs, in
the same run: `POST /v1/embeddings` and `POST /v2/models/text-embed/infer` against
`POST /v1/pipelines/text-embed/jobs` with `Prefer: wait=60`; `POST /v2/models/image-classify/infer`
against the image-classify submit with `Prefer: wait=60`.

    .venv/bin/python bench/scripts/sync_routes.py --rounds 100 --texts 1

Starts its own `dlpipe up` (embedded Redis, free loopback port) with image-classify and
text-embed only. One client, one request at a time, keep-alive: each round runs every route
once, in a shuffled order, so drift hits them alike. Texts: `--texts` short sentences per
request; images: one 1920x1080 JPEG per request (base64 JSON on submit, the binary tensor
extension on /v2, as tritonclient sends). Prints one JSON document: per route, the latency
(p50, mean, p90) and each protocol route's p50 less its submit-and-wait's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services.api.protocols.oip_tensors import HEADER_LENGTH, join_bytes  # noqa: E402
from shared.embedded_redis import free_port  # noqa: E402

SENTENCES = [
    "a photo of a cat on a sofa",
    "quarterly tax filing deadline",
    "espresso in a white cup",
    "a red motorbike parked by the road",
    "an astronaut floating in space",
]


def photo() -> bytes:
    sys.path.insert(0, str(REPO))
    from tests.support.photos import FHD, photo_bytes  # noqa: PLC0415 - dev only (scikit-image's photos)

    return photo_bytes("chelsea.png", size=FHD)


def start(tmp: Path) -> tuple[subprocess.Popen, str]:
    config = yaml.safe_load((REPO / "shared" / "pipelines.yaml").read_text())
    config["pipelines"] = {
        k: v for k, v in config["pipelines"].items() if k in ("image-classify", "text-embed")
    }
    config["models"] = {k: v for k, v in config["models"].items() if k in ("efficientnet_lite0", "minilm_l6")}
    (tmp / "pipelines.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    env.update(
        DLPIPE_PORT=str(port),
        DLPIPE_DATA_DIR=str(tmp / "data"),
        DLPIPE_LOG_LEVEL="WARNING",
        DLPIPE_PIPELINES_FILE=str(tmp / "pipelines.yaml"),
    )
    dlpipe = Path(sys.executable).with_name("dlpipe")
    command = [str(dlpipe)] if dlpipe.exists() else [sys.executable, "-m", "services.cli"]
    proc = subprocess.Popen(
        [*command, "up"],
        env=env,
        cwd=REPO,
        start_new_session=True,
        stdout=(tmp / "stack.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "stack.log").read_text()[-3000:])
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("stack not ready")


def routes(http: httpx.Client, texts: list[str], image: bytes) -> dict[str, Callable[[], None]]:
    wait = {"Prefer": "wait=60"}
    text_job = {"inputs": [{"text": t} for t in texts]}
    image_job = {"inputs": [{"image_base64": base64.b64encode(image).decode()}]}
    text_infer = {"inputs": [{"name": "texts", "shape": [len(texts)], "datatype": "BYTES", "data": texts}]}
    blob = join_bytes([image])
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(blob)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()

    def check(response: httpx.Response, status: int = 200) -> None:
        if response.status_code != status:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")

    return {
        "text: POST /v1/pipelines/text-embed/jobs (Prefer: wait)": lambda: check(
            http.post("/v1/pipelines/text-embed/jobs", json=text_job, headers=wait)
        ),
        "text: POST /v1/embeddings": lambda: check(
            http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": texts})
        ),
        "text: POST /v2/models/text-embed/infer (JSON)": lambda: check(
            http.post("/v2/models/text-embed/infer", json=text_infer)
        ),
        "image: POST /v1/pipelines/image-classify/jobs (Prefer: wait)": lambda: check(
            http.post("/v1/pipelines/image-classify/jobs", json=image_job, headers=wait)
        ),
        "image: POST /v2/models/image-classify/infer (binary)": lambda: check(
            http.post(
                "/v2/models/image-classify/infer",
                content=head + blob,
                headers={HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"},
            )
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--texts", type=int, default=1, help="texts per text request")
    args = parser.parse_args()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(args.texts)]
    tmp = Path(tempfile.mkdtemp(prefix="dlpipe-sync-routes-"))
    proc, base = start(tmp)
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            calls = routes(http, texts, photo())
            times: dict[str, list[float]] = {name: [] for name in calls}
            rng = random.Random(0)
            for round_ in range(args.warmup + args.rounds):
                order = list(calls)
                rng.shuffle(order)
                for name in order:
                    started = time.perf_counter()
                    calls[name]()
                    if round_ >= args.warmup:
                        times[name].append(time.perf_counter() - started)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    def ms(values: list[float], q: float) -> float:
        return round(sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000, 2)

    table = {
        name: {"p50_ms": ms(v, 0.5), "mean_ms": round(statistics.fmean(v) * 1000, 2), "p90_ms": ms(v, 0.9)}
        for name, v in times.items()
    }
    names = list(calls)
    overhead = {
        "/v1/embeddings vs text submit-wait (p50)": round(
            table[names[1]]["p50_ms"] - table[names[0]]["p50_ms"], 2
        ),
        "/v2 text infer vs text submit-wait (p50)": round(
            table[names[2]]["p50_ms"] - table[names[0]]["p50_ms"], 2
        ),
        "/v2 image infer vs image submit-wait (p50)": round(
            table[names[4]]["p50_ms"] - table[names[3]]["p50_ms"], 2
        ),
    }
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "texts_per_request": args.texts,
                "image": "1920x1080 JPEG (chelsea.png)",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "latency": table,
                "overhead_ms": overhead,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
