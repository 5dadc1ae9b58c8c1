"""The package layering of docs/ARCHITECTURE.md holds: curation <- resources <- assets <-
curation_dags <- curation_demo, and the core imports no Dagster. Read from the source (every
import statement, lazy ones inside functions included), so a new import that breaks the
direction fails here. The demo package (driver, demo data) sits on top: no product package
imports it; `curate` names its command module as a string, loaded when the parser is built."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> top-level names it must never import
FORBIDDEN = {
    "curation": {"dagster", "dagster_aws", "dagster_graphql", "curation_dags", "assets",
                 "resources", "curation_demo"},
    "resources": {"assets", "curation_dags", "curation_demo"},
    "assets": {"curation_dags", "curation_demo"},
    "curation_dags": {"curation_demo"},
    "curation_demo": {"tests", "benchmarks"},
}


def imported_tops(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    tops = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package):
    offences = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_tops(path) & FORBIDDEN[package]
        if bad:
            offences.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offences, "\n".join(offences)


def test_core_cli_runs_without_dagster():
    """`python -m curation.cli` loads every core subcommand without importing Dagster."""
    code = (
        "import sys; from curation.cli import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'dagster', 'curation_dags', 'assets', 'resources'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_code_location_loads_without_the_demo():
    """Loading the code location (and `curate`'s parser without the demo subcommand) imports
    nothing from curation_demo; `curate demo` is still offered."""
    code = (
        "import sys; import curation_dags.definitions; from curation.cli import build_parser; "
        "from curation_dags.cli import COMMAND_MODULES; "
        "print(sorted(m for m in sys.modules if m.startswith('curation_demo'))); "
        "build_parser(COMMAND_MODULES); print('curation_demo.command' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.split() == ["[]", "True"]


def test_hashing_has_one_home():
    """Content hashes (item ids, identities, fingerprints, manifests) come from
    curation/hashing.py only: a second sha256 helper would be free to drift in byte layout."""
    offences = [
        str(path.relative_to(ROOT))
        for package in ("curation", "resources", "assets", "curation_dags", "curation_demo",
                        "benchmarks")
        for path in sorted((ROOT / package).rglob("*.py"))
        if "hashlib" in imported_tops(path) and path != ROOT / "curation" / "hashing.py"
    ]
    assert not offences, f"import hashlib outside curation/hashing.py: {offences}"
