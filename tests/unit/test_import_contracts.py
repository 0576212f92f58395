"""The package's import graph keeps its one-way flow (issue 12 item 5): the import-linter contracts in
pyproject.toml (`[tool.importlinter]`: layers from the CLI down to the configuration, no cycles between sibling
modules) hold, no module imports the package root -- and a contract the code breaks is reported, so the check
is live."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("import-linter is not installed (the dev extra has it: pip install 'bayesian-hf[dev]')")
    return subprocess.run([binary, "--no-cache", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_import_contracts():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_no_module_imports_the_package_root():
    grimp = pytest.importorskip("grimp", reason="import-linter's graph builder (the dev extra has it)")
    graph = grimp.build_graph("bayesian_hf", cache_dir=None)
    assert graph.find_modules_that_directly_import("bayesian_hf") == set()
    assert graph.find_modules_that_directly_import("bayesian_hf.posterior")  # the graph is the real one


def test_a_broken_contract_is_reported(tmp_path):
    """tokenization imports the configuration: declaring the reverse layering, or forbidding that import, fails."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "bayesian_hf"\n\n'
        '[[tool.importlinter.contracts]]\nname = "reversed layers"\ntype = "layers"\n'
        'layers = ["bayesian_hf.configuration_bayesian_expectation", "bayesian_hf.tokenization"]\n\n'
        '[[tool.importlinter.contracts]]\nname = "forbidden import"\ntype = "forbidden"\n'
        'source_modules = ["bayesian_hf.tokenization"]\n'
        'forbidden_modules = ["bayesian_hf.configuration_bayesian_expectation"]\n'
    )
    result = _lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "2 broken" in result.stdout, result.stdout[-3000:]
    assert "bayesian_hf.tokenization -> bayesian_hf.configuration_bayesian_expectation" in result.stdout
