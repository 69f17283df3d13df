"""Inputs that run as several items (a video's frames): how queue_new_job records them, with
the video stored once, and how job_view_from_redis folds their items back into one output."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from shared import codecs, keys
from shared.job_record import InputGroup, JobRecord, job_view_from_redis
from shared.jobs import queue_new_job
from shared.messages import ItemOutput, ItemStatus, JobStatus
from shared.pipeline_spec import parse_pipelines

CONFIG = parse_pipelines(
    {
        "models": {
            "m": {"class": "json:JSONDecoder", "batching": {"max_batch_size": 4, "max_batch_delay_ms": 1}}
        },
        "pipelines": {
            "vid": {
                "input": "video",
                "stages": [
                    {"name": "frame", "kind": "preprocess", "fn": "json:dumps"},
                    {"name": "classify", "kind": "model", "model": "m"},
                    {"name": "post", "kind": "postprocess", "fn": "json:loads"},
                ],
            }
        },
    }
)
PIPELINE = CONFIG.pipelines["vid"]


def record(total: int, groups: list[dict[str, Any]] | None = None, **extra: str) -> dict[str, str]:
    job = {
        "id": "j",
        "pipeline": "vid",
        "status": "running",
        "created_at": "1000",
        "total": str(total),
        "done": "0",
        **extra,
    }
    if groups is not None:
        job["groups"] = json.dumps(groups)
    return job


def out(index: int, result: Any = None, error: str | None = None) -> str:
    status = ItemStatus.failed if error else ItemStatus.succeeded
    return ItemOutput(index=index, status=status, result=result, error=error).model_dump_json()


VIDEO = {"input": 0, "first": 0, "count": 3, "keys": ["0.000", "0.500", "1.000"], "field": "frames"}


def test_a_grouped_input_is_pending_until_every_frame_is_done_and_progress_counts_frames() -> None:
    view = job_view_from_redis(record(3, [VIDEO], done="2"), {b"0": out(0, {"l": 0}), b"2": out(2, {"l": 2})})
    assert view.progress.done == 2 and view.progress.total == 3
    (output,) = view.outputs
    assert output.index == 0 and output.status == ItemStatus.pending and output.result is None


def test_a_grouped_input_gathers_its_frames_results_by_key() -> None:
    outputs = {
        "0": out(0, {"labels": ["cat"]}),
        "1": out(1, error="no frame"),
        "2": out(2, {"labels": ["cup"]}),
    }
    view = job_view_from_redis(record(3, [VIDEO], done="3", sources='["clips/a.mp4"]'), outputs)
    (output,) = view.outputs
    assert output.status == ItemStatus.succeeded and output.error is None
    assert output.result == {
        "frames": {"0.000": {"labels": ["cat"]}, "1.000": {"labels": ["cup"]}},
        "errors": {"0.500": "no frame"},
    }
    assert output.source == "clips/a.mp4"


def test_a_grouped_input_whose_frames_all_failed_has_failed_with_the_first_reason() -> None:
    outputs = {str(i): out(i, error=f"bad {i}") for i in range(3)}
    (output,) = job_view_from_redis(record(3, [VIDEO], done="3"), outputs).outputs
    assert output.status == ItemStatus.failed
    assert output.error == "all 3 frames failed (0.000: bad 0)"
    assert output.result == {"frames": {}, "errors": {"0.000": "bad 0", "0.500": "bad 1", "1.000": "bad 2"}}


def test_groups_and_plain_items_share_one_job_and_indexes_are_per_input() -> None:
    groups = [
        {"input": 1, "first": 1, "count": 2, "keys": ["0.000", "1.000"], "field": "frames"},
        {"input": 3, "first": 4, "count": 1, "keys": ["5.000"], "field": "frames"},
    ]
    outputs = {
        "0": out(0, "plain"),
        "1": out(1, "a"),
        "2": out(2, "b"),
        "3": out(3, "plain 2"),
        "4": out(4, "c"),
    }
    view = job_view_from_redis(record(5, groups, done="5", sources='["x", "y", null, "z"]'), outputs)
    assert [o.index for o in view.outputs] == [0, 1, 2, 3]
    assert [o.result for o in view.outputs] == [
        "plain",
        {"frames": {"0.000": "a", "1.000": "b"}, "errors": {}},
        "plain 2",
        {"frames": {"5.000": "c"}, "errors": {}},
    ]
    assert [o.source for o in view.outputs] == ["x", "y", None, "z"]
    assert view.progress.total == 5


def test_a_job_without_groups_is_shown_item_by_item_as_before() -> None:
    view = job_view_from_redis(record(2, done="1"), {"1": out(1, "r")})
    assert [(o.index, o.status, o.result) for o in view.outputs] == [
        (0, ItemStatus.pending, None),
        (1, ItemStatus.succeeded, "r"),
    ]


def test_queue_new_job_stores_the_video_once_and_every_frame_names_it(client: fakeredis.FakeRedis) -> None:
    inputs = [{"t": 0.0}, {"t": 0.5}, {"video_path": "b.mp4", "t": 0.0}]
    with client.pipeline(transaction=True) as pipe:
        queue_new_job(
            pipe,
            JobRecord.new(
                id="j",
                pipeline=PIPELINE.name,
                total=len(inputs),
                created_ms=1000,
                sources=["up.mp4", "b.mp4"],
                groups=[
                    InputGroup(first=0, keys=["0.000", "0.500"], field="frames"),
                    InputGroup(first=2, keys=["0.000"], field="frames"),
                ],
            ),
            pipeline=PIPELINE,
            inputs=inputs,
            ttl_s=600,
            blobs=[b"VIDEO BYTES"],
            item_blobs=[0, 0, None],
        )
        pipe.execute()
    assert client.get(keys.job_blob("j", 0)) == b"VIDEO BYTES"
    assert 0 < client.ttl(keys.job_blob("j", 0)) <= 600
    assert client.keys("dlpipe:job:j:blob:*") == [keys.job_blob("j", 0).encode()]  # once, not per frame
    for index in (0, 1):
        item = client.hgetall(keys.item("j", index))
        assert item[keys.BLOB_FIELD.encode()] == keys.job_blob("j", 0).encode()
        assert codecs.decode(item[keys.INPUT_FIELD.encode()]) == inputs[index]  # small: no bytes in it
    assert not client.hexists(keys.item("j", 2), keys.BLOB_FIELD)
    job = client.hgetall(keys.job("j"))
    assert job[b"total"] == b"3"
    assert json.loads(job[b"groups"]) == [
        {"input": 0, "first": 0, "count": 2, "keys": ["0.000", "0.500"], "field": "frames"},
        {"input": 1, "first": 2, "count": 1, "keys": ["0.000"], "field": "frames"},
    ]
    view = job_view_from_redis(job, {})
    assert [o.source for o in view.outputs] == ["up.mp4", "b.mp4"] and view.status == JobStatus.queued
    assert client.xlen(keys.stream(PIPELINE.stream_name(PIPELINE.stage("frame")))) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": [InputGroup(first=1, keys=["a", "b"], field="f")]}, "does not fit"),
        ({"groups": [InputGroup(0, ["a", "b"], "f"), InputGroup(1, ["c"], "f")]}, "does not fit"),
        ({"groups": [InputGroup(first=0, keys=[], field="f")]}, "does not fit"),
        (
            {"groups": [InputGroup(first=0, keys=["a", "b"], field="f")], "sources": ["x", "y"]},
            "2 sources for 1",
        ),
        ({"item_blobs": [0, None]}, "refers to a blob"),
        ({"blobs": [b"v"], "item_blobs": [0]}, "1 blob references for 2 items"),
    ],
)
def test_queue_new_job_refuses_groups_and_blobs_that_do_not_add_up(
    kwargs: dict[str, Any], message: str, client: fakeredis.FakeRedis
) -> None:
    with pytest.raises(ValueError, match=message):
        record = {k: kwargs.pop(k) for k in ("groups", "sources") if k in kwargs}  # the record's part
        queue_new_job(
            client.pipeline(),
            JobRecord.new(id="j", pipeline=PIPELINE.name, total=2, created_ms=1, **record),
            pipeline=PIPELINE,
            inputs=[{"t": 0}, {"t": 1}],
            ttl_s=600,
            **kwargs,
        )
