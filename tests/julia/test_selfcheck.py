"""``python -m pysens.solvers.backends.julia_backend --selfcheck``: says Julia is absent and exits non-zero here;
where Julia runs, it reports every row of the conformance table (whose exact answers tests/conformance checks on
torch and scipy)."""

from __future__ import annotations

import json
import sys
import types

import pytest

from pysens.solvers.backends import julia_backend as jb


def test_selfcheck_without_julia_says_so_and_fails(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(jb, "_status", (False, "Julia is not installed: test"))
    out = tmp_path / "report.json"
    assert jb.main(["--selfcheck", "--out", str(out)]) == 1
    assert "Julia is absent here, so nothing was run" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report == {
        "backend": "julia",
        "available": False,
        "probe": "Julia is not installed: test",
        "rows": [],
        "status": "julia-unavailable",
    }
    assert jb.main([]) == 1  # plain probe


@pytest.mark.parametrize(
    ("rows", "code"), [([{"status": "passed"}, {"status": "skipped"}], 0), ([{"passed": False}], 1)]
)
def test_selfcheck_uses_the_conformance_suite_when_present(monkeypatch, tmp_path, rows, code):
    monkeypatch.setattr(jb, "_status", (True, "fake Julia"))
    seen = {}

    def run_conformance(backend, methods=None):
        seen["backend"] = backend
        return rows

    module = types.ModuleType("pysens.solvers.conformance")
    module.run_conformance = run_conformance
    monkeypatch.setitem(sys.modules, "pysens.solvers.conformance", module)
    out = tmp_path / "report.json"
    assert jb.selfcheck(str(out)) == code
    report = json.loads(out.read_text())
    assert seen == {"backend": "julia"} and report["suite"] == "pysens.solvers.conformance"
    assert report["rows"] == rows and report["status"] == ("passed" if code == 0 else "failed")
