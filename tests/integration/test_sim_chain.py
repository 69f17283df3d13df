"""The simulated two-model chain (bench/sim) through real worker processes: two preprocess
processes and one model worker with the efficiency scheduler, a few seconds of jobs. The device's
own log shows it never ran two batches at once, that it batched, and every job succeeded; the
chain's last stage ran in the model worker (fused), its middle one (a second decode) did not."""

from __future__ import annotations

from pathlib import Path

import redis
import yaml

from bench.photos import fhd_jpegs
from bench.sim import pipelines as simpipes
from bench.sim.busylog import overlap_s, read_log
from bench.sim.device import LOG_FILE
from shared import keys
from shared.messages import JobStatus
from shared.pipeline_spec import load_pipelines
from tests.stagefns import job_view, queue_job
from tests.support.procs import Procs
from tests.support.waiting import wait_for
from tests.support.workers import is_final, make_settings

JOBS = 24


def test_the_sim_chain_batches_on_one_device_never_two_batches_at_once(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, procs: Procs
) -> None:
    spec = simpipes.SimSpec(
        {m: simpipes.Cost(15.0, 1.5) for m in (simpipes.DETECTOR, simpipes.CLASSIFIER)},
        max_batch_size=8,
        max_batch_delay_ms=2.0,
    )
    doc = simpipes.document(spec, tmp_path / "device")
    settings = make_settings(redis_url, tmp_path, doc).model_copy(
        update={"fuse_postprocess": True, "model_scheduler": "efficiency", "model_replicas": 1}
    )
    (tmp_path / "pipelines.yaml").write_text(yaml.safe_dump(doc))
    procs.start(settings, "workers.preprocess", "--concurrency", "2")
    procs.start(settings, "workers.model_main")
    chain = load_pipelines(settings.pipelines_file).pipelines["sim-chain"]
    jpegs = fhd_jpegs()[:2]
    for i in range(JOBS):
        queue_job(redis_client, chain, f"s{i}", [{"image": jpegs[i % 2]}])
    wait_for(
        lambda: all(is_final(redis_client, f"s{i}") for i in range(JOBS)), 120, f"the jobs\n{procs.logs()}"
    )
    views = [job_view(redis_client, f"s{i}") for i in range(JOBS)]
    assert all(v.status == JobStatus.succeeded for v in views), [v.outputs[0].error for v in views]
    assert all(len(v.outputs[0].result["labels"]) == 5 for v in views)
    assert views[0].outputs[0].result == views[2].outputs[0].result  # the same photo, the same answer
    log = read_log(tmp_path / "device" / LOG_FILE)
    assert overlap_s(log) == 0.0
    by_model = {m: [b.n for b in log if b.model == m] for m in (simpipes.DETECTOR, simpipes.CLASSIFIER)}
    assert {m: sum(ns) for m, ns in by_model.items()} == {simpipes.DETECTOR: JOBS, simpipes.CLASSIFIER: JOBS}
    assert max(by_model[simpipes.DETECTOR]) > 1 and max(by_model[simpipes.CLASSIFIER]) > 1
    assert redis_client.xlen(keys.stream("cpu.sim-chain.crop")) == JOBS  # its own stage
    assert redis_client.xlen(keys.stream("cpu.sim-chain.result")) == 0  # fused: never queued
