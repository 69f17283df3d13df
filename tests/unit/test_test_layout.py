"""The tests' own layout: no module under tests/ imports from a test module (tests/**/test_*.py).

Fixtures shared by several modules live in a conftest.py (found by pytest, never imported), and
helpers in tests/support/. A fixture imported by name from another test module is what made
pyflakes see redefinitions (F811) and ran a module's setup for another's tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    """tests/unit/test_x.py -> tests.unit.test_x; tests/support/__init__.py -> tests.support."""
    parts = list(path.relative_to(TESTS.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of_test_modules(source: str, module: str, is_package: bool = False) -> list[str]:
    """The `tests...test_*` modules that `source` (the module `module`) imports from, each as
    "line: name"; relative imports are resolved first."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            origin = ".".join(base + ([node.module] if node.module else []))
            # `from tests.unit import test_x` imports the module tests.unit.test_x
            names = [origin] + [f"{origin}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            tests_at = [i for i, part in enumerate(parts) if part.startswith("test_")]
            if parts[0] == "tests" and tests_at:
                found.append(f"{node.lineno}: {'.'.join(parts[: tests_at[0] + 1])}")
                break
    return found


def test_no_module_under_tests_imports_from_a_test_module() -> None:
    offenders = {}
    for path in sorted(TESTS.rglob("*.py")):
        found = imports_of_test_modules(path.read_text(), module_name(path), path.name == "__init__.py")
        if found:
            offenders[str(path.relative_to(TESTS.parent))] = found
    assert offenders == {}, (
        "a shared fixture belongs in a conftest.py, a shared helper in tests/support/: "
        f"imports of test modules {offenders}"
    )


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("from tests.integration.test_workers import procs", True),
        ("from tests.unit import test_bench", True),
        ("import tests.e2e.test_stack", True),
        ("import tests.e2e.test_stack as stack", True),
        ("from .test_api_jobs import multipart", True),
        ("from ..integration.test_webhooks import Hook", True),
        ("def f():\n    from tests.unit.test_reclaim import FakeClock", True),
        ("from tests.support.api import b64", False),
        ("from tests.stagefns import pipelines", False),
        ("from tests.e2e.conftest import Stack", False),
        ("from . import conftest", False),
        ("import test_something_else", False),  # not under tests/
    ],
)
def test_the_check_sees_every_form_of_import(source: str, flagged: bool) -> None:
    assert bool(imports_of_test_modules(source, "tests.unit.test_probe")) is flagged
