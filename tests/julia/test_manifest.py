"""The Julia dependency manifest, checked without Julia: juliapkg's own resolver, UUIDs, and agreement between
``pysens/juliapkg.json``, ``Project.toml`` and what the ``.jl`` sources load; and the wheel ships all of it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

import pysens

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: juliapkg (test extra) brings tomli
    import tomli as tomllib

PYSENS = Path(pysens.__file__).resolve().parent
REPO = PYSENS.parent
MANIFEST = PYSENS / "juliapkg.json"
PACKAGE = PYSENS / "julia" / "PySensSolvers"
PROJECT = tomllib.loads((PACKAGE / "Project.toml").read_text())
DECLARED = json.loads(MANIFEST.read_text())["packages"]

# UUIDs as verified for this release, each against the package's own Project.toml (SciML/OrdinaryDiffEq.jl monorepo
# lib/<name>/Project.toml at b211787f 2026-08-22 for the OrdinaryDiffEq* sublibraries and StochasticDiffEq; the
# package repositories' Project.toml for SciMLBase b501faa5, LinearSolve 3f697e13, ADTypes fc4cc9d1, Sundials
# 2df924b1, DiffEqNoiseProcess 178bb316) and, where the index stores it, the General registry's
# <letter>/<Name>/Package.toml (all but SciMLBase, which is cross-checked in OrdinaryDiffEq's [deps] instead).
# Standard libraries: the [extras] of StochasticDiffEq's Project.toml. A change here must be re-verified.
VERIFIED_UUIDS = {
    "ADTypes": "47edcb42-4c32-4615-8424-f2b9edc5f35b",
    "DiffEqNoiseProcess": "77a26b50-5914-5dd7-bc55-306e6241c503",
    "LinearSolve": "7ed4a6bd-45f5-4d41-b270-4a48e9bafcae",
    "OrdinaryDiffEqBDF": "6ad6398a-0878-4a85-9266-38940aa047c8",
    "OrdinaryDiffEqFIRK": "5960d6e9-dd7a-4743-88e7-cf307b64f125",
    "OrdinaryDiffEqHighOrderRK": "d28bc4f8-55e1-4f49-af69-84c1a99f0f58",
    "OrdinaryDiffEqLowOrderRK": "1344f307-1e59-4825-a18e-ace9aa3fa4c6",
    "OrdinaryDiffEqRosenbrock": "43230ef6-c299-4910-a778-202eb28ce4ce",
    "OrdinaryDiffEqSDIRK": "2d112036-d095-4a1e-ab9a-08536f3ecdbf",
    "OrdinaryDiffEqTsit5": "b1df2697-797e-41e3-8120-5422d3b24e4a",
    "OrdinaryDiffEqVerner": "79d7bb75-1356-48c1-b8c0-6832512096c2",
    "SciMLBase": "0bca4576-84f4-4d90-8ffe-ffa030f20462",
    "StochasticDiffEq": "789caeaf-c7a9-5a7d-9973-96adeb23e2a0",
    "Sundials": "c3572dad-4567-51f8-b174-8c6c989267f4",
    "LinearAlgebra": "37e2e46d-f89d-539d-b4ee-838fcccc9c8e",
    "Random": "9a3f8284-a2c9-5f02-9a11-845980a1fd5c",
    "Test": "8dfed614-e22c-5e08-85e1-65c5234f0b40",
}
# lowest major versions whose API the sources use: OrdinaryDiffEq v7 sublibraries (v2), StochasticDiffEq v7
# (sublibrary umbrella), SciMLBase v3, LinearSolve v5, Sundials v6
MIN_MAJOR = {
    **{name: 2 for name in VERIFIED_UUIDS if name.startswith("OrdinaryDiffEq")},
    "StochasticDiffEq": 7,
    "SciMLBase": 3,
    "LinearSolve": 5,
    "Sundials": 6,
}


def loaded_packages(path: Path) -> set[str]:
    """Packages named by ``using``/``import`` lines (regex on purpose: independent of the tree-sitter checks)."""
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(?:using|import)\s+([^:]+?)(?::|$)", line.split("#")[0])
        if m:
            names.update(part.strip().split(".")[0] for part in m.group(1).split(","))
    return {n for n in names if n}


def test_juliapkg_resolver_accepts_the_manifest_offline(monkeypatch):
    deps = pytest.importorskip("juliapkg.deps", reason="juliapkg is in the test extra: pip install -e '.[test]'")
    monkeypatch.syspath_prepend(str(REPO))
    files = {Path(f).resolve() for f in deps.deps_files()}
    assert MANIFEST.resolve() in files
    compat, pkgs = deps.find_requirements()  # parses every juliapkg.json, validates UUIDs, intersects bounds
    by_name = {p.name: p for p in pkgs}
    assert set(DECLARED) <= set(by_name)
    local = by_name["PySensSolvers"]
    assert local.dev and Path(local.path).resolve() == PACKAGE.resolve()
    assert local.uuid == PROJECT["uuid"]
    # ours asks for Julia 1.10; merged with juliacall's own manifest (where installed) the bound narrows, never empties
    assert compat is not None and deps.Version.parse("1.10.5") in compat
    for name, pkg in by_name.items():
        if name in DECLARED and name != "PySensSolvers":
            assert pkg.uuid == DECLARED[name]["uuid"]


def test_uuids_are_valid_and_verified():
    assert str(uuid.UUID(PROJECT["uuid"])) == PROJECT["uuid"]
    for table in (PROJECT["deps"], PROJECT["extras"], {k: v["uuid"] for k, v in DECLARED.items()}):
        for name, value in table.items():
            assert str(uuid.UUID(value)) == value, f"{name}: {value} is not a canonical UUID"
            if name != "PySensSolvers":
                assert VERIFIED_UUIDS[name] == value, f"{name}: {value} differs from the verified UUID"


def test_manifest_and_project_declare_the_same_packages_and_bounds():
    declared = {k: v for k, v in DECLARED.items() if k != "PySensSolvers"}
    assert declared.keys() == PROJECT["deps"].keys()
    for name, entry in declared.items():
        assert entry["uuid"] == PROJECT["deps"][name]
        assert entry["version"] == PROJECT["compat"][name], name
    assert DECLARED["PySensSolvers"] == {"uuid": PROJECT["uuid"], "path": "julia/PySensSolvers", "dev": True}
    assert json.loads(MANIFEST.read_text())["julia"] == PROJECT["compat"]["julia"] == "1.10"


def test_compat_bounds_pin_the_ordinarydiffeq_v7_generation():
    for name, major in MIN_MAJOR.items():
        first = PROJECT["compat"][name].split(",")[0].strip().lstrip("^~=")
        assert int(first.split(".")[0]) >= major, f"{name} compat {PROJECT['compat'][name]} allows majors < {major}"


def test_sources_load_exactly_the_declared_packages():
    src = loaded_packages(PACKAGE / "src" / "PySensSolvers.jl")
    assert src == set(PROJECT["deps"])
    tests = loaded_packages(PACKAGE / "test" / "runtests.jl") - {"PySensSolvers"}
    assert tests == set(PROJECT["extras"]) == set(PROJECT["targets"]["test"])
    assert set(PROJECT["extras"]) <= set(PROJECT["compat"])


def test_built_wheel_ships_the_manifest_and_the_julia_package(tmp_path):
    """Build the wheel from a copy of the sources (about 2 s) and look inside."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the build backend)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PYSENS, src / "pysens", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".", "-w", "dist"]
    done = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (src / "dist").glob("pysens-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        "pysens/juliapkg.json",
        "pysens/julia/PySensSolvers/Project.toml",
        "pysens/julia/PySensSolvers/src/PySensSolvers.jl",
        "pysens/julia/PySensSolvers/test/runtests.jl",
        "pysens/solvers/backends/julia_backend.py",
        "pysens/solvers/backends/julia_callbacks.py",
    }
    assert expected <= names, expected - names
    shipped = json.loads(zipfile.ZipFile(wheel).read("pysens/juliapkg.json"))
    assert f"pysens/{shipped['packages']['PySensSolvers']['path']}/Project.toml" in names
