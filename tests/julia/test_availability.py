"""``backend="julia"`` where Julia is absent: a fast, clear error, nothing downloaded, other backends unaffected.

Three situations: juliacall not installed (this project's normal environment, tested in process); a juliacall
stand-in (a tiny module on PYTHONPATH that raises a bare Exception, as juliacall does, or that "starts"); and
the real juliacall wheel from PyPI unpacked into a temporary folder (so the test environment stays clean), which
must fail in offline mode without downloading anything. Each juliacall case runs in its own subprocess, because
juliacall reads its settings once per process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

import pysens
from pysens.solvers import BackendNotAvailable, ODEProblem, solve
from pysens.solvers.backends import julia_backend as jb

REPO = Path(pysens.__file__).resolve().parents[1]
LIMIT_S = 2.0

# Runs in a subprocess: times the failing julia solve, then checks torch and scipy still solve.
PROBE = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    warnings.simplefilter("always")
    import torch
    from pysens.solvers import BackendNotAvailable, ODEProblem, solve
    from pysens.solvers.backends import julia_backend as jb

    problem = ODEProblem(lambda t, x: -x, torch.ones(2, 1, dtype=torch.float64), (0.0, 1.0))
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        start = time.perf_counter()
        try:
            solve(problem, "Tsit5", backend="julia")
            out["error"] = None
        except BackendNotAvailable as exc:
            out["error"] = str(exc)
        out["seconds"] = time.perf_counter() - start
    out["warnings"] = [str(w.message) for w in caught]
    out["available"] = list(jb.available())
    out["env"] = {k: os.environ.get(k) for k in
                  ("PYTHON_JULIAPKG_OFFLINE", "PYTHON_JULIACALL_HANDLE_SIGNALS", "PYTHON_JULIACALL_THREADS")}
    out["juliacall_loaded"] = "juliacall" in sys.modules
    out["torch_ok"] = float(solve(problem, "Tsit5", rtol=1e-8, atol=1e-10).final[0, 0])
    out["scipy_ok"] = float(solve(problem, "DP5", backend="scipy", rtol=1e-8, atol=1e-10).final[0, 0])
    print("RESULT" + json.dumps(out))
    """
)


# The same without timing the other backends (for the settings tests): one subprocess start, no scipy solve.
LIGHT = textwrap.dedent(
    """
    import json
    from pysens.solvers.backends import julia_backend as jb
    print("RESULT" + json.dumps({"available": list(jb.available())}))
    """
)


def run_probe(tmp_path: Path, pythonpath: list[Path], env_extra: dict | None = None, script: str = PROBE) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON_JULIA", "PYSENS_JULIA", "JULIA_"))}
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*pythonpath, REPO])
    # keep juliapkg's state out of the virtual environment, and make any download attempt fail at once
    env["PYTHON_JULIAPKG_PROJECT"] = str(tmp_path / "julia_env")
    env["JULIA_DEPOT_PATH"] = str(tmp_path / "depot")
    env["HTTP_PROXY"] = env["HTTPS_PROXY"] = env["http_proxy"] = env["https_proxy"] = "http://127.0.0.1:9"
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def check_other_backends(out: dict) -> None:
    assert abs(out["torch_ok"] - 0.36787944117) < 1e-6
    assert abs(out["scipy_ok"] - 0.36787944117) < 1e-6


@pytest.mark.skipif(importlib.util.find_spec("juliacall") is not None, reason="juliacall is installed here")
def test_without_juliacall_fails_fast_in_process(monkeypatch):
    monkeypatch.setattr(jb, "_status", None)
    problem = ODEProblem(lambda t, x: -x, torch.ones(2, 1, dtype=torch.float64), (0.0, 1.0))
    start = time.perf_counter()
    with pytest.raises(BackendNotAvailable) as info:
        solve(problem, "Tsit5", backend="julia")
    assert time.perf_counter() - start < LIMIT_S
    message = str(info.value)
    assert "Julia is not installed" in message and 'pip install "pysens[julia]"' in message
    assert "PYSENS_JULIA_INSTALL=1" in message
    assert "juliacall" not in sys.modules
    # the other backends keep working in the same process
    assert abs(float(solve(problem, "Tsit5", rtol=1e-8).final[0, 0]) - 0.367879441) < 1e-6
    assert abs(float(solve(problem, "DP5", backend="scipy", rtol=1e-8).final[0, 0]) - 0.367879441) < 1e-6


def fake_juliacall(root: Path, body: str) -> Path:
    pkg = root / "fake_site" / "juliacall"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    return pkg.parent


MISSING_JULIA = """
    import json, os, warnings
    # what juliacall/juliapkg see at import: the settings must already be in place
    with open(os.environ["FAKE_ENV_LOG"], "w") as fh:
        json.dump({k: os.environ.get(k) for k in ("PYTHON_JULIAPKG_OFFLINE", "PYTHON_JULIACALL_HANDLE_SIGNALS",
                   "PYTHON_JULIACALL_THREADS")}, fh)
    raise Exception("could not find Julia 1.10.3 - 1.11")  # juliacall raises a bare Exception, not ImportError
"""


def test_juliacall_without_julia_fails_fast_with_settings_made_before_import(tmp_path):
    site = fake_juliacall(tmp_path, MISSING_JULIA)
    log = tmp_path / "env.json"
    out = run_probe(tmp_path, [site], {"FAKE_ENV_LOG": str(log)})
    assert out["seconds"] < LIMIT_S
    assert "Julia is not installed or did not start (could not find Julia 1.10.3 - 1.11)" in out["error"]
    assert 'pip install "pysens[julia]"' in out["error"]
    assert json.loads(log.read_text()) == {
        "PYTHON_JULIAPKG_OFFLINE": "yes",
        "PYTHON_JULIACALL_HANDLE_SIGNALS": "yes",
        "PYTHON_JULIACALL_THREADS": "1",
    }
    assert out["available"][0] is False and not out["juliacall_loaded"]
    check_other_backends(out)


def test_opt_in_install_and_user_settings_are_respected(tmp_path):
    site = fake_juliacall(tmp_path, MISSING_JULIA)
    log = tmp_path / "env.json"
    env = {"FAKE_ENV_LOG": str(log), "PYSENS_JULIA_INSTALL": "1", "PYTHON_JULIACALL_THREADS": "4"}
    run_probe(tmp_path, [site], env, script=LIGHT)
    seen = json.loads(log.read_text())
    assert seen["PYTHON_JULIAPKG_OFFLINE"] is None  # PYSENS_JULIA_INSTALL=1 lets juliapkg download
    assert seen["PYTHON_JULIACALL_THREADS"] == "4"


STARTING_JULIA = """
    import sys, warnings
    if "torch" in sys.modules:  # as the real juliacall does
        warnings.warn("torch was imported before juliacall. This may cause a segfault.")

    class _Solvers:
        def solve_ode(self, *args, **kwargs):
            return ("solve_ode", len(args), sorted(kwargs))

    class _Main:
        PySensSolvers = _Solvers()
        def seval(self, code):
            if code == "string(VERSION)":
                return "1.11.7"
            if code == "using PySensSolvers" and __import__("os").environ.get("FAKE_NO_PACKAGE"):
                raise RuntimeError("ArgumentError: Package PySensSolvers not found in current path")
            return None

    Main = _Main()
"""

SESSION = PROBE.replace(
    'print("RESULT"',
    'out["session"] = list(jb.JuliacallSession().call("solve_ode", 1, 2, saveat=3))\nprint("RESULT"',
)


def test_julia_found_gives_one_import_order_warning_and_a_working_session(tmp_path):
    site = fake_juliacall(tmp_path, STARTING_JULIA)
    script = SESSION.replace('solve(problem, "Tsit5", backend="julia")', "jb.available()")
    out = run_probe(tmp_path, [site], script=script)
    assert out["available"] == [True, "Julia 1.11.7, PySensSolvers loaded"]
    order = [w for w in out["warnings"] if "torch was imported before juliacall" in w]
    assert len(order) == 1 and "import juliacall" in order[0]  # ours, with advice; juliacall's own is muted
    assert out["session"] == ["solve_ode", 2, ["saveat"]]


def test_julia_found_but_package_missing_says_how_to_install(tmp_path):
    site = fake_juliacall(tmp_path, STARTING_JULIA)
    ok, reason = run_probe(tmp_path, [site], {"FAKE_NO_PACKAGE": "1"}, script=LIGHT)["available"]
    assert not ok and "PySensSolvers did not load" in reason and "PYSENS_JULIA_INSTALL=1" in reason


@pytest.fixture(scope="module")
def juliacall_site(tmp_path_factory) -> Path:
    """The real juliacall wheel from PyPI, unpacked (not installed) into a temporary folder."""
    where = tmp_path_factory.mktemp("juliacall_wheel")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "juliacall==0.9.37"]
    try:
        done = subprocess.run([*cmd, "-d", str(where)], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.skip("downloading the juliacall wheel from PyPI timed out here")
    wheels = list(where.glob("juliacall-*.whl"))
    if done.returncode != 0 or not wheels:
        pytest.skip(f"the juliacall wheel could not be downloaded from PyPI here: {done.stderr.strip()[-300:]}")
    site = where / "site"
    zipfile.ZipFile(wheels[0]).extractall(site)
    return site


def test_real_juliacall_without_julia_fails_fast_and_downloads_nothing(tmp_path, juliacall_site):
    pytest.importorskip("juliapkg", reason="juliacall needs juliapkg (in the test extra)")
    out = run_probe(tmp_path, [juliacall_site])
    assert out["seconds"] < LIMIT_S, out
    assert "Julia is not installed or did not start" in out["error"] and "could not find Julia" in out["error"]
    assert 'pip install "pysens[julia]"' in out["error"]
    assert out["env"]["PYTHON_JULIAPKG_OFFLINE"] == "yes"
    # nothing was downloaded: juliapkg's folders hold no Julia (at most small state files)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.stat().st_size < 100_000 for p in files), [(p, p.stat().st_size) for p in files]
    assert not [p for p in files if p.name in ("julia", "julia.exe")]
    check_other_backends(out)
