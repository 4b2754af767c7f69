# The C tour (examples/c/tour.c) in Julia, call for call, printing the same lines.
#
#   julia --project=bindings/julia -e 'using Pkg; Pkg.instantiate()'   # DLPack.jl, once
#   MODEL_CONTEXT_LIB=$PREFIX/lib/libmodel_context.so julia --project=bindings/julia examples/julia/tour.jl MODEL_DIR
#
# tests/python/test_julia_abi.py runs this sequence through Python ctypes with the ccall
# signatures of bindings/julia/src/ModelContext.jl (Julia is not installed where the tests run).
using ModelContext
using Printf

const MC = ModelContext

# The sum of the elements in C (row-major) order, in Float64.
function csum(t)
    s = 0.0
    for x in revview(t)
        s += Float64(x)
    end
    return s
end

dims(v) = "[" * join(v, ",") * "]"

# Printable ASCII as is, every other byte as \xNN.
quoted(bytes) = "\"" * join(0x20 <= b < 0x7f && b != UInt8('"') && b != UInt8('\\') ? string(Char(b)) :
                            @sprintf("\\x%02x", b) for b in bytes) * "\""

describe(kind, name, layer, t) = @printf("%s %s layer=%s shape=%s strides=%s dtype=float32 sum=%.6f\n",
    kind, name, layer == MC.MC_LAYER_NONE ? "-" : string(layer), dims(t.shape), dims(t.strides), csum(t))

function main(model)
    ctx = Context(model; device = "cpu")
    println("model_context ", version())
    println("config ", config_json(ctx))
    layers, d_model = dim_size(ctx, "layers"), dim_size(ctx, "residual_stream_channels")
    heads, vocab = dim_size(ctx, "attn_heads"), dim_size(ctx, "vocab_size")
    println("dims layers=$layers d_model=$d_model heads=$heads vocab=$vocab")

    # Weights: t.array follows DLPack.jl (row-major arrives reversed); t.shape is the C shape.
    describe("weight", "attn.to_query", 0, weight(ctx, "attn.to_query", 0))
    describe("weight", "embedding", MC.MC_LAYER_NONE, weight(ctx, "embedding"))

    prompt = "Hello, world"
    ids = encode(ctx, prompt)
    println("tokens ", quoted(codeunits(prompt)), " -> ", dims(Int.(ids)))
    println("decode -> ", quoted(decode(ctx, ids)))

    out = forward(ctx, ids; keep = [("mlp.post_act", 1), ("resid.post_ln_f", MC.MC_LAYER_NONE)])
    logits = activation(out, "logits", MC.MC_LAYER_NONE)
    mlp = activation(out, "mlp.post_act", 1)
    resid = activation(out, "resid.post_ln_f", MC.MC_LAYER_NONE)
    close(out)  # the arrays taken from it stay valid
    describe("forward", "logits", MC.MC_LAYER_NONE, logits)
    describe("activation", "mlp.post_act", 1, mlp)
    describe("activation", "resid.post_ln_f", MC.MC_LAYER_NONE, resid)

    # The last position's logits are resid.post_ln_f @ unembedding, in C index order.
    unemb = weight(ctx, "unembedding")
    L, H, W = cview(logits), cview(resid), cview(unemb)
    last = length(ids)
    best, max_diff = 1, 0.0
    for v in 1:vocab
        dot = 0.0
        for d in 1:d_model
            dot += Float64(H[1, last, d]) * Float64(W[d, v])
        end
        l = Float64(L[1, last, v])
        max_diff = max(max_diff, abs(l - dot))
        l > L[1, last, best] && (best = v)
    end
    println("check logits == resid.post_ln_f @ unembedding: ", max_diff < 1e-4 ? "ok" : "FAILED")
    println("next token ", best - 1, " ", quoted(decode_token(ctx, best - 1)))

    # Errors are MCError exceptions carrying the status and the library's message.
    try
        weight(ctx, "attn.to_query", 99)
    catch e
        e isa MCError || rethrow()
        println("error mc_get_weight(attn.to_query, layer 99): ", e.name, ": ", e.message)
    end
    try
        Context("/no/such/model")
    catch e
        e isa MCError || rethrow()
        println("error mc_open(/no/such/model): ", e.name, ": ", e.message)
    end
    close(ctx)
    return max_diff < 1e-4 ? 0 : 1
end

exit(main(ARGS[1]))
