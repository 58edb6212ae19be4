# Closed-form checks of the PySensSolvers entry points with Julia right-hand sides:
#   julia --project=. -e 'using Pkg; Pkg.test()'        (from pysens/julia/PySensSolvers)
# They need Julia and the registered SciML packages; pysens's own CI has neither (see the README).
using LinearAlgebra: norm  # loading LinearAlgebra also gives exp(::Matrix)
using PySensSolvers
using Random: Xoshiro, randn
using Test

const TOL = (reltol = 1.0e-9, abstol = 1.0e-11)
const ADAPTIVE_TOL = (reltol = 1.0e-4, abstol = 1.0e-6)  # adaptive SDE methods on a replayed grid

decay!(du, u, p, t) = (du .= -u; nothing)
decay_jvp!(Jv, v, u, p, t) = (Jv .= -v; nothing)

# Stiff linear system u' = A u, eigenvalues -1000 and -1: the exact solution is exp(A t) u0.
const A = [-1000.0 999.0; 0.0 -1.0]
stiff!(du, u, p, t) = (du .= A * u; nothing)
stiff_jvp!(Jv, v, u, p, t) = (Jv .= A * v; nothing)

@testset "PySensSolvers" begin
    @testset "algorithm table" begin
        ode_names = [collect(keys(PySensSolvers.EXPLICIT_ODE)); collect(keys(PySensSolvers.IMPLICIT_ODE)); "CVODE_BDF"]
        for name in ode_names
            @test ode_algorithm(name) !== nothing
        end
        for name in [collect(keys(PySensSolvers.IMPLICIT_ODE)); "CVODE_BDF"]
            name in PySensSolvers.DENSE_ONLY && continue
            @test ode_algorithm(name; jac = "krylov") !== nothing
        end
        for name in [collect(keys(PySensSolvers.EXPLICIT_SDE)); collect(keys(PySensSolvers.IMPLICIT_SDE))]
            @test sde_algorithm(name) !== nothing
        end
        @test sde_algorithm("ImplicitEM"; theta = 0.5) !== nothing
        @test_throws ArgumentError sde_algorithm("EM"; theta = 0.5)
        @test_throws ArgumentError ode_algorithm("NoSuchMethod")
        @test_throws ArgumentError ode_algorithm("Tsit5"; jac = "lu")
        @test_throws ArgumentError ode_algorithm("RadauIIA5"; jac = "krylov")
    end

    @testset "exponential decay, $name ($jac)" for (name, jac) in [
            ("Tsit5", "finitediff"), ("DP8", "finitediff"), ("Vern9", "finitediff"), ("Rodas5P", "finitediff"),
            ("Rodas5P", "krylov"), ("KenCarp4", "krylov"), ("FBDF", "finitediff"), ("RadauIIA5", "finitediff"),
            ("CVODE_BDF", "finitediff"),
        ]
        u0 = [1.0, 2.0]
        saveat = [0.0, 0.5, 1.0]
        res = solve_ode(decay!, u0, (0.0, 1.0), name; jvp = decay_jvp!, jac, saveat, TOL...)
        @test res.retcode == "Success"
        @test res.t ≈ saveat
        @test size(res.u) == (2, 3)
        @test res.u ≈ u0 * exp.(-saveat)' rtol = 1.0e-6
        @test res.stats["nf"] > 0
    end

    @testset "backward in time" begin
        res = solve_ode(decay!, [1.0], (1.0, 0.0), "Tsit5"; saveat = [1.0, 0.0], TOL...)
        @test res.retcode == "Success"
        @test res.u[1, end] ≈ exp(1.0) rtol = 1.0e-7
    end

    @testset "fixed step: Euler on the tstops grid" begin
        h = 0.1
        res = solve_ode(
            decay!, [1.0], (0.0, 1.0), "Euler"; saveat = [0.0, 1.0], adaptive = false, dt = h,
            tstops = collect(0.0:h:1.0), TOL...
        )
        @test res.u[1, end] ≈ (1 - h)^10 rtol = 1.0e-12
    end

    @testset "stiff linear system, $name ($jac)" for (name, jac) in [
            ("Rodas5P", "finitediff"), ("Rodas4P", "krylov"), ("KenCarp4", "finitediff"), ("TRBDF2", "krylov"),
            ("QNDF", "krylov"), ("RadauIIA5", "finitediff"), ("CVODE_BDF", "krylov"),
        ]
        u0 = [1.0, 1.0]
        res = solve_ode(
            stiff!, u0, (0.0, 2.0), name; jvp = stiff_jvp!, jac, saveat = [0.0, 2.0], reltol = 1.0e-8, abstol = 1.0e-10
        )
        @test res.retcode == "Success"
        @test res.u[:, end] ≈ exp(2.0 * A) * u0 rtol = 1.0e-5
    end

    @testset "retcode MaxIters" begin
        res = solve_ode(decay!, [1.0], (0.0, 1.0), "Tsit5"; saveat = [0.0, 1.0], maxiters = 2, TOL...)
        @test res.retcode == "MaxIters"
    end

    @testset "heat equation modes, KenCarp4 IMEX ($jac)" for jac in ("finitediff", "krylov")
        # u_t = u_xx - c u on (0, π), Dirichlet, N interior points; f1 = Laplacian (stiff, implicit),
        # f2 = -c u (explicit). A sine mode sin(kx) is an eigenvector of the discrete Laplacian with eigenvalue
        # λ_k = -(4/h²) sin²(kh/2), so the semi-discrete solution is exp((λ_k - c) t) sin(kx) exactly.
        N, c, k = 63, 0.5, 3
        h = π / (N + 1)
        x = h .* (1:N)
        lap!(du, u) = for i in 1:N
            du[i] = ((i > 1 ? u[i - 1] : 0.0) - 2u[i] + (i < N ? u[i + 1] : 0.0)) / h^2
        end
        f1!(du, u, p, t) = (lap!(du, u); nothing)
        f2!(du, u, p, t) = (du .= -c .* u; nothing)
        jvp1!(Jv, v, u, p, t) = (lap!(Jv, v); nothing)
        u0 = sin.(k .* x)
        T = 0.5
        res = solve_split_ode(
            f1!, f2!, u0, (0.0, T), "KenCarp4"; jvp1 = jvp1!, jac, saveat = [0.0, T], reltol = 1.0e-8, abstol = 1.0e-10
        )
        λ = -(4 / h^2) * sin(k * h / 2)^2
        @test res.retcode == "Success"
        @test norm(res.u[:, end] - exp((λ - c) * T) .* u0) / norm(u0) < 1.0e-6
        @test_throws ArgumentError solve_split_ode(f1!, f2!, u0, (0.0, T), "Rodas5P"; saveat = [0.0, T], TOL...)
    end

    # OU: dX = -θ X dt + σ dW on one replayed path per component. EM on the grid's own points reproduces the
    # hand-rolled recursion with the same increments to round-off, and the sample mean matches e^{-θT} X0.
    θ, σ, T, n, M = 1.5, 0.7, 1.0, 200, 4000
    rng = Xoshiro(20260822)
    ts = collect(range(0.0, T; length = n + 1))
    dW = sqrt(T / n) .* randn(rng, n, M)
    W = vcat(zeros(1, M), cumsum(dW; dims = 1))
    ou_f!(du, u, p, t) = (du .= -θ .* u; nothing)
    ou_g!(du, u, p, t) = (du .= σ; nothing)
    # The exact solution on this path, X(T) = e^{-θT} + σ ∫ e^{-θ(T-s)} dW(s), by a left-point sum on the grid.
    ou_exact = exp(-θ * T) .+ σ .* vec(sum(exp.(-θ .* (T .- ts[1:(end - 1)])) .* dW; dims = 1))

    @testset "OU on a NoiseGrid, EM replay" begin
        res = solve_sde(
            ou_f!, ou_g!, ones(M), (0.0, T), "EM", ts, W; saveat = [0.0, T], adaptive = false, dt = T / n, tstops = ts,
            TOL...,
        )
        @test res.retcode == "Success"
        x = ones(M)
        for i in 1:n
            x = x .+ (-θ .* x) .* (T / n) .+ σ .* dW[i, :]
        end
        @test res.u[:, end] ≈ x rtol = 1.0e-10
        @test abs(sum(res.u[:, end]) / M - exp(-θ * T)) < 4 * σ / sqrt(2θ) / sqrt(M) + 2 * θ^2 * T / n
    end

    @testset "OU on a NoiseGrid, $name" for name in ("SOSRA", "SKenCarp")
        Z = vcat(zeros(1, M), cumsum(sqrt(T / n) .* randn(rng, n, M); dims = 1))
        res = solve_sde(ou_f!, ou_g!, ones(M), (0.0, T), name, ts, W; Z_grid = Z, saveat = [0.0, T], ADAPTIVE_TOL...)
        @test res.retcode == "Success"
        @test norm(res.u[:, end] - ou_exact) / sqrt(M) < 0.05
        @test_throws ArgumentError solve_sde(ou_f!, ou_g!, ones(M), (0.0, T), name, ts, W; saveat = [0.0, T], TOL...)
    end

    @testset "split OU, SKenCarp IMEX" begin
        # The drift -θu split evenly between f1 (implicit) and f2 (explicit): counting either part twice changes
        # the decay rate and fails the comparison with the exact path solution.
        f1!(du, u, p, t) = (du .= -(θ / 2) .* u; nothing)
        f2!(du, u, p, t) = (du .= -(θ / 2) .* u; nothing)
        Z = vcat(zeros(1, M), cumsum(sqrt(T / n) .* randn(rng, n, M); dims = 1))
        res = solve_split_sde(
            f1!, f2!, ou_g!, ones(M), (0.0, T), "SKenCarp", ts, W; Z_grid = Z, saveat = [0.0, T], ADAPTIVE_TOL...
        )
        @test res.retcode == "Success"
        @test norm(res.u[:, end] - ou_exact) / sqrt(M) < 0.05
        @test abs(sum(res.u[:, end]) / M - exp(-θ * T)) < 4 * σ / sqrt(2θ) / sqrt(M) + 0.01
    end

    @testset "fresh Wiener path from a seed" begin
        fresh(seed) = solve_sde(
            ou_f!, ou_g!, ones(8), (0.0, T), "SOSRA", nothing, nothing; seed, saveat = [0.0, T], ADAPTIVE_TOL...
        )
        a, b = fresh(7), fresh(7)
        @test a.retcode == "Success"
        @test a.u == b.u
    end
end
