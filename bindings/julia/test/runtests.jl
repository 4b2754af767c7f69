# The package's tests, where Julia exists (it cannot be installed on the machines this project's
# CI runs on, so there tests/python/test_julia_abi.py checks this file's syntax and the
# binding's ABI statically):
#
#   make install PREFIX=$PREFIX
#   scripts/data.sh demo
#   MODEL_CONTEXT_LIB=$PREFIX/lib/libmodel_context.so MC_DEMO_MODEL=$PWD/data/demo \
#       julia --project=bindings/julia -e 'using Pkg; Pkg.test()'
using ModelContext
using Test

const MC = ModelContext
const DEMO = get(ENV, "MC_DEMO_MODEL", joinpath(@__DIR__, "..", "..", "..", "data", "demo"))

@testset "ModelContext" begin
    @test occursin(r"^\d+\.\d+\.\d+$", version())
    ctx = Context(DEMO; device = "cpu")

    @testset "config and dimensions" begin
        @test occursin("\"d_model\"", config_json(ctx))
        @test dim_size(ctx, "layers") >= 1
        @test dim_size(ctx, "singleton") == 1
    end

    @testset "weights in C order" begin
        d_model, heads = dim_size(ctx, "residual_stream_channels"), dim_size(ctx, "attn_heads")
        q = weight(ctx, "attn.to_query", 0)
        @test q.shape[1:2] == [heads, d_model]
        @test size(cview(q)) == Tuple(q.shape)
        @test size(revview(q)) == Tuple(reverse(q.shape))
        e = weight(ctx, "embedding")
        @test size(cview(e)) == (dim_size(ctx, "vocab_size"), d_model)
        # Row-major tensors arrive with their dimensions reversed (DLPack.jl's rule).
        @test e.reversed && cview(e)[2, 3] == e.array[3, 2]
    end

    @testset "tokens" begin
        ids = encode(ctx, "Hello, world")
        @test ids == UInt32[15496, 11, 995]
        @test decode(ctx, ids) == Vector{UInt8}(codeunits("Hello, world"))
        @test decode_token(ctx, 995) == Vector{UInt8}(codeunits(" world"))
    end

    @testset "forward: logits are resid.post_ln_f @ unembedding" begin
        ids = encode(ctx, "Hello, world")
        out = forward(ctx, ids; keep = [("resid.post_ln_f", MC_LAYER_NONE)])
        logits = cview(activation(out, "logits"))
        resid = cview(activation(out, "resid.post_ln_f"))
        close(out)  # the arrays stay valid
        W = cview(weight(ctx, "unembedding"))
        last = length(ids)
        expected = [sum(Float64(resid[1, last, d]) * Float64(W[d, v]) for d in axes(W, 1))
                    for v in axes(W, 2)]
        @test maximum(abs.(Float64.(logits[1, last, :]) .- expected)) < 1e-4
    end

    @testset "errors carry the status and the message" begin
        err = try
            weight(ctx, "attn.to_query", 99)
            nothing
        catch e
            e
        end
        @test err isa MCError && err.name == "MC_ERR_INVALID_ARGUMENT" && occursin("99", err.message)
        @test_throws MCError Context("/no/such/model")
    end

    @testset "decoding states and batched sampling" begin
        st = State(ctx, 2)
        out = append_tokens!(st, [0 => encode(ctx, "Hello"), 1 => encode(ctx, "Hello, world")])
        close(out)
        @test sequence_length(st, 0) == 1 && sequence_length(st, 1) == 3
        close(st)
    end

    close(ctx)
    GC.gc()  # every array's deleter runs once, from the collector
end
