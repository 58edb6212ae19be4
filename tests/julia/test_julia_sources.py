"""Static checks of the shipped Julia sources with tree-sitter-julia (no Julia needed).

tree-sitter-julia is lenient (it parsed a stray top-level ``end`` as an identifier), so besides "parses without
errors" these tests check structure: one module, the expected exported functions, the keyword arguments the
Python side passes, the solver names the Python side maps, and the Julia constants the Python side mirrors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pysens.solvers.backends import julia_backend as jb
from pysens.solvers.methods import METHODS, methods_for

ts = pytest.importorskip("tree_sitter", reason="tree-sitter is in the test extra: pip install -e '.[test]'")
tsj = pytest.importorskip("tree_sitter_julia", reason="tree-sitter-julia is in the test extra")

PACKAGE = Path(jb.__file__).resolve().parents[2] / "julia" / "PySensSolvers"
SRC = PACKAGE / "src" / "PySensSolvers.jl"
JL_FILES = sorted(PACKAGE.rglob("*.jl"))

ENTRY_POINTS = ("solve_ode", "solve_split_ode", "solve_sde", "solve_split_sde")
EXPORTS = {*ENTRY_POINTS, "ode_algorithm", "sde_algorithm"}

# SciML solver names documented in SciML/DiffEqDocs.jl docs/src/solvers/ode_solve.md and sde_solve.md at commit
# 9e5472ba10467fa8058ce8b8b9f39c1a00564d1d (2026-08-07), checked by word search of those files. Every method the
# Python side maps to the julia backend must be one of them (and must also have a constructor in the sources).
SCIML_DOCUMENTED = {
    "Euler", "Heun", "RK4", "DP5", "Tsit5", "DP8", "Vern7", "Vern9", "Rosenbrock23", "Rodas4", "Rodas4P",
    "Rodas5P", "ROS3P", "TRBDF2", "KenCarp4", "Kvaerno5", "ImplicitEuler", "QNDF", "FBDF", "RadauIIA5",
    "CVODE_BDF", "EM", "EulerHeun", "SRA1", "SOSRA", "ImplicitEM", "SKenCarp",
}  # fmt: skip

# SciMLBase ReturnCode names (src/retcodes.jl, SciML/SciMLBase.jl b501faa5, 2026-08-21)
SCIML_RETCODES = {
    "Default", "Success", "Terminated", "DtNaN", "MaxIters", "MaxNumSub", "DtLessThanMin", "Unstable",
    "InitialFailure", "ConvergenceFailure", "Failure", "ExactSolutionLeft", "ExactSolutionRight",
    "FloatingPointLimit", "Infeasible", "MaxTime", "InternalLineSearchFailed", "ShrinkThresholdExceeded",
    "Stalled", "StalledSuccess", "InternalLinearSolveFailed", "APosterioriSafetyFailure",
}  # fmt: skip


@pytest.fixture(scope="module")
def parser():
    return ts.Parser(ts.Language(tsj.language()))


def parse(parser, path: Path):
    return parser.parse(path.read_bytes()).root_node


def walk(node):
    yield node
    for child in node.children:
        yield from walk(child)


def text(node) -> str:
    return node.text.decode()


@pytest.fixture(scope="module")
def src(parser):
    return parse(parser, SRC)


def functions(root) -> dict:
    """``{name: (positional parameter names, keyword parameter names)}`` of long-form function definitions."""
    out = {}
    for node in walk(root):
        if node.type != "function_definition":
            continue
        call = next(c for c in node.children if c.type == "signature").children[0]
        if call.type == "where_expression":
            call = call.children[0]
        name = text(call.children[0])
        positional, keywords, after_semicolon = [], [], False
        for arg in call.children[1].children:
            if arg.type == ";":
                after_semicolon = True
            elif arg.type in ("identifier", "typed_expression", "named_argument", "splat_expression"):
                (keywords if after_semicolon else positional).append(parameter_name(arg))
        out[name] = (positional, keywords)
    return out


def parameter_name(node) -> str:
    """``x``, ``x::T``, ``x = default`` and ``x::T = default`` all name ``x``; ``kwargs...`` is ``"..."``."""
    if node.type == "splat_expression":
        return "..."
    while node.type in ("named_argument", "typed_expression"):
        node = node.children[0]
    return text(node)


def constant(root, name: str):
    """The value node of ``const NAME = ...``."""
    for node in walk(root):
        if node.type == "const_statement":
            assignment = node.children[1]
            if text(assignment.children[0]) == name:
                return assignment.children[2]
    raise AssertionError(f"no const {name} in {SRC.name}")


def string_pairs(value) -> dict[str, str]:
    """``"Name" => Ctor`` pairs of a Dict literal."""
    pairs = {}
    for node in walk(value):
        if node.type == "binary_expression" and text(node.children[1]) == "=>":
            key, ctor = node.children[0], node.children[2]
            pairs[text(key).strip('"')] = text(ctor)
    return pairs


def string_set(value) -> set[str]:
    return {text(n).strip('"') for n in walk(value) if n.type == "string_literal"}


def imported_names(root) -> dict[str, str]:
    """``{name: package}`` for ``using Package: name, ...``."""
    out = {}
    for node in walk(root):
        if node.type == "selected_import":
            idents = [text(c) for c in node.children if c.type == "identifier"]
            out.update({name: idents[0] for name in idents[1:]})
    return out


@pytest.mark.parametrize("path", JL_FILES, ids=lambda p: p.name)
def test_every_julia_file_parses_without_errors(parser, path):
    root = parse(parser, path)
    bad = [n for n in walk(root) if n.type == "ERROR" or n.is_missing]
    assert not root.has_error and not bad, [(n.type, n.start_point) for n in bad]


def test_expected_files_are_there():
    assert {p.relative_to(PACKAGE).as_posix() for p in JL_FILES} == {"src/PySensSolvers.jl", "test/runtests.jl"}


def test_one_module_per_source_file_and_none_in_tests(parser, src):
    modules = [n for n in src.children if n.type == "module_definition"]
    assert len(modules) == 1 and text(modules[0].children[1]) == "PySensSolvers"
    assert all(n.type in ("module_definition", "string_literal", "line_comment") for n in src.children)
    tests = parse(parser, PACKAGE / "test" / "runtests.jl")
    assert not [n for n in walk(tests) if n.type == "module_definition"]


def test_exports_are_defined_functions(src):
    exported = {
        text(c) for n in walk(src) if n.type == "export_statement" for c in n.children if c.type == "identifier"
    }
    assert exported == EXPORTS
    assert EXPORTS <= set(functions(src))


def test_python_call_plans_match_the_julia_signatures(src):
    """Every keyword the Python side passes is accepted, and positional arities agree."""
    import torch

    from pysens.solvers import BrownianGrid, ODEProblem, SDEProblem
    from pysens.solvers.options import build_options
    from pysens.solvers.problem import SplitODEProblem, SplitSDEProblem

    defs = functions(src)
    forwarded = set(defs["_solve_kwargs"][1]) - {"..."}  # entry points pass `kwargs...` on to _solve_kwargs
    x0 = torch.ones(40, 2, dtype=torch.float64)
    grid = BrownianGrid.sample((0.0, 1.0), 8, x0.shape)
    f, g = (lambda t, x: -x), (lambda t, x: torch.ones_like(x))
    cases = [
        (ODEProblem(f, x0, (0, 1)), "Rodas5P", {"linsolve": "gmres", "krylov_dim": 5}, {"dtmin": 1e-9, "dtmax": 0.5}),
        (ODEProblem(f, x0, (0, 1)), "Euler", {}, {"dt": 0.1}),
        (SplitODEProblem(f, f, x0, (0, 1)), "KenCarp4", {"linsolve": "gmres"}, {}),
        (SDEProblem(f, g, x0, (0, 1), "additive", grid), "SOSRA", {}, {}),
        (SDEProblem(f, g, x0, (0, 1), "additive"), "ImplicitEM", {"theta": 0.5, "linsolve": "gmres"}, {"dt": 0.25}),
        (SplitSDEProblem(f, f, g, x0, (0, 1), "additive", grid), "SKenCarp", {"linsolve": "gmres"}, {}),
    ]
    seen = set()
    for problem, name, extra, kw in cases:
        info = METHODS[name]
        opts = build_options(
            problem.tspan, rtol=1e-6, atol=1e-8, dt=kw.get("dt"), saveat=None, adaptive=None,
            method_adaptive=info.adaptive, method_name=name, timesteps=None, maxiters=1000,
            dtmin=kw.get("dtmin"), dtmax=kw.get("dtmax"), generator=None, extra=extra,
        )  # fmt: skip
        call = jb.plan_call(problem, info, opts)
        positional, keywords = defs[call.function]
        assert len(call.args) == len(positional), (call.function, positional)
        unknown = set(call.kwargs) - (set(keywords) | forwarded)
        assert not unknown, f"{call.function} does not accept {unknown}"
        seen.add(call.function)
    assert seen == set(ENTRY_POINTS)


def test_every_mapped_method_has_a_constructor_and_is_a_documented_sciml_name(src):
    imported = imported_names(src)
    tables = {
        name: string_pairs(constant(src, name))
        for name in ("EXPLICIT_ODE", "IMPLICIT_ODE", "EXPLICIT_SDE", "IMPLICIT_SDE")
    }
    for pairs in tables.values():
        for key, ctor in pairs.items():
            assert key == ctor, f"{key!r} maps to {ctor} (the name must map 1:1 to its SciML constructor)"
            assert ctor in imported, f"{ctor} is not imported with `using Package: {ctor}`"
    in_tables = set().union(*tables.values())
    calls = {text(n.children[0]) for n in walk(src) if n.type == "call_expression"}
    for name in methods_for("julia"):
        assert name in SCIML_DOCUMENTED, f"{name} is not in the documented SciML solver list"
        assert name in in_tables or (name in calls and name in imported), f"no constructor for {name}"


def test_julia_tables_agree_with_the_method_table_and_the_python_mirrors(src):
    explicit_ode = set(string_pairs(constant(src, "EXPLICIT_ODE")))
    implicit_ode = set(string_pairs(constant(src, "IMPLICIT_ODE"))) | {"CVODE_BDF"}
    explicit_sde = set(string_pairs(constant(src, "EXPLICIT_SDE")))
    implicit_sde = set(string_pairs(constant(src, "IMPLICIT_SDE")))
    julia = {name: METHODS[name] for name in methods_for("julia")}
    assert explicit_ode == {n for n, m in julia.items() if m.kind == "ode" and not m.stiff}
    assert implicit_ode == {n for n, m in julia.items() if m.kind == "ode" and m.stiff}
    assert explicit_sde == {n for n, m in julia.items() if m.kind == "sde" and not m.stiff}
    assert implicit_sde == {n for n, m in julia.items() if m.kind == "sde" and m.stiff}
    assert string_set(constant(src, "IMEX_ODE")) | string_set(constant(src, "IMEX_SDE")) == jb.JULIA_IMEX
    assert string_set(constant(src, "NEEDS_EXTRA_NOISE")) == jb.NEEDS_EXTRA_NOISE
    assert string_set(constant(src, "DENSE_ONLY")) == jb.DENSE_ONLY
    assert jb.JULIA_IMEX <= {n for n, m in julia.items() if m.imex}


def test_python_retcode_map_uses_sciml_names():
    assert set(jb.RETCODES) <= SCIML_RETCODES
