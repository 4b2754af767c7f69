# examples/c/experiments.c in Julia: zero-ablate a neuron and a head, patch the clean run's
# residual stream into a corrupted run (which must reproduce the clean logits exactly), and add
# a steering vector. Exits non-zero if an edit changes nothing or the patch misses.
#
#   MODEL_CONTEXT_LIB=$PREFIX/lib/libmodel_context.so julia --project=bindings/julia examples/julia/experiments.jl MODEL_DIR
#
# Julia is not installed where this project's tests run: tests/python/test_julia_abi.py parses
# this file and checks the binding's ccalls and structs against the header.
using ModelContext
using Printf

# The last position's logits (C order) of a forward pass.
function last_logits(ctx, ids; kwargs...)
    out = forward(ctx, ids; logits = MC_LOGITS_LAST, kwargs...)
    t = activation(out, "logits")
    v = Float64.(collect(revview(t)))
    close(out)
    return vec(v)
end

function main(model)
    ctx = Context(model; device = "cpu")
    clean, corrupt = UInt32[464, 2068, 7586, 21831], UInt32[464, 3105, 7586, 21831]
    base = last_logits(ctx, corrupt)
    moved(v) = maximum(abs.(v .- base))

    ablated = last_logits(ctx, corrupt; edits = [Edit("mlp.post_act", 1; selection = [nothing, nothing, [7]])])
    @printf("ablate mlp.post_act layer=1 neuron=7: logits moved by %.6f\n", moved(ablated))
    head = last_logits(ctx, corrupt; edits = [Edit("attn.v_out", 0; selection = [nothing, nothing, [2]])])
    @printf("ablate attn.v_out layer=0 head=2: logits moved by %.6f\n", moved(head))

    # The clean run's resid.post_mlp of layer 0, as an operand: the C shape reversed.
    out = forward(ctx, clean; keep = [("resid.post_mlp", 0)], logits = MC_LOGITS_LAST)
    resid = Array{Float32}(collect(revview(activation(out, "resid.post_mlp", 0))))
    clean_logits = vec(Float64.(collect(revview(activation(out, "logits")))))
    close(out)
    patched = last_logits(ctx, corrupt; edits = [Edit("resid.post_mlp", 0; op = MC_EDIT_REPLACE, operand = resid)])
    vs_clean = maximum(abs.(patched .- clean_logits))
    @printf("patch resid.post_mlp layer=0 clean->corrupt: logits moved by %.6f, vs clean %.6f\n", moved(patched), vs_clean)

    steer = zeros(Float32, dim_size(ctx, "residual_stream_channels"))
    steer[1] = 4
    steered = last_logits(ctx, corrupt; edits = [Edit("resid.post_mlp", 0; op = MC_EDIT_ADD, operand = steer)])
    @printf("steer resid.post_mlp layer=0 by 4*e0: logits moved by %.6f\n", moved(steered))
    close(ctx)
    ok = vs_clean == 0 && all(moved(v) > 0 for v in (ablated, head, patched, steered))
    ok || error("an edit had no effect or the patch did not reproduce the clean run")
end

main(ARGS[1])
