# examples/c/attribution.c in Julia: attribute a logit difference to MLP neurons by
# activation x gradient, print the ten largest, and check the first against an edit that
# scales it by (1 + 1e-3). Exits non-zero if the first-order check fails.
#
#   MODEL_CONTEXT_LIB=$PREFIX/lib/libmodel_context.so julia --project=bindings/julia examples/julia/attribution.jl MODEL_DIR
#
# Julia is not installed where this project's tests run: tests/python/test_julia_abi.py parses
# this file and checks the binding's ccalls and structs against the header.
using ModelContext
using Printf

function main(model)
    ctx = Context(model; device = "cpu")
    ids = UInt32[464, 3139, 286, 4881, 318, 262]  # "The capital of France is the"
    obj = Objective(MC_OBJECTIVE_LOGIT_DIFF; tokens = [6342], other_tokens = [3576])  # " Paris" - " London"
    n_layers = dim_size(ctx, "layers")
    out = forward(ctx, ids; keep = [("mlp.post_act", MC_LAYER_ALL)], logits = MC_LOGITS_NONE,
                  objective = obj, grads = [("mlp.post_act", MC_LAYER_ALL)])
    before = Float64(collect(cview(objective_value(out)))[1])
    scores = Tuple{Float64, Int, Int}[]
    for l in 0:n_layers-1
        act = collect(cview(activation(out, "mlp.post_act", l)))   # [1, T, d_ff] as in C
        grad = collect(cview(gradient(out, "mlp.post_act", l)))
        per_neuron = vec(sum(Float64.(act) .* Float64.(grad); dims = (1, 2)))
        append!(scores, [(s, l, n - 1) for (n, s) in enumerate(per_neuron)])
    end
    close(out)
    sort!(scores; by = s -> -abs(s[1]))
    @printf("logit(\" Paris\") - logit(\" London\") = %.6f\n", before)
    for (s, l, n) in scores[1:10]
        @printf("neuron layer=%d index=%d act x grad = %+.6f\n", l, n, s)
    end
    s, l, n = scores[1]
    scaled = forward(ctx, ids; logits = MC_LOGITS_NONE, objective = obj,
                     edits = [Edit("mlp.post_act", l; op = MC_EDIT_SCALE, value = 1 + 1e-3,
                                   selection = [nothing, nothing, [n]])])
    after = Float64(collect(cview(objective_value(scaled)))[1])
    close(scaled)
    close(ctx)
    predicted, moved = 1e-3 * s, after - before
    ok = abs(moved - predicted) <= 0.05 * abs(predicted) + 1e-6
    @printf("first-order check: moved %.3e, predicted %.3e: %s\n", moved, predicted, ok ? "ok" : "FAILED")
    ok || error("the first-order check failed")
end

main(ARGS[1])
