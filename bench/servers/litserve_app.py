"""LitServe serving the same pipelines with its own batching: one LitAPI per pipeline
(decode_request -> batch -> predict -> unbatch -> encode_response), max_batch_size and
batch_timeout as given, `--workers` inference workers (workers_per_device) per API on the CPU,
each loading the models (at `--threads` torch threads), one API server process.
Runs in the litserve peer's virtualenv, with the repository on PYTHONPATH.

    python -m bench.servers.litserve_app --port 8102 --pipelines image-classify,image-tag
"""

from __future__ import annotations

import argparse
from typing import Any

import litserve as ls

from bench.runner import Item, PipelineRunner
from bench.servers.common import answer, decode, load_runners, parse_args, setup_logging


class PipelineAPI(ls.LitAPI):
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        super().__init__(
            max_batch_size=args.max_batch_size,
            batch_timeout=args.batch_timeout_ms / 1000.0,
            api_path=f"/v1/pipelines/{name}/jobs",
        )
        self.name = name
        self.args = args
        self.runner: PipelineRunner | None = None

    def setup(self, device: Any) -> None:
        self.args.pipelines = [self.name]
        self.runner = load_runners(self.args)[self.name]

    # No annotation on `request` nor on encode_response's result: LitServe reads the annotations
    # to pick the endpoint's request and response types (none: the JSON body, a plain response).
    def decode_request(self, request):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        assert self.runner is not None
        return decode(self.runner, request)  # read + preprocess, per request

    def batch(self, inputs: list[Item]) -> list[Item]:
        return list(inputs)

    def predict(self, items):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        assert self.runner is not None
        if isinstance(items, Item):  # max_batch_size 1: LitServe hands over one request, unbatched
            return self.runner.finish([items])[0]
        return self.runner.finish(items)  # model stages batched, then postprocess

    def unbatch(self, output: list[Item]) -> list[Item]:
        return list(output)

    def encode_response(self, output: Item):  # type: ignore[no-untyped-def]  # noqa: ANN201
        assert self.runner is not None
        return answer(self.runner, output)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = parse_args(__doc__ or "", argv)
    apis = [PipelineAPI(name, argparse.Namespace(**vars(args))) for name in args.pipelines]
    server = ls.LitServer(apis, accelerator="cpu", devices=1, workers_per_device=args.workers, timeout=120)
    server.run(
        host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
