"""
    ModelContext

Julia binding of model_context through `ccall`: open a GPT-2-family checkpoint, read weights
and forward-pass activations as zero-copy arrays (DLPack.jl), encode and decode tokens.

The library is resolved when the module is initialised (`__init__`, so a precompiled package
picks up the environment of the session that loads it): `ENV["MODEL_CONTEXT_LIB"]` when set
(a path, e.g. `\$PREFIX/lib/libmodel_context.so`), else `libmodel_context` found by the
dynamic loader (`LD_LIBRARY_PATH`, or an installed prefix known to `ldconfig`). `__init__`
opens it, so a missing library is an error at `using ModelContext`, naming the path tried.

Layout rule (DLPack.jl's): a tensor whose strides are column-major arrives with its
dimensions as they are; every other tensor, row-major ones included, arrives with its
dimensions reversed, so `t.array[k, j, i]` is the C element `[i, j, k]`. A `Tensor` carries
the C `shape` and `strides`, `reversed`, and `cview(t)`, which indexes in the C order of
`t.shape` (1-based), without copying.

Ownership: every array keeps the library's tensor alive, and Julia's garbage collector runs
its DLPack deleter exactly once. Contexts and forward outputs are freed by `close` or by
their finalizers. Tensors stay valid after the context or output is closed.

Threads: a `Context` may be used from several tasks and threads at once; `close` must not
run concurrently with other calls on it. Errors are `MCError`s; the message is read right
after the failing call, with no task switch in between, on the same thread.
"""
module ModelContext

using DLPack

export Context, MCError, Tensor, ForwardOutput, config_json, dim_size, weight, encode, decode,
    decode_token, forward, activation, cview, revview, version, Edit, MC_EDIT_SET, MC_EDIT_SCALE,
    MC_EDIT_ADD, MC_EDIT_REPLACE, MC_LOGITS_ALL, MC_LOGITS_LAST, MC_LOGITS_NONE, Objective,
    objective_value, gradient, MC_OBJECTIVE_LOGIT, MC_OBJECTIVE_LOGIT_DIFF, MC_OBJECTIVE_LOG_PROB,
    MC_OBJECTIVE_DIRECTION, MC_LAYER_ALL, MC_LAYER_NONE, State, append_tokens!, copy_sequence!,
    remove_sequence!, truncate_sequence!, sequence_length, sample_batch, MC_STOP_END_OF_TEXT,
    MC_STOP_MAX_TOKENS, MC_STOP_WINDOW

using Libdl

# The library every `ccall` names: set by `__init__` before any call (Julia 1.6 and later read
# a non-constant library name at the call's first execution).
LIB = "libmodel_context"

function __init__()
    global LIB = get(ENV, "MODEL_CONTEXT_LIB", "libmodel_context")
    Libdl.dlopen(LIB)  # fails here, naming the library, rather than at the first call
    return nothing
end

# Constants of include/model_context.h used here (the rest are found by name, see below).
const MC_LAYER_NONE = Int32(-1)
const MC_LAYER_ALL = Int32(-2)
const MC_DIM_NONE = Int32(-1)
const MC_TOKENS_UINT32 = Int32(1)
const MC_EDIT_SET = Int32(0)
const MC_EDIT_SCALE = Int32(1)
const MC_EDIT_ADD = Int32(2)
const MC_EDIT_REPLACE = Int32(3)
const MC_LOGITS_ALL = Int32(0)
const MC_LOGITS_LAST = Int32(1)
const MC_LOGITS_NONE = Int32(2)
const MC_OBJECTIVE_LOGIT = Int32(0)
const MC_OBJECTIVE_LOGIT_DIFF = Int32(1)
const MC_OBJECTIVE_LOG_PROB = Int32(2)
const MC_OBJECTIVE_DIRECTION = Int32(3)
const MC_STOP_END_OF_TEXT = Int32(0)
const MC_STOP_MAX_TOKENS = Int32(1)
const MC_STOP_WINDOW = Int32(2)

"""A failed call: the C function, its status (one per error class) and the library's message."""
struct MCError <: Exception
    op::String
    status::Int32
    name::String
    message::String
end

Base.showerror(io::IO, e::MCError) = print(io, e.op, ": ", e.name, ": ", e.message)

function check(op::String, status::Int32)
    status == 0 && return nothing
    message = unsafe_string(ccall((:mc_last_error, LIB), Cstring, ()))
    name = unsafe_string(ccall((:mc_status_name, LIB), Cstring, (Int32,), status))
    throw(MCError(op, status, name, message))
end

"""The library version, "MAJOR.MINOR.PATCH"."""
version() = unsafe_string(ccall((:mc_version, LIB), Cstring, ()))

# Names to the C constants (the seed's names, e.g. "attn.to_query", "residual_stream_channels").
function lookup(fn::Symbol, name::AbstractString)
    out = Ref{Int32}(0)
    status = if fn === :weight
        ccall((:mc_weight_location_from_name, LIB), Int32, (Cstring, Ref{Int32}), name, out)
    elseif fn === :dimension
        ccall((:mc_dimension_from_name, LIB), Int32, (Cstring, Ref{Int32}), name, out)
    else
        ccall((:mc_activation_from_name, LIB), Int32, (Cstring, Ref{Int32}), name, out)
    end
    check("mc_$(fn === :weight ? "weight_location" : fn)_from_name", status)
    return out[]
end
weight_location(name) = lookup(:weight, name)
dimension(name) = lookup(:dimension, name)
activation(name) = lookup(:activation, name)

"""An open checkpoint (`mc_open`); free it with `close` (or leave it to the finalizer)."""
mutable struct Context
    ptr::Ptr{Cvoid}
    function Context(model::AbstractString; device::Union{Nothing, AbstractString} = "cpu")
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check("mc_open", ccall((:mc_open, LIB), Int32, (Cstring, Ptr{UInt8}, Ref{Ptr{Cvoid}}),
            model, device === nothing ? C_NULL : device, out))
        return finalizer(close, new(out[]))
    end
end

function Base.close(ctx::Context)
    if ctx.ptr != C_NULL
        ccall((:mc_free, LIB), Cvoid, (Ptr{Cvoid},), ctx.ptr)
        ctx.ptr = C_NULL
    end
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, ctx::Context)
    ctx.ptr == C_NULL && throw(ArgumentError("the context is closed"))
    return ctx.ptr
end

"""The checkpoint's config.json as a JSON string (`mc_config_json`)."""
function config_json(ctx::Context)
    out = Ref{Ptr{UInt8}}(C_NULL)
    check("mc_config_json", ccall((:mc_config_json, LIB), Int32, (Ptr{Cvoid}, Ref{Ptr{UInt8}}), ctx, out))
    s = unsafe_string(out[])
    ccall((:mc_string_free, LIB), Cvoid, (Ptr{UInt8},), out[])
    return s
end

"""The size of a model dimension (`mc_dim_size`); `dim` is a name or a constant."""
function dim_size(ctx::Context, dim)
    d = dim isa AbstractString ? dimension(dim) : Int32(dim)
    out = Ref{Int64}(0)
    check("mc_dim_size", ccall((:mc_dim_size, LIB), Int32, (Ptr{Cvoid}, Int32, Ref{Int64}), ctx, d, out))
    return out[]
end

"""
A tensor from the library: `array` as DLPack.jl wraps it (see the layout rule in the module
docs), the C `shape` and `strides` (in elements), and whether `array`'s dimensions are reversed.
"""
struct Tensor{A <: AbstractArray}
    array::A
    shape::Vector{Int64}
    strides::Vector{Int64}
    reversed::Bool
end

"""`t` indexed in the C order of `t.shape`: `cview(t)[i, j, k]` is the C element `[i-1, j-1, k-1]`."""
cview(t::Tensor) = t.reversed ? PermutedDimsArray(t.array, ndims(t.array):-1:1) : t.array

"""`t` with reversed dimensions: iterating it visits the elements in C (row-major) order."""
revview(t::Tensor) = t.reversed ? t.array : PermutedDimsArray(t.array, ndims(t.array):-1:1)

# The versioned struct (DLPack >= 1.0), which DLPack.jl does not read: its DLTensor is the same.
struct DLManagedTensorVersioned
    version::NTuple{2, UInt32}
    manager_ctx::Ptr{Cvoid}
    deleter::Ptr{Cvoid}
    flags::UInt64
    dl_tensor::DLPack.DLTensor
end

# An array wrapped here (a strided layout DLPack.jl cannot express) keeps its manager alive:
# the array's finalizer closure holds it, so the deleter can run only after the array is gone.
keep!(array, manager) = (finalizer(_ -> (identity(manager); nothing), array); nothing)

function wrap(manager::DLPack.DLManagedTensor, dl::DLPack.DLTensor)
    n = Int(dl.ndim)
    shape = Int64[unsafe_load(dl.shape, i) for i in 1:n]
    strides = Int64[unsafe_load(dl.strides, i) for i in 1:n]
    col_major = n == 0 || prod(shape) == 0 || strides == collect(Base.size_to_strides(1, shape...))
    row_major = all(i -> shape[i] == 1 || strides[i] == prod(shape[i+1:end]), 1:n)
    if col_major || row_major
        # DLPack.jl's own path: column-major as is, row-major reversed.
        return Tensor(unsafe_wrap(manager, manager), shape, strides, !col_major)
    end
    # A permutation of a dense block (weights are strided views of the checkpoint): wrap the
    # block in memory order, then permute it to the reversed C dimensions.
    dl.ctx.device_type == DLPack.kDLCPU || throw(ArgumentError("only CPU tensors with a permuted layout can be wrapped"))
    T = DLPack.dtypes_to_jltypes()[dl.dtype]
    rshape, rstrides = reverse(shape), reverse(strides)
    order = sortperm(rstrides)
    expected = 1
    for k in order
        rshape[k] == 1 || rstrides[k] == expected ||
            throw(ArgumentError("strides $strides of shape $shape are not a permutation of a dense block"))
        expected *= rshape[k]
    end
    block = unsafe_wrap(Array, Ptr{T}(dl.data + dl.byte_offset), Tuple(rshape[order]))
    keep!(block, manager)
    return Tensor(PermutedDimsArray(block, invperm(order)), shape, strides, true)
end

# DLPack.jl's legacy path: its DLManagedTensor copy calls the deleter on `p`, once, when collected.
from_legacy(p::Ptr{DLPack.DLManagedTensor}) = (m = DLPack.DLManagedTensor(p); wrap(m, m.dl_tensor))

# A versioned tensor through the same path: a legacy manager over its DLTensor whose finalizer
# calls the versioned deleter on the original pointer, once.
function from_versioned(p::Ptr{DLManagedTensorVersioned})
    v = unsafe_load(p)
    return wrap(DLPack.DLManagedTensor(v.dl_tensor, Ptr{Cvoid}(p), v.deleter), v.dl_tensor)
end

"""
    weight(ctx, location, layer = MC_LAYER_NONE; normalize_dim = MC_DIM_NONE, device = nothing)

The weight at `location` (a name such as "attn.to_query", or a constant) in its standard
shape, through the legacy DLPack struct (`mc_get_weight_legacy`).
"""
function weight(ctx::Context, location, layer::Integer = MC_LAYER_NONE;
                normalize_dim = MC_DIM_NONE, device::Union{Nothing, AbstractString} = nothing)
    loc = location isa AbstractString ? weight_location(location) : Int32(location)
    nd = normalize_dim isa AbstractString ? dimension(normalize_dim) : Int32(normalize_dim)
    out = Ref{Ptr{DLPack.DLManagedTensor}}(C_NULL)
    check("mc_get_weight_legacy", ccall((:mc_get_weight_legacy, LIB), Int32,
        (Ptr{Cvoid}, Int32, Int32, Int32, Ptr{UInt8}, Ref{Ptr{DLPack.DLManagedTensor}}),
        ctx, loc, layer, nd, device === nothing ? C_NULL : device, out))
    return from_legacy(out[])
end

"""The token ids of `text`, exactly Python tiktoken's (`mc_encode`)."""
function encode(ctx::Context, text::AbstractString)
    s = String(text)
    ids = Vector{UInt32}(undef, sizeof(s))  # never more ids than bytes
    n = Ref{Csize_t}(0)
    check("mc_encode", ccall((:mc_encode, LIB), Int32,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ptr{UInt32}, Csize_t, Ref{Csize_t}),
        ctx, s, sizeof(s), ids, length(ids), n))
    return resize!(ids, n[])
end

"""The exact bytes of `ids` (`mc_decode`; not necessarily UTF-8)."""
function decode(ctx::Context, ids::Vector{UInt32})
    n = Ref{Csize_t}(0)
    check("mc_decode", ccall((:mc_decode, LIB), Int32,
        (Ptr{Cvoid}, Ptr{UInt32}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}),
        ctx, ids, length(ids), C_NULL, 0, n))
    bytes = Vector{UInt8}(undef, n[])
    check("mc_decode", ccall((:mc_decode, LIB), Int32,
        (Ptr{Cvoid}, Ptr{UInt32}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}),
        ctx, ids, length(ids), bytes, length(bytes), n))
    return bytes
end

"""The exact bytes of one token id (`mc_decode_token`)."""
function decode_token(ctx::Context, id::Integer)
    n = Ref{Csize_t}(0)
    check("mc_decode_token", ccall((:mc_decode_token, LIB), Int32,
        (Ptr{Cvoid}, UInt32, Ptr{UInt8}, Csize_t, Ref{Csize_t}), ctx, id, C_NULL, 0, n))
    bytes = Vector{UInt8}(undef, n[])
    check("mc_decode_token", ccall((:mc_decode_token, LIB), Int32,
        (Ptr{Cvoid}, UInt32, Ptr{UInt8}, Csize_t, Ref{Csize_t}), ctx, id, bytes, length(bytes), n))
    return bytes
end

# The C request struct, field for field.
struct mc_forward_request
    struct_size::UInt32
    token_type::Int32
    tokens::Ptr{Cvoid}
    n_tokens::Csize_t
    batch::Int64
    seq_len::Int64
    pad::Ptr{Bool}
    n_pad::Csize_t
    activations::Ptr{Int32}
    layers::Ptr{Int32}
    n_activations::Csize_t
    edits::Ptr{Cvoid}
    n_edits::Csize_t
    start_residual::Ptr{Cvoid}
    start_layer::Int32
    end_layer::Int32
    logits::Int32
    reserved::UInt32
    objective::Ptr{Cvoid}
    grad_activations::Ptr{Int32}
    grad_layers::Ptr{Int32}
    n_grads::Csize_t
end

# The C objective struct, field for field (filled by mc_objective_init, then set).
struct mc_objective
    struct_size::UInt32
    kind::Int32
    tokens::Ptr{Int64}
    n_tokens::Csize_t
    other_tokens::Ptr{Int64}
    n_other_tokens::Csize_t
    positions::Ptr{Int64}
    n_positions::Csize_t
    targets::Ptr{Int64}
    n_targets::Csize_t
    location::Int32
    layer::Int32
    direction::Ptr{Cvoid}
end

# One axis of an edit's selection: C_NULL with 0 is the whole axis.
struct mc_axis_selection
    indices::Ptr{Int64}
    n_indices::Csize_t
end

# The C edit struct, field for field (filled by mc_edit_init, then set).
struct mc_edit
    struct_size::UInt32
    location::Int32
    layer::Int32
    op::Int32
    value::Float64
    operand::Ptr{Cvoid}
    selection::Ptr{mc_axis_selection}
    n_selection::Csize_t
end

# A DLManagedTensorVersioned with its DLTensor spelled out, for operands the library borrows:
# a float32 CPU tensor over a Julia array, compact row-major with the array's dims reversed.
struct BorrowedTensor
    version::NTuple{2, UInt32}
    manager_ctx::Ptr{Cvoid}
    deleter::Ptr{Cvoid}
    flags::UInt64
    data::Ptr{Cvoid}
    device_type::Int32
    device_id::Int32
    ndim::Int32
    dtype_code::UInt8
    dtype_bits::UInt8
    dtype_lanes::UInt16
    shape::Ptr{Int64}
    strides::Ptr{Int64}
    byte_offset::UInt64
end

"""
    Edit(location, layer; op = MC_EDIT_SET, value = 0.0, operand = nothing, selection = [])

An edit of one activation during `forward` (docs/experiments.md): `selection` has one entry
per leading axis of the C shape `[batch, ...]`, `nothing` for the whole axis or 0-based
indices; `operand` (MC_EDIT_ADD / MC_EDIT_REPLACE) is a Float32 array whose dims are the C
shape reversed (as DLPack.jl hands out row-major tensors), broadcasting to the selection.
"""
struct Edit
    location::Int32
    layer::Int32
    op::Int32
    value::Float64
    operand::Union{Nothing, Array{Float32}}
    selection::Vector{Union{Nothing, Vector{Int64}}}
end

Edit(location, layer::Integer; op = MC_EDIT_SET, value = 0.0, operand = nothing, selection = []) =
    Edit(location isa AbstractString ? activation(location) : Int32(location), Int32(layer), Int32(op),
         Float64(value), operand, Vector{Union{Nothing, Vector{Int64}}}(selection))

# A borrowed float32 CPU DLPack tensor over `a` (C_NULL for nothing); `keep` holds what it
# points to for the call.
function borrow(a, keep)
    a === nothing && return C_NULL
    shape = Int64[reverse(size(a))...]
    t = Ref(BorrowedTensor((1, 1), C_NULL, C_NULL, 0, pointer(a), 1, 0, length(shape),
                           2, 32, 1, pointer(shape), C_NULL, 0))
    push!(keep, shape, t, a)
    return Base.unsafe_convert(Ptr{BorrowedTensor}, t)
end

"""
    Objective(kind; tokens = Int64[], other_tokens = Int64[], positions = Int64[], targets = nothing,
              location = 0, layer = MC_LAYER_NONE, direction = nothing)

The objective of a backward pass in `forward` (docs/experiments.md), one scalar per row:
`tokens`, `other_tokens` and `positions` have one entry per row (0-based ids and positions as
in C; -1 or an empty `positions` is the row's last position); `targets` is `nothing` for the
next tokens; `direction` (MC_OBJECTIVE_DIRECTION) is a Float32 array whose dims are the C
shape reversed, broadcasting to `[batch, ...the location's per-position shape]`.
"""
struct Objective
    kind::Int32
    tokens::Vector{Int64}
    other_tokens::Vector{Int64}
    positions::Vector{Int64}
    targets::Union{Nothing, Vector{Int64}}
    location::Int32
    layer::Int32
    direction::Union{Nothing, Array{Float32}}
end

Objective(kind::Integer; tokens = Int64[], other_tokens = Int64[], positions = Int64[], targets = nothing,
          location = 0, layer::Integer = MC_LAYER_NONE, direction = nothing) =
    Objective(Int32(kind), Vector{Int64}(tokens), Vector{Int64}(other_tokens), Vector{Int64}(positions),
              targets === nothing ? nothing : Vector{Int64}(targets),
              location isa AbstractString ? activation(location) : Int32(location), Int32(layer), direction)

# A vector's pointer and length, C_NULL with 0 when empty or nothing.
carray(v) = v === nothing || isempty(v) ? (C_NULL, 0) : (pointer(v), length(v))

# The C struct of `o` (or nothing), with what it points to kept alive in `keep`.
function c_objective(o::Union{Nothing, Objective}, keep)
    o === nothing && return nothing
    init = Ref{mc_objective}()
    check("mc_objective_init", ccall((:mc_objective_init, LIB), Int32, (Ref{mc_objective}, Csize_t),
                                     init, sizeof(mc_objective)))
    push!(keep, o)
    c = Ref(mc_objective(init[].struct_size, o.kind, carray(o.tokens)..., carray(o.other_tokens)...,
                         carray(o.positions)..., carray(o.targets)..., o.location, o.layer,
                         borrow(o.direction, keep)))
    push!(keep, c)
    return c
end

# The C structs of `edits`, and everything they point to (kept alive by the caller).
function c_edits(edits::Vector{Edit})
    keep = Any[]
    out = mc_edit[]
    for e in edits
        init = Ref{mc_edit}()
        check("mc_edit_init", ccall((:mc_edit_init, LIB), Int32, (Ref{mc_edit}, Csize_t), init, sizeof(mc_edit)))
        sel = [ix === nothing ? mc_axis_selection(C_NULL, 0) : mc_axis_selection(pointer(ix), length(ix))
               for ix in e.selection]
        operand = borrow(e.operand, keep)
        push!(keep, sel, e.selection, e.operand)
        push!(out, mc_edit(init[].struct_size, e.location, e.layer, e.op, e.value, operand,
                           isempty(sel) ? C_NULL : pointer(sel), length(sel)))
    end
    return out, keep
end

"""The logits and kept activations of one forward pass; free with `close` (or the finalizer)."""
mutable struct ForwardOutput
    ptr::Ptr{Cvoid}
end

function Base.close(out::ForwardOutput)
    if out.ptr != C_NULL
        ccall((:mc_forward_output_free, LIB), Cvoid, (Ptr{Cvoid},), out.ptr)
        out.ptr = C_NULL
    end
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, out::ForwardOutput)
    out.ptr == C_NULL && throw(ArgumentError("the forward output is closed"))
    return out.ptr
end

"""
    forward(ctx, tokens; keep = [("mlp.post_act", 1), ("resid.post_ln_f", MC_LAYER_NONE)],
            edits = Edit[], logits = MC_LOGITS_ALL, end_layer = 0, objective = nothing, grads = [])

One sequence of token ids through the model (`mc_forward`), keeping the logits and the
activations named in `keep` (name or constant, with a layer, `MC_LAYER_ALL` or `MC_LAYER_NONE`),
with `edits` applied where each activation is produced, the logits `logits` chooses, and, for
`end_layer` k > 0, only the layers before k. With an `objective`, a backward pass follows:
read `objective_value(out)` and `gradient(out, act, layer)` at the locations in `grads`.
"""
function forward(ctx::Context, tokens::Vector{UInt32}; keep = Tuple{Any, Integer}[],
                 edits::Vector{Edit} = Edit[], logits::Integer = MC_LOGITS_ALL, end_layer::Integer = 0,
                 objective::Union{Nothing, Objective} = nothing, grads = Tuple{Any, Integer}[])
    acts = Int32[a isa AbstractString ? activation(a) : Int32(a) for (a, _) in keep]
    layers = Int32[l for (_, l) in keep]
    grad_acts = Int32[a isa AbstractString ? activation(a) : Int32(a) for (a, _) in grads]
    grad_layers = Int32[l for (_, l) in grads]
    init = Ref{mc_forward_request}()
    check("mc_forward_request_init", ccall((:mc_forward_request_init, LIB), Int32,
        (Ref{mc_forward_request}, Csize_t), init, sizeof(mc_forward_request)))
    out = Ref{Ptr{Cvoid}}(C_NULL)
    cedits, keep_alive = c_edits(edits)
    cobj = c_objective(objective, keep_alive)
    GC.@preserve tokens acts layers grad_acts grad_layers cedits cobj keep_alive begin
        # Every count comes from the vector itself; the library checks n_tokens against
        # batch * seq_len.
        req = mc_forward_request(init[].struct_size, MC_TOKENS_UINT32, pointer(tokens), length(tokens),
            1, length(tokens),
            C_NULL, 0, isempty(acts) ? C_NULL : pointer(acts), isempty(layers) ? C_NULL : pointer(layers), length(acts),
            isempty(cedits) ? C_NULL : pointer(cedits), length(cedits), C_NULL, 0, end_layer, logits, 0,
            cobj === nothing ? C_NULL : Base.unsafe_convert(Ptr{mc_objective}, cobj),
            carray(grad_acts)[1], carray(grad_layers)[1], length(grad_acts))
        check("mc_forward", ccall((:mc_forward, LIB), Int32,
            (Ptr{Cvoid}, Ref{mc_forward_request}, Ref{Ptr{Cvoid}}), ctx, req, out))
    end
    return finalizer(close, ForwardOutput(out[]))
end

"""One activation of `out` (`mc_forward_output_get`); "logits" with `MC_LAYER_NONE` gives the logits."""
function activation(out::ForwardOutput, act, layer::Integer = MC_LAYER_NONE)
    a = act isa AbstractString ? activation(act) : Int32(act)
    p = Ref{Ptr{DLManagedTensorVersioned}}(C_NULL)
    check("mc_forward_output_get", ccall((:mc_forward_output_get, LIB), Int32,
        (Ptr{Cvoid}, Int32, Int32, Ref{Ptr{DLManagedTensorVersioned}}), out, a, layer, p))
    return from_versioned(p[])
end

"""Each row's objective value (`mc_forward_output_objective`): a vector with one Float32 per row."""
function objective_value(out::ForwardOutput)
    p = Ref{Ptr{DLManagedTensorVersioned}}(C_NULL)
    check("mc_forward_output_objective", ccall((:mc_forward_output_objective, LIB), Int32,
        (Ptr{Cvoid}, Ref{Ptr{DLManagedTensorVersioned}}), out, p))
    return from_versioned(p[])
end

"""The gradient of the rows' summed objective at one requested location (`mc_forward_output_grad`)."""
function gradient(out::ForwardOutput, act, layer::Integer = MC_LAYER_NONE)
    a = act isa AbstractString ? activation(act) : Int32(act)
    p = Ref{Ptr{DLManagedTensorVersioned}}(C_NULL)
    check("mc_forward_output_grad", ccall((:mc_forward_output_grad, LIB), Int32,
        (Ptr{Cvoid}, Int32, Int32, Ref{Ptr{DLManagedTensorVersioned}}), out, a, layer, p))
    return from_versioned(p[])
end

# The C append request, field for field (filled by mc_append_request_init, then set).
struct mc_append_request
    struct_size::UInt32
    token_type::Int32
    seq_ids::Ptr{Int32}
    n_seq_ids::Csize_t
    tokens::Ptr{Cvoid}
    n_tokens::Csize_t
    offsets::Ptr{Csize_t}
    n_offsets::Csize_t
    activations::Ptr{Int32}
    layers::Ptr{Int32}
    n_activations::Csize_t
    edits::Ptr{Cvoid}
    n_edits::Csize_t
    logits::Int32
    reserved::UInt32
end

# The C sampling options, field for field (filled by mc_sample_options_init, then set).
struct mc_sample_options
    struct_size::UInt32
    max_new_tokens::UInt32
    stop_at_end_of_text::Bool
    temperature::Float64
    top_p::Float64
    seed::UInt64
    top_k::UInt32
    reserved::UInt32
end

"""
    State(ctx, n_seq_max)

A decoding state (`mc_state_new`, docs/decoding.md): sequences `0 .. n_seq_max - 1` with their
keys and values, so appending tokens costs only the new positions. Keeps the model alive after
`close(ctx)`. Used by one task at a time. Free with `close` (or the finalizer).
"""
mutable struct State
    ptr::Ptr{Cvoid}
    function State(ctx::Context, n_seq_max::Integer)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check("mc_state_new", ccall((:mc_state_new, LIB), Int32, (Ptr{Cvoid}, Csize_t, Ref{Ptr{Cvoid}}),
                                    ctx, n_seq_max, out))
        return finalizer(close, new(out[]))
    end
end

function Base.close(st::State)
    if st.ptr != C_NULL
        ccall((:mc_state_free, LIB), Cvoid, (Ptr{Cvoid},), st.ptr)
        st.ptr = C_NULL
    end
    return nothing
end

function Base.unsafe_convert(::Type{Ptr{Cvoid}}, st::State)
    st.ptr == C_NULL && throw(ArgumentError("the state is closed"))
    return st.ptr
end

"""
    append_tokens!(st, rows; keep = [], edits = Edit[], logits = MC_LOGITS_ALL)

Appends each `seq => tokens` pair of `rows` to its sequence in one call (`mc_state_append`);
the output covers the new positions, `[rows, T_max, ...]` in C order.
"""
function append_tokens!(st::State, rows::Vector{Pair{Int, Vector{UInt32}}}; keep = Tuple{Any, Integer}[],
                        edits::Vector{Edit} = Edit[], logits::Integer = MC_LOGITS_ALL)
    seqs = Int32[first(r) for r in rows]
    tokens = reduce(vcat, [last(r) for r in rows]; init = UInt32[])
    offsets = Csize_t[0; cumsum([length(last(r)) for r in rows])]
    acts = Int32[a isa AbstractString ? activation(a) : Int32(a) for (a, _) in keep]
    layers = Int32[l for (_, l) in keep]
    init = Ref{mc_append_request}()
    check("mc_append_request_init", ccall((:mc_append_request_init, LIB), Int32,
        (Ref{mc_append_request}, Csize_t), init, sizeof(mc_append_request)))
    cedits, keep_alive = c_edits(edits)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve seqs tokens offsets acts layers cedits keep_alive begin
        req = mc_append_request(init[].struct_size, MC_TOKENS_UINT32, carray(seqs)..., carray(tokens)...,
                                carray(offsets)..., carray(acts)[1], carray(layers)[1], length(acts),
                                carray(cedits)..., logits, 0)
        check("mc_state_append", ccall((:mc_state_append, LIB), Int32,
            (Ptr{Cvoid}, Ref{mc_append_request}, Ref{Ptr{Cvoid}}), st, req, out))
    end
    return finalizer(close, ForwardOutput(out[]))
end

"""Makes sequence `dst` a copy of `src` (a fork; `mc_state_copy`)."""
copy_sequence!(st::State, src::Integer, dst::Integer) =
    check("mc_state_copy", ccall((:mc_state_copy, LIB), Int32, (Ptr{Cvoid}, Int32, Int32), st, src, dst))

"""Empties a sequence (`mc_state_remove`)."""
remove_sequence!(st::State, seq::Integer) =
    check("mc_state_remove", ccall((:mc_state_remove, LIB), Int32, (Ptr{Cvoid}, Int32), st, seq))

"""Keeps a sequence's first `n` tokens (`mc_state_truncate`)."""
truncate_sequence!(st::State, seq::Integer, n::Integer) =
    check("mc_state_truncate", ccall((:mc_state_truncate, LIB), Int32, (Ptr{Cvoid}, Int32, Int64), st, seq, n))

"""How many tokens a sequence holds (`mc_state_length`)."""
function sequence_length(st::State, seq::Integer)
    n = Ref{Int64}(0)
    check("mc_state_length", ccall((:mc_state_length, LIB), Int32, (Ptr{Cvoid}, Int32, Ref{Int64}), st, seq, n))
    return n[]
end

"""
    sample_batch(ctx, prompts; max_new_tokens = 16, temperature = 0.0, top_k = 0, top_p = 1.0,
                 seeds = nothing, stop_at_end_of_text = true)

Continues several prompts together on one decoding state (`mc_sample_batch`); returns one
`(tokens, stop_reason)` per prompt, the reason one of the `MC_STOP_*` constants.
"""
function sample_batch(ctx::Context, prompts::Vector{Vector{UInt32}}; max_new_tokens::Integer = 16,
                      temperature::Real = 0.0, top_k::Integer = 0, top_p::Real = 1.0, seeds = nothing,
                      stop_at_end_of_text::Bool = true)
    init = Ref{mc_sample_options}()
    check("mc_sample_options_init", ccall((:mc_sample_options_init, LIB), Int32,
        (Ref{mc_sample_options}, Csize_t), init, sizeof(mc_sample_options)))
    o = Ref(mc_sample_options(init[].struct_size, max_new_tokens, stop_at_end_of_text, temperature, top_p,
                              init[].seed, top_k, 0))
    flat = reduce(vcat, prompts; init = UInt32[])
    starts = Csize_t[0; cumsum(length.(prompts))]
    seeds_c = seeds === nothing ? UInt64[] : Vector{UInt64}(seeds)
    n = length(prompts)
    tokens = Vector{UInt32}(undef, n * max_new_tokens + 1)
    offsets = Vector{Csize_t}(undef, n + 1)
    reasons = Vector{Int32}(undef, n + 1)
    total = Ref{Csize_t}(0)
    GC.@preserve flat starts seeds_c tokens offsets reasons begin
        check("mc_sample_batch", ccall((:mc_sample_batch, LIB), Int32,
            (Ptr{Cvoid}, Ptr{UInt32}, Csize_t, Ptr{Csize_t}, Csize_t, Ref{mc_sample_options}, Ptr{UInt64},
             Csize_t, Ptr{UInt32}, Csize_t, Ptr{Csize_t}, Csize_t, Ptr{Int32}, Csize_t, Ref{Csize_t}),
            ctx, carray(flat)..., pointer(starts), length(starts), o, carray(seeds_c)...,
            pointer(tokens), n * max_new_tokens, pointer(offsets), length(offsets), pointer(reasons), n, total))
    end
    return [(tokens[offsets[i] + 1:offsets[i + 1]], reasons[i]) for i in 1:n]
end

end # module
