"""Pipelines-file validation: a good file parses into a graph; each mistake gets a clear error."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from shared.callables import check_callables
from shared.pipeline_spec import INPUT, PipelineConfigError, load_pipelines, parse_pipelines
from shared.settings import DEFAULT_PIPELINES_FILE

GOOD: dict[str, Any] = {
    "models": {
        "m1": {"class": "json:JSONDecoder", "batching": {"max_batch_size": 8, "max_batch_delay_ms": 5}}
    },
    "pipelines": {
        "p": {
            "input": "image",
            "stages": [
                {"name": "pre", "kind": "preprocess", "fn": "json:dumps"},
                {"name": "infer", "kind": "model", "model": "m1"},
                {"name": "post", "kind": "postprocess", "fn": "json:loads", "needs": ["infer", "input"]},
            ],
        }
    },
}


def with_changes(change) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    change(data)
    return data


def stages(data: dict[str, Any]) -> list[dict[str, Any]]:
    return data["pipelines"]["p"]["stages"]


def test_a_good_file_parses_into_a_graph() -> None:
    config = parse_pipelines(GOOD)
    p = config.pipelines["p"]
    assert [s.needs for s in p.stages] == [[INPUT], ["pre"], ["infer", "input"]]
    assert [s.name for s in p.sources()] == ["pre"]
    assert [s.name for s in p.downstream("infer")] == ["post"]
    assert p.sink.name == "post"
    assert config.cpu_streams() == ["cpu.p.post", "cpu.p.pre"]
    assert config.model_streams() == {"m1": "model.m1"}
    assert config.model_streams(["other"]) == {}


def test_a_device_type_may_batch_its_own_way() -> None:
    gpu = {"max_batch_size": 64, "max_batch_delay_ms": 8}
    config = parse_pipelines(with_changes(_set(["models", "m1", "batching_by_device"], {"cuda": gpu})))
    m1 = config.models["m1"]
    assert (m1.batching_for("cuda").max_batch_size, m1.batching_for("cuda").max_batch_delay_ms) == (64, 8)
    assert m1.batching_for("cpu") == m1.batching_for("mps") == m1.batching  # the others: `batching`
    assert m1.batching.max_batch_size == 8


def test_the_shipped_models_batch_small_on_a_cpu_and_big_on_a_gpu() -> None:
    models = load_pipelines(DEFAULT_PIPELINES_FILE).models
    cnn = models["efficientnet_lite0"]
    assert cnn.batching_for("cpu").max_batch_size < cnn.batching_for("cuda").max_batch_size


def test_fan_out_and_join() -> None:
    def change(d: dict[str, Any]) -> None:
        stages(d)[:] = [
            {"name": "a", "kind": "preprocess", "fn": "json:dumps"},
            {"name": "b", "kind": "preprocess", "fn": "json:dumps", "needs": ["input"]},
            {"name": "j", "kind": "postprocess", "fn": "json:dumps", "needs": ["a", "b"]},
        ]

    p = parse_pipelines(with_changes(change)).pipelines["p"]
    assert {s.name for s in p.sources()} == {"a", "b"}
    assert p.sink.name == "j"


def test_the_shipped_file_is_valid_and_its_callables_exist() -> None:
    config = load_pipelines(DEFAULT_PIPELINES_FILE)
    assert "image-classify" in config.pipelines
    check_callables(config, import_them=False)


def _set(path: list[Any], value: Any):
    def change(d: dict[str, Any]) -> None:
        target = d
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def _del(path: list[Any]):
    def change(d: dict[str, Any]) -> None:
        target = d
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return change


ST = ["pipelines", "p", "stages"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set([*ST, 1, "model"], "nope"), "pipeline 'p', stage 'infer': unknown model 'nope'"),
        (
            _set([*ST, 2, "needs"], ["ghost"]),
            "pipeline 'p', stage 'post': needs 'ghost', which no stage makes",
        ),
        (_set([*ST, 0, "needs"], ["post"]), "pipeline 'p': stages form a cycle: pre -> post -> infer -> pre"),
        (_del(["models", "m1", "batching"]), "stage 'infer': model 'm1' has no batching settings"),
        (_set([*ST, 1, "needs"], ["pre", "input"]), "stage 'infer': a model stage takes exactly one input"),
        (_set([*ST, 0, "kind"], "bake"), "pipeline 'p': stages.0.kind: Input should be"),
        (_set([*ST, 0, "fn"], "not a path"), "stage 'pre': `fn` must be 'package.module:function'"),
        (_set([*ST, 1, "fn"], "json:dumps"), "stage 'infer': a model stage names a `model`, not a `fn`"),
        (_set([*ST, 2, "name"], "pre"), "pipeline 'p', stage 'pre': defined twice"),
        (_set([*ST, 2, "name"], "input"), "stage 'input': invalid stage name"),
        (_set([*ST, 2, "kind"], "model"), "stage 'post': a model stage"),
        (_set(["pipelines", "p", "stages"], []), "pipeline 'p': has no stages"),
        (_set(["pipelines", "p", "input"], "smell"), "pipeline 'p': input: Input should be"),
        (_set(["pipelines", "p", "extra"], 1), "pipeline 'p': extra: Extra inputs are not permitted"),
        (_set(["models", "m1", "batching", "max_batch_size"], 0), "model 'm1': batching.max_batch_size"),
        (
            _set(
                ["models", "m1", "batching_by_device"],
                {"tpu": {"max_batch_size": 8, "max_batch_delay_ms": 1}},
            ),
            "model 'm1': batching_by_device names unknown device types tpu",
        ),
        (
            _set(["models", "m1", "batching_by_device"], {"cuda": {"max_batch_size": 8}}),
            "model 'm1': batching_by_device.cuda.max_batch_delay_ms: Field required",
        ),
        (_set(["models", "m1", "class"], "NoModule"), "model 'm1': `class` must be 'package.module:Class'"),
        (_set(["pipelines"], {}), "declares no pipelines"),
    ],
)
def test_each_mistake_gets_a_clear_error(change, message: str) -> None:
    with pytest.raises(PipelineConfigError) as err:
        parse_pipelines(with_changes(change))
    assert message in str(err.value)


def test_two_final_stages_are_refused() -> None:
    def change(d: dict[str, Any]) -> None:
        stages(d).append({"name": "extra", "kind": "postprocess", "fn": "json:dumps", "needs": ["infer"]})

    with pytest.raises(PipelineConfigError, match=r"exactly one final stage, found 2 \(post, extra\)"):
        parse_pipelines(with_changes(change))


def test_a_final_model_stage_is_refused() -> None:
    with pytest.raises(PipelineConfigError, match="the final stage must be a postprocess stage"):
        parse_pipelines(with_changes(lambda d: stages(d).pop()))


def test_unknown_callables_are_reported_with_their_stage() -> None:
    config = parse_pipelines(with_changes(_set([*ST, 0, "fn"], "no_such_module.x:f")))
    with pytest.raises(
        PipelineConfigError, match="pipeline 'p', stage 'pre': cannot load 'no_such_module.x:f'"
    ):
        check_callables(config, import_them=False)
    config = parse_pipelines(with_changes(_set([*ST, 0, "fn"], "json:no_such_fn")))
    check_callables(config, import_them=False)  # only the module is located without importing
    with pytest.raises(PipelineConfigError, match="'json' has no attribute 'no_such_fn'"):
        check_callables(config, import_them=True)


def test_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PipelineConfigError, match="cannot read pipelines file"):
        load_pipelines(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipelines: [unclosed")
    with pytest.raises(PipelineConfigError, match="is not valid YAML"):
        load_pipelines(bad)
    bad.write_text("- a list\n")
    with pytest.raises(PipelineConfigError, match="must be a mapping"):
        load_pipelines(bad)
