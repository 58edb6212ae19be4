"""
    PySensSolvers

DifferentialEquations.jl entry points for pysens's julia backend. Each entry point takes plain arrays and
callables (Julia functions in the tests, Python functions through juliacall), builds a SciML problem, solves it
with a solver named by its SciML name, and returns a `NamedTuple`:

  - `t::Vector{Float64}`: the saved times;
  - `u::Matrix{Float64}`: the saved states, one column per saved time (`size(u) == (length(u0), length(t))`);
  - `retcode::String`: the SciML return code by name (`"Success"`, `"MaxIters"`, `"DtLessThanMin"`, ...);
  - `stats::Dict{String,Int}`: `sol.stats` (`nf`, `nf2`, `nw`, `nsolve`, `njacs`, `nnonliniter`,
    `nnonlinconvfail`, `naccept`, `nreject`).

The state is one flat `Vector{Float64}`; callables are in place: `f(du, u, p, t)`, `g(du, u, p, t)` (diagonal
noise: `du` holds the diagonal of the noise matrix), `jvp(Jv, v, u, p, t)` (`Jv = ∂f/∂u ⋅ v`). `p` is `nothing`.

Jacobians (`jac`): a right-hand side written in Python cannot carry ForwardDiff dual numbers, so every implicit
solver is built with `autodiff = AutoFiniteDiff()`. `jac = "finitediff"` factorises a dense finite-difference
Jacobian; `jac = "krylov"` solves the Newton/W systems matrix-free with `KrylovJL_GMRES()`, where OrdinaryDiffEq
applies the `jvp` given to `ODEFunction` (its `JVPCache` calls `f.jvp` when `SciMLBase.has_jvp(f)`, in
`lib/OrdinaryDiffEqDifferentiation/src/operators.jl`) and finite-differences `f` otherwise. `CVODE_BDF` maps
`"krylov"` to Sundials' own `linear_solver = :GMRES` (Sundials finite-differences J⋅v itself).
"""
module PySensSolvers

using ADTypes: AutoFiniteDiff
using DiffEqNoiseProcess: NoiseGrid
using LinearSolve: KrylovJL_GMRES
using OrdinaryDiffEqBDF: FBDF, QNDF
using OrdinaryDiffEqFIRK: RadauIIA5
using OrdinaryDiffEqHighOrderRK: DP8
using OrdinaryDiffEqLowOrderRK: DP5, Euler, Heun, RK4
using OrdinaryDiffEqRosenbrock: ROS3P, Rodas4, Rodas4P, Rodas5P, Rosenbrock23
using OrdinaryDiffEqSDIRK: ImplicitEuler, KenCarp4, Kvaerno5, TRBDF2
using OrdinaryDiffEqTsit5: Tsit5
using OrdinaryDiffEqVerner: Vern7, Vern9
using SciMLBase: FullSpecialize, ODEFunction, ODEProblem, SDEFunction, SDEProblem, SplitFunction,
    SplitODEProblem, SplitSDEFunction, SplitSDEProblem, solve
using StochasticDiffEq: EM, EulerHeun, ImplicitEM, SKenCarp, SOSRA, SRA1
using Sundials: CVODE_BDF

export solve_ode, solve_split_ode, solve_sde, solve_split_sde, ode_algorithm, sde_algorithm

# ---------------------------------------------------------------------------------------------------------
# Algorithms by SciML name
# ---------------------------------------------------------------------------------------------------------

"Explicit ODE methods: constructed with their defaults."
const EXPLICIT_ODE = Dict{String, Any}(
    "Euler" => Euler, "Heun" => Heun, "RK4" => RK4, "DP5" => DP5, "Tsit5" => Tsit5, "DP8" => DP8,
    "Vern7" => Vern7, "Vern9" => Vern9,
)

"Implicit and Rosenbrock ODE methods: each accepts `autodiff` and `linsolve` keywords."
const IMPLICIT_ODE = Dict{String, Any}(
    "Rosenbrock23" => Rosenbrock23, "Rodas4" => Rodas4, "Rodas4P" => Rodas4P, "Rodas5P" => Rodas5P,
    "ROS3P" => ROS3P, "TRBDF2" => TRBDF2, "KenCarp4" => KenCarp4, "Kvaerno5" => Kvaerno5,
    "ImplicitEuler" => ImplicitEuler, "QNDF" => QNDF, "FBDF" => FBDF, "RadauIIA5" => RadauIIA5,
)

# Matrix-free (Krylov) linear solves reached the FIRK family only recently (OrdinaryDiffEq PR #4166), later than
# the compat floor here, so RadauIIA5 always factorises a dense Jacobian.
const DENSE_ONLY = Set(["RadauIIA5"])

"ODE methods that treat `f1` of a `SplitODEProblem` implicitly and `f2` explicitly (IMEX)."
const IMEX_ODE = Set(["KenCarp4"])

"Explicit SDE methods."
const EXPLICIT_SDE = Dict{String, Any}("EM" => EM, "EulerHeun" => EulerHeun, "SRA1" => SRA1, "SOSRA" => SOSRA)

"Drift-implicit SDE methods: each accepts `autodiff` and `linsolve` keywords."
const IMPLICIT_SDE = Dict{String, Any}("ImplicitEM" => ImplicitEM, "SKenCarp" => SKenCarp)

"SDE methods that treat `f1` of a `SplitSDEProblem` implicitly (IMEX)."
const IMEX_SDE = Set(["SKenCarp"])

# Methods that read a second Brownian process Z (for the iterated integral I_(1,0)); StochasticDiffEq sets
# `alg_needs_extra_process` for them (lib/StochasticDiffEqHighOrder/src/alg_utils.jl,
# lib/StochasticDiffEqImplicit/src/alg_utils.jl). A replayed NoiseGrid must then carry Z as well as W.
const NEEDS_EXTRA_NOISE = Set(["SRA1", "SOSRA", "SKenCarp"])

const JACOBIANS = ("finitediff", "krylov")

function _check_jac(jac::AbstractString)
    jac in JACOBIANS || throw(ArgumentError("jac must be one of $(JACOBIANS), got $(repr(jac))"))
    return nothing
end

function _check_imex(name::AbstractString, imex::Set{String}, jac::AbstractString, jvp1)
    name in imex || throw(ArgumentError("$(name) is not an IMEX method here; IMEX methods: $(sort!(collect(imex)))"))
    # see solve_split_ode: a matrix-free W on a split function needs J(f1)⋅v supplied
    jac == "krylov" && jvp1 === nothing && throw(ArgumentError("jac = \"krylov\" on a split problem needs jvp1"))
    return nothing
end

# GMRES for the Newton/W systems; `krylov_dim > 0` sets its subspace size and restarts GMRES every `krylov_dim`
# iterations (LinearSolve's `gmres_restart`); 0 keeps LinearSolve's default.
_gmres(krylov_dim::Integer) = krylov_dim > 0 ? KrylovJL_GMRES(; gmres_restart = Int(krylov_dim)) : KrylovJL_GMRES()

"""
    ode_algorithm(name; jac = "finitediff", krylov_dim = 0)

The OrdinaryDiffEq/Sundials algorithm named `name`. Implicit methods get `autodiff = AutoFiniteDiff()`, and
`linsolve = KrylovJL_GMRES()` when `jac == "krylov"` (`CVODE_BDF`: `linear_solver = :GMRES`, with
`krylov_dim` as its `krylov_dim`).
"""
function ode_algorithm(name::AbstractString; jac::AbstractString = "finitediff", krylov_dim::Integer = 0)
    _check_jac(jac)
    haskey(EXPLICIT_ODE, name) && return EXPLICIT_ODE[name]()
    if name == "CVODE_BDF"
        jac == "krylov" && return CVODE_BDF(; linear_solver = :GMRES, krylov_dim = Int(krylov_dim))
        return CVODE_BDF(; linear_solver = :Dense)
    end
    haskey(IMPLICIT_ODE, name) || throw(
        ArgumentError(
            "unknown ODE method $(repr(name)); known: " *
                join(sort!([collect(keys(EXPLICIT_ODE)); collect(keys(IMPLICIT_ODE)); "CVODE_BDF"]), ", ")
        )
    )
    ctor = IMPLICIT_ODE[name]
    if jac == "krylov"
        name in DENSE_ONLY && throw(ArgumentError("$(name) factorises a dense Jacobian here; use jac = \"finitediff\""))
        return ctor(; autodiff = AutoFiniteDiff(), linsolve = _gmres(krylov_dim))
    end
    return ctor(; autodiff = AutoFiniteDiff())
end

"""
    sde_algorithm(name; jac = "finitediff", krylov_dim = 0, theta = nothing)

The StochasticDiffEq algorithm named `name`; drift-implicit ones get `autodiff = AutoFiniteDiff()` and, for
`jac == "krylov"`, `linsolve = KrylovJL_GMRES()`. `theta` is `ImplicitEM`'s implicitness (1: backward Euler in
the drift, 1/2: trapezoid).
"""
function sde_algorithm(
        name::AbstractString; jac::AbstractString = "finitediff", krylov_dim::Integer = 0, theta = nothing
    )
    _check_jac(jac)
    theta === nothing || name == "ImplicitEM" || throw(ArgumentError("theta applies to ImplicitEM only"))
    haskey(EXPLICIT_SDE, name) && return EXPLICIT_SDE[name]()
    haskey(IMPLICIT_SDE, name) || throw(
        ArgumentError(
            "unknown SDE method $(repr(name)); known: " *
                join(sort!([collect(keys(EXPLICIT_SDE)); collect(keys(IMPLICIT_SDE))]), ", ")
        )
    )
    kw = theta === nothing ? NamedTuple() : (; theta = Float64(theta))
    ctor = IMPLICIT_SDE[name]
    jac == "krylov" && return ctor(; autodiff = AutoFiniteDiff(), linsolve = _gmres(krylov_dim), kw...)
    return ctor(; autodiff = AutoFiniteDiff(), kw...)
end

# ---------------------------------------------------------------------------------------------------------
# Plumbing shared by the entry points
# ---------------------------------------------------------------------------------------------------------

# Callables arrive from Python as `Py` objects; wrapping them in Julia closures of fixed arity lets SciMLBase see
# an in-place function (`isinplace(f, 4)`) without consulting Python, and discards the Python return value.
_inplace(f) = (du, u, p, t) -> (f(du, u, p, t); nothing)
_inplace_jvp(::Nothing) = nothing
_inplace_jvp(jvp) = (Jv, v, u, p, t) -> (jvp(Jv, v, u, p, t); nothing)

# Arrays from Python arrive as no-copy `PyArray` views of numpy memory: copy them into native Julia arrays so the
# solver owns its state and never aliases Python buffers.
_floats(x::Nothing) = nothing
_floats(x::Real) = Float64(x)
_floats(x::AbstractArray) = Vector{Float64}(vec(x))
_tspan(tspan) = (Float64(tspan[1]), Float64(tspan[2]))

"""
Keyword arguments for `solve`, dropping the ones left as `nothing` so each solver keeps its own default.
Sundials' algorithms take no `adaptive` keyword (CVODE always adapts its step).
"""
function _solve_kwargs(
        alg; saveat, reltol, abstol, adaptive = true, dt = nothing, tstops = nothing, maxiters = nothing,
        dtmin = nothing, dtmax = nothing
    )
    kw = Dict{Symbol, Any}(:saveat => _floats(saveat), :reltol => Float64(reltol), :abstol => _floats(abstol))
    alg isa CVODE_BDF || (kw[:adaptive] = Bool(adaptive))
    dt === nothing || (kw[:dt] = Float64(dt))
    tstops === nothing || (kw[:tstops] = _floats(tstops))
    maxiters === nothing || (kw[:maxiters] = Int(maxiters))
    dtmin === nothing || (kw[:dtmin] = Float64(dtmin))
    dtmax === nothing || (kw[:dtmax] = Float64(dtmax))
    return kw
end

const STAT_FIELDS = (:nf, :nf2, :nw, :nsolve, :njacs, :nnonliniter, :nnonlinconvfail, :naccept, :nreject)

function _result(sol, n::Integer)
    u = isempty(sol.u) ? zeros(Float64, n, 0) : reduce(hcat, sol.u)
    stats = sol.stats === nothing ? Dict{String, Int}() :
        Dict{String, Int}(String(k) => Int(getfield(sol.stats, k)) for k in STAT_FIELDS)
    # ReturnCode values are Base.Enum instances, so Symbol(...) gives the bare name ("Success", "MaxIters", ...).
    return (t = Vector{Float64}(sol.t), u = Matrix{Float64}(u), retcode = String(Symbol(sol.retcode)), stats = stats)
end

"""
A `NoiseGrid` replaying W (and Z for methods that need it) at the times `t_grid`, or `nothing` for a fresh
`WienerProcess` seeded by `solve(...; seed)`. `W_grid`/`Z_grid` hold one row per grid time (`W(t_grid[1]) = 0`).
"""
function _noise(name, n, t_grid, W_grid, Z_grid)
    t_grid === nothing && return nothing
    W_grid === nothing && throw(ArgumentError("t_grid was given without W_grid"))
    ts = Vector{Float64}(vec(t_grid))
    rows(M) = [Vector{Float64}(M[k, :]) for k in axes(M, 1)]
    size(W_grid) == (length(ts), n) ||
        throw(ArgumentError("W_grid must be $(length(ts)) × $(n) (one row per grid time), got $(size(W_grid))"))
    if name in NEEDS_EXTRA_NOISE
        Z_grid === nothing &&
            throw(ArgumentError("$(name) needs a second Brownian path Z on the grid (Z_grid) besides W"))
        size(Z_grid) == size(W_grid) || throw(ArgumentError("Z_grid must be shaped like W_grid"))
        return NoiseGrid(ts, rows(W_grid), rows(Z_grid))
    end
    return NoiseGrid(ts, rows(W_grid))
end

# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------

"""
    solve_ode(f, u0, tspan, alg_name; jvp = nothing, jac = "finitediff", saveat, reltol, abstol, kwargs...)

Solve `du/dt = f(u, t)` (in place, `f(du, u, p, t)`) from `u0` over `tspan` with the method `alg_name`.
`jvp(Jv, v, u, p, t)` is handed to `ODEFunction(...; jvp)` for matrix-free Newton–Krylov (`jac = "krylov"`).
Other keywords: `adaptive`, `dt`, `tstops`, `maxiters`, `dtmin`, `dtmax` (`nothing` keeps the solver default).
"""
function solve_ode(
        f, u0, tspan, alg_name::AbstractString; jvp = nothing, jac::AbstractString = "finitediff",
        krylov_dim::Integer = 0, saveat, reltol, abstol, kwargs...
    )
    alg = ode_algorithm(alg_name; jac, krylov_dim)
    u = Vector{Float64}(vec(u0))
    fn = ODEFunction{true, FullSpecialize}(_inplace(f); jvp = _inplace_jvp(jvp))
    prob = ODEProblem(fn, u, _tspan(tspan), nothing)
    sol = solve(prob, alg; _solve_kwargs(alg; saveat, reltol, abstol, kwargs...)...)
    return _result(sol, length(u))
end

"""
    solve_split_ode(f1, f2, u0, tspan, alg_name; jvp1 = nothing, jac = "finitediff", kwargs...)

Solve `du/dt = f1(u, t) + f2(u, t)` as a `SplitODEProblem` with an IMEX method (`KenCarp4`): `f1` (stiff) is
treated implicitly, `f2` explicitly. `jvp1` is J(f1)⋅v. The `SplitFunction` takes its `jvp` from `f1`
(SciMLBase: derivatives of a split function are those of `f1`), which is what the implicit stages need;
OrdinaryDiffEq's matrix-free W operator is built on the whole split function, so `jac = "krylov"` requires
`jvp1` (finite differences there would differentiate `f1 + f2`).
"""
function solve_split_ode(
        f1, f2, u0, tspan, alg_name::AbstractString; jvp1 = nothing, jac::AbstractString = "finitediff",
        krylov_dim::Integer = 0, saveat, reltol, abstol, kwargs...
    )
    _check_imex(alg_name, IMEX_ODE, jac, jvp1)
    alg = ode_algorithm(alg_name; jac, krylov_dim)
    u = Vector{Float64}(vec(u0))
    fn1 = ODEFunction{true, FullSpecialize}(_inplace(f1); jvp = _inplace_jvp(jvp1))
    fn2 = ODEFunction{true, FullSpecialize}(_inplace(f2))
    prob = SplitODEProblem(SplitFunction{true, FullSpecialize}(fn1, fn2), u, _tspan(tspan), nothing)
    sol = solve(prob, alg; _solve_kwargs(alg; saveat, reltol, abstol, kwargs...)...)
    return _result(sol, length(u))
end

"""
    solve_sde(f, g, u0, tspan, alg_name, t_grid, W_grid; Z_grid = nothing, seed = 0, jvp = nothing,
              jac = "finitediff", saveat, reltol, abstol, kwargs...)

Solve the Itô SDE `du = f(u, t) dt + g(u, t) .* dW` with diagonal (or additive) noise. With `t_grid`/`W_grid`
the Brownian path is replayed from that grid (`NoiseGrid`, linear interpolation between grid points; methods in
`NEEDS_EXTRA_NOISE` also need `Z_grid`), so every backend integrates the same path; with `t_grid = nothing` a
fresh `WienerProcess` is drawn from `seed`.
"""
function solve_sde(
        f, g, u0, tspan, alg_name::AbstractString, t_grid, W_grid; Z_grid = nothing, seed::Integer = 0,
        jvp = nothing, jac::AbstractString = "finitediff", krylov_dim::Integer = 0, theta = nothing,
        saveat, reltol, abstol, kwargs...
    )
    alg = sde_algorithm(alg_name; jac, krylov_dim, theta)
    u = Vector{Float64}(vec(u0))
    fn = SDEFunction{true, FullSpecialize}(_inplace(f), _inplace(g); jvp = _inplace_jvp(jvp))
    prob = SDEProblem(fn, u, _tspan(tspan), nothing; noise = _noise(alg_name, length(u), t_grid, W_grid, Z_grid))
    sol = solve(prob, alg; seed = UInt64(seed), _solve_kwargs(alg; saveat, reltol, abstol, kwargs...)...)
    return _result(sol, length(u))
end

"""
    solve_split_sde(f1, f2, g, u0, tspan, alg_name, t_grid, W_grid; jvp1 = nothing, kwargs...)

`du = [f1(u, t) + f2(u, t)] dt + g(u, t) .* dW` as a `SplitSDEProblem` with an IMEX method (`SKenCarp`): `f1`
implicit, `f2` explicit. Noise and keywords as in [`solve_sde`](@ref).

Unverified here: StochasticDiffEq v6 declared `issplit(::SKenCarp) = true`, which makes the Newton stages see
`f1` alone (`nlsolve_f`); in the v7 monorepo read (OrdinaryDiffEq.jl b211787f) no such method is defined while
SKenCarp's step still adds `f2` explicitly. `test/runtests.jl` ("split OU") splits a linear drift evenly between
`f1` and `f2`, so it fails if `f2` is counted twice.
"""
function solve_split_sde(
        f1, f2, g, u0, tspan, alg_name::AbstractString, t_grid, W_grid; Z_grid = nothing, seed::Integer = 0,
        jvp1 = nothing, jac::AbstractString = "finitediff", krylov_dim::Integer = 0, saveat, reltol, abstol,
        kwargs...
    )
    _check_imex(alg_name, IMEX_SDE, jac, jvp1)
    alg = sde_algorithm(alg_name; jac, krylov_dim)
    u = Vector{Float64}(vec(u0))
    g! = _inplace(g)
    fjvp = _inplace_jvp(jvp1)
    fn1 = SDEFunction{true, FullSpecialize}(_inplace(f1), g!; jvp = fjvp)
    fn2 = SDEFunction{true, FullSpecialize}(_inplace(f2), g!)
    # Passing `_func_cache` (scratch for f1 + f2) keeps SplitSDEProblem from rebuilding the function, which would
    # drop `jvp`; the split function's `jvp` is J(f1)⋅v, the Jacobian of the implicit part.
    fn = SplitSDEFunction{true, FullSpecialize}(fn1, fn2, g!; jvp = fjvp, _func_cache = similar(u))
    noise = _noise(alg_name, length(u), t_grid, W_grid, Z_grid)
    prob = SplitSDEProblem(fn, u, _tspan(tspan), nothing; noise = noise)
    sol = solve(prob, alg; seed = UInt64(seed), _solve_kwargs(alg; saveat, reltol, abstol, kwargs...)...)
    return _result(sol, length(u))
end

end # module PySensSolvers
