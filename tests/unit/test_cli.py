"""The `dlpipe` command line, and the supervisor's pure parts (backoff, commands, URLs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services import cli, cli_args, supervisor
from services.supervisor import CHILD_COMMANDS
from shared import children
from shared.children import restart_delay

REPO = Path(__file__).resolve().parents[2]

BAD_YAML = "models: {m: {class: 'a.b:C'}\npipelines: [unclosed\n"


def one_pipeline(stage: str, models: str = " {}") -> str:
    """A pipelines file: `models:` then `models`, and pipeline `p` (image input) of `stage` and json:dumps."""
    return f"""
models:{models}
pipelines:
  p:
    input: image
    stages:
      - {stage}
      - {{name: post, kind: postprocess, fn: json:dumps}}
"""


UNKNOWN_MODEL = one_pipeline("{name: m, kind: model, model: nope}")
MISSING_MODULE = one_pipeline("{name: pre, kind: preprocess, fn: no_such_module_dlpipe:f}")
MISSING_ATTR = one_pipeline("{name: pre, kind: preprocess, fn: json:no_such_function}")
BAD_MODEL_PARAM = one_pipeline(
    "{name: m, kind: model, model: m}",
    models="""
  m:
    class: workers.models.efficientnet_lite:EfficientNetLite0
    params: {weight_path: /models/lite0.pth}
    batching: {max_batch_size: 4, max_batch_delay_ms: 2}""",
)
GOOD = one_pipeline("{name: pre, kind: preprocess, fn: json:loads}")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DLPIPE_* from the caller's shell, and no root-logger rewiring by main()."""
    for name in list(os.environ):
        if name.startswith("DLPIPE_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(cli, "setup_logging", lambda level, role: None)


def run_python(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python *args` in the repository, with no DLPIPE_* from the caller's shell but `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DLPIPE_")}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _parse(*argv: str):
    return cli_args.build_parser().parse_args(list(argv))


# --- parsing -------------------------------------------------------------------------------


def test_worker_subcommands_parse() -> None:
    args = _parse("worker", "preprocess", "--concurrency", "3")
    assert (args.command, args.kind, args.concurrency) == ("worker", "preprocess", 3)
    args = _parse("worker", "model", "--models", "a, b,")
    assert (args.kind, args.models) == ("model", ["a", "b"])
    assert _parse("worker", "model").models is None
    assert _parse("worker", "notifier").kind == "notifier"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["worker"],
        ["worker", "gpu"],
        ["worker", "preprocess", "--concurrency", "0"],
        ["worker", "preprocess", "--concurrency", "two"],
        ["worker", "model", "--models", ","],
        ["api", "--port", "70000"],
        ["bogus"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2
    assert "usage: dlpipe" in capsys.readouterr().err


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLPIPE_PORT", "9001")
    monkeypatch.setenv("DLPIPE_HOST", "0.0.0.0")
    assert cli_args.settings_from_args(_parse("up")).port == 9001
    settings = cli_args.settings_from_args(_parse("api", "--port", "9002"))
    assert (settings.port, settings.host) == (9002, "0.0.0.0")
    settings = cli_args.settings_from_args(
        _parse("--log-level", "debug", "worker", "preprocess", "--concurrency", "4")
    )
    assert (settings.log_level, settings.preprocess_concurrency) == ("debug", 4)


def test_invalid_setting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DLPIPE_PORT", "eighty")
    assert cli.main(["check"]) == 2
    assert "DLPIPE_PORT" in capsys.readouterr().err


def test_commands_reach_their_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each subcommand calls its entry point with the one Settings built from env + flags."""
    import types

    calls: list[tuple] = []
    fake = {
        "services.api.server": types.SimpleNamespace(serve=lambda s: calls.append(("api", s.port))),
        "workers.preprocess": types.SimpleNamespace(main=lambda s, n: calls.append(("preprocess", n))),
        "workers.model_main": types.SimpleNamespace(serve=lambda s, m: calls.append(("model", m))),
        "workers.notifier": types.SimpleNamespace(main=lambda s: calls.append(("notifier", s.redis_url))),
    }
    for name, module in fake.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setenv("DLPIPE_REDIS_URL", "redis://example.invalid:1/0")
    monkeypatch.setenv("DLPIPE_PREPROCESS_CONCURRENCY", "5")
    assert cli.main(["api", "--port", "8123"]) == 0
    assert cli.main(["worker", "preprocess"]) == 0
    assert cli.main(["worker", "preprocess", "--concurrency", "2"]) == 0
    assert cli.main(["worker", "model", "--models", "a,b"]) == 0
    assert cli.main(["worker", "notifier"]) == 0
    assert calls == [
        ("api", 8123),
        ("preprocess", 5),
        ("preprocess", 2),
        ("model", ["a", "b"]),
        ("notifier", "redis://example.invalid:1/0"),
    ]


# --- dlpipe check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BAD_YAML, "not valid YAML"),
        (UNKNOWN_MODEL, "pipeline 'p', stage 'm': unknown model 'nope'"),
        (MISSING_MODULE, "stage 'pre': cannot load 'no_such_module_dlpipe:f'"),
        (MISSING_ATTR, "'json' has no attribute 'no_such_function'"),
        # a param the model class does not take: dlpipe check builds every model entry
        (
            BAD_MODEL_PARAM,
            "model 'm': params: EfficientNetLite0.__init__() got an unexpected keyword argument 'weight_path'",
        ),
    ],
)
def test_check_rejects_bad_pipelines_file(
    text: str,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(text)
    monkeypatch.setenv("DLPIPE_PIPELINES_FILE", str(path))
    assert cli.main(["check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"dlpipe check: {path}: ")
    assert expected in err


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", "--pipelines-file", str(tmp_path / "nope.yaml")]) == 1
    assert "cannot read pipelines file" in capsys.readouterr().err


def test_check_accepts_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(GOOD)
    assert cli.main(["check", "--pipelines-file", str(path)]) == 0
    assert "OK: pipelines p" in capsys.readouterr().out


def test_check_as_a_process_exits_1_with_the_error(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(UNKNOWN_MODEL)
    done = run_python("-m", "services.cli", "check", DLPIPE_PIPELINES_FILE=str(path))
    assert done.returncode == 1, done.stderr
    assert "unknown model 'nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_and_check_no_import_do_not_import_torch() -> None:
    """`dlpipe api` must not import torch: neither the CLI, the supervisor, nor `check --no-import` do."""
    code = (
        "import sys\n"
        "from services import cli, supervisor\n"
        "rc = cli.main(['check', '--no-import'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(rc)\n"
    )
    done = run_python("-c", code)
    assert done.returncode == 0, done.stdout + done.stderr


def test_healthcheck_api_down_is_unhealthy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.embedded_redis import free_port

    monkeypatch.setenv("DLPIPE_PORT", str(free_port()))  # nothing listens there
    assert cli.main(["healthcheck", "api", "--timeout-s", "1"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_worker_needs_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["healthcheck", "model"]) == 1
    assert "DLPIPE_REDIS_URL is not set" in capsys.readouterr().err


# --- supervisor: pure parts ----------------------------------------------------------------


def test_restart_delay_doubles_from_1s_to_a_30s_cap() -> None:
    assert restart_delay(0) == 0.0
    assert [restart_delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert restart_delay(10_000) == 30.0
    assert restart_delay(3, base_s=0.1, cap_s=1.0) == pytest.approx(0.4)
    assert restart_delay(5, base_s=0.1, cap_s=1.0) == 1.0


def test_child_commands_are_dlpipe_subcommands() -> None:
    parser = cli_args.build_parser()
    assert set(CHILD_COMMANDS) == {"api", "preprocess", "model", "notifier"}
    for args in CHILD_COMMANDS.values():
        parser.parse_args(list(args))  # each one parses
    argv = supervisor.dlpipe_argv(("worker", "model"))
    assert argv[-2:] == ["worker", "model"]
    assert "dlpipe" in argv[0] or argv[1:3] == ["-m", "services.cli"]


def test_redact_url_and_describe_exit() -> None:
    assert supervisor.redact_url("redis://:s3cret@db:6380/1") == "redis://:***@db:6380/1"
    assert supervisor.redact_url("redis://user:pw@db/0") == "redis://user:***@db/0"
    assert supervisor.redact_url("redis://127.0.0.1:7000/0") == "redis://127.0.0.1:7000/0"
    assert children.describe_exit(3) == "exit code 3"
    assert children.describe_exit(-int(signal.SIGKILL)) == "killed by SIGKILL"


def test_child_env_carries_settings_and_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import Settings

    monkeypatch.setenv("DLPIPE_STALE", "x")
    env = supervisor.child_env(Settings(port=9100, redis_url=None), "redis://127.0.0.1:7001/0")
    assert env["DLPIPE_REDIS_URL"] == "redis://127.0.0.1:7001/0"
    assert env["DLPIPE_PORT"] == "9100"
    assert "DLPIPE_STALE" not in env
    assert env["PATH"] == os.environ["PATH"]
