"""The ABI the Julia binding relies on, checked without Julia (which cannot be installed here).
This is not a test of the Julia code: that is bindings/julia/test/runtests.jl (`Pkg.test()`),
which runs wherever Julia exists.

The package (bindings/julia/src/ModelContext.jl, its test/runtests.jl) and every example in
examples/julia/ are parsed with tree-sitter's Julia grammar and must parse without error;
every `ccall` signature must match the C prototype in include/model_context.h (argument count
and each argument's class and size), and the Julia mirrors of C structs must have the C field
names, offsets and sizes (measured by gcc).

The C side of the binding's calls is then exercised through ctypes, call for call as tour.jl
makes them, each C function
called with the argument and result types its Julia `ccall` declares, and DLPack.jl's legacy
path emulated: the managed tensor is copied, its deleter is called once on the original
pointer when the array is collected, and the array has DLPack.jl's layout (column-major
tensors as they are, row-major ones with reversed dimensions, permuted weights through the
binding's own reversed PermutedDimsArray). The replay must call every function the module
declares, read the same values as the versioned path, and free every tensor exactly once.

    python tests/python/test_julia_abi.py            # the checks
    python tests/python/test_julia_abi.py --tour DIR # the tour's output, for comparison with C
"""
import ctypes
import gc
import os
import re
import subprocess
import sys
import tempfile
import unittest
import weakref

import numpy as np
import tree_sitter
import tree_sitter_julia

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mc  # noqa: E402

MODULE = os.path.join(mc.ROOT, "bindings", "julia", "src", "ModelContext.jl")
PACKAGE_TESTS = os.path.join(mc.ROOT, "bindings", "julia", "test", "runtests.jl")
PROJECT = os.path.join(mc.ROOT, "bindings", "julia", "Project.toml")
TOUR = os.path.join(mc.ROOT, "examples", "julia", "tour.jl")
HEADER = os.path.join(mc.ROOT, "include", "model_context.h")
DEMO = os.environ.get("MC_DEMO_MODEL", os.path.join(mc.ROOT, "data", "demo"))

# Julia type -> (class, ctypes type, size, alignment) on x86-64 / aarch64 Linux.
_PTR = ("ptr", ctypes.c_void_p, 8, 8)
JULIA_SCALARS = {
    "Int32": ("i32", ctypes.c_int32, 4, 4), "Cint": ("i32", ctypes.c_int32, 4, 4),
    "UInt32": ("u32", ctypes.c_uint32, 4, 4), "Cuint": ("u32", ctypes.c_uint32, 4, 4),
    "Int64": ("i64", ctypes.c_int64, 8, 8), "Clonglong": ("i64", ctypes.c_int64, 8, 8),
    "UInt64": ("u64", ctypes.c_uint64, 8, 8), "Culonglong": ("u64", ctypes.c_uint64, 8, 8),
    "Csize_t": ("usize", ctypes.c_size_t, 8, 8), "Bool": ("bool", ctypes.c_bool, 1, 1),
    "UInt8": ("u8", ctypes.c_uint8, 1, 1), "UInt16": ("u16", ctypes.c_uint16, 2, 2),
    "Float64": ("f64", ctypes.c_double, 8, 8), "Cdouble": ("f64", ctypes.c_double, 8, 8),
    "Cvoid": ("void", None, 0, 1), "Cstring": ("ptr", ctypes.c_char_p, 8, 8),
    "NTuple{2, UInt32}": ("u32x2", ctypes.c_uint32 * 2, 8, 4),
    "DLPack.DLTensor": ("DLTensor", mc.DLTensor, ctypes.sizeof(mc.DLTensor), 8),
}
C_CLASSES = {
    "int32_t": "i32", "int": "i32", "mc_status": "i32", "mc_weight_location": "i32",
    "mc_dimension": "i32", "mc_activation": "i32", "mc_dtype": "i32", "mc_token_type": "i32",
    "uint32_t": "u32", "int64_t": "i64", "uint64_t": "u64", "size_t": "usize", "bool": "bool",
    "double": "f64", "void": "void",
}


def parse_julia(path):
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language()))
    with open(path, "rb") as f:
        return parser.parse(f.read())


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


def julia_ccalls(tree):
    """[(function name, result type, [argument types])] of every `ccall((:name, LIB), ...)`."""
    calls = []
    for node in _walk(tree.root_node):
        if node.type == "call_expression" and node.children[0].text == b"ccall":
            args = node.children[1].named_children
            m = re.fullmatch(r"\(:(\w+), LIB\)", args[0].text.decode())
            assert m, f"ccall target {args[0].text.decode()} is not (:name, LIB)"
            assert args[2].type == "tuple_expression", args[2].text
            calls.append((m.group(1), args[1].text.decode(), [c.text.decode() for c in args[2].named_children]))
    return calls


def julia_structs(source):
    """{name: [(field, type)]} of the module's plain `struct`s with typed fields."""
    out = {}
    for m in re.finditer(r"^struct (\w+)\n(.*?)^end", source, re.M | re.S):
        fields = re.findall(r"^\s+(\w+)::(.+?)\s*$", m.group(2), re.M)
        out[m.group(1)] = fields
    return out


def julia_class(t, structs):
    if t in JULIA_SCALARS:
        return JULIA_SCALARS[t][0]
    if re.fullmatch(r"(Ptr|Ref)\{.*\}", t):
        return "ptr"
    if t in structs:
        return "struct:" + t
    raise AssertionError(f"Julia type {t} has no C class here")


def c_prototypes():
    """{name: (result class, [argument classes])} from the header."""
    with open(HEADER) as f:
        text = re.sub(r"/\*.*?\*/|//[^\n]*", "", f.read(), flags=re.S)
    protos = {}
    for m in re.finditer(r"([A-Za-z_][\w \t\*]*?)\b(mc_\w+)\s*\(([^()]*)\)\s*;", text):
        ret, name, args = m.group(1).strip(), m.group(2), m.group(3).strip()
        protos[name] = (c_class(ret + (" *" if text[m.start(2) - 1] == "*" else "")),
                        [] if args in ("", "void") else [c_class(a, param=True) for a in args.split(",")])
    return protos


def c_class(decl, param=False):
    decl = " ".join(decl.replace("*", " * ").split())
    if "*" in decl:
        return "ptr"
    words = [w for w in decl.split() if w not in ("const", "MC_API")]
    if param and len(words) > 1:
        words = words[:-1]  # drop the parameter's name
    if words[0] == "struct":
        return "struct:" + words[1]
    return C_CLASSES[" ".join(words)]


def c_layout(struct, fields):
    """(sizeof, [(offsetof, sizeof) of each field]) measured by gcc with the real header."""
    body = "".join(f' printf(" %zu %zu", offsetof(struct {struct}, {f}), sizeof(((struct {struct} *)0)->{f}));'
                   for f in fields)
    src = (f'#include <stdio.h>\n#include <stddef.h>\n#include "model_context.h"\n'
           f'int main(void) {{ printf("%zu", sizeof(struct {struct}));{body} return 0; }}\n')
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "layout.c"), "w") as f:
            f.write(src)
        exe = os.path.join(d, "layout")
        subprocess.run(["gcc", "-std=c11", "-I", os.path.dirname(HEADER), "-o", exe, os.path.join(d, "layout.c")], check=True)
        values = [int(x) for x in subprocess.run([exe], check=True, capture_output=True, text=True).stdout.split()]
    return values[0], list(zip(values[1::2], values[2::2]))


def julia_layout(fields):
    """(size, [(offset, size) of each field]) of a Julia isbits struct (C rules)."""
    offset, align, offsets = 0, 1, []
    for _, t in fields:
        _, _, size, a = _PTR if re.fullmatch(r"Ptr\{.*\}", t) else JULIA_SCALARS[t]
        offset = (offset + a - 1) // a * a
        offsets.append((offset, size))
        offset += size
        align = max(align, a)
    return (offset + align - 1) // align * align, offsets


class JuliaFFI:
    """The C library called with the types of the Julia module's `ccall`s; records each call."""

    def __init__(self, lib_path=None):
        with open(MODULE) as f:
            source = f.read()
        self.structs = julia_structs(source)
        self.ctypes_structs = {}
        for name, fields in self.structs.items():
            if any("Union{" in t or t.startswith(("Array{", "Vector{")) for _, t in fields):
                continue  # a Julia-side type (Edit), not a mirror of a C struct
            cls = type(name, (ctypes.Structure,), {"_fields_": [(f, self.ctype(t)) for f, t in fields]})
            self.ctypes_structs[name] = cls
        self.lib = ctypes.CDLL(lib_path or os.environ.get("MC_LIB") or
                               os.path.join(mc.ROOT, "target", "debug", "libmodel_context.so"))
        self.signatures = {}
        for name, ret, args in julia_ccalls(parse_julia(MODULE)):
            fn = getattr(self.lib, name)
            fn.restype = self.ctype(ret)
            fn.argtypes = [self.ctype(a) for a in args]
            self.signatures[name] = (ret, args)
        self.called = []

    def ctype(self, t):
        if t in JULIA_SCALARS:
            return JULIA_SCALARS[t][1]
        if t in getattr(self, "ctypes_structs", {}):
            return self.ctypes_structs[t]
        if re.fullmatch(r"(Ptr|Ref)\{.*\}", t):
            return ctypes.c_void_p
        raise AssertionError(f"no ctypes type for Julia {t}")

    def __call__(self, name, *args):
        self.called.append(name)
        return getattr(self.lib, name)(*args)


class JuliaManager:
    """Stands for DLPack.jl's DLManagedTensor object (what the Julia GC collects)."""


class DLPackJl:
    """What DLPack.jl does with a managed tensor, as far as this binding uses it."""

    deleted = []  # per manager made: how many times its deleter ran

    @classmethod
    def manager(cls, p, deleter):
        """DLManagedTensor(dl_tensor, manager_ctx = p, deleter): when the manager is
        collected, its finalizer calls `deleter(p)`."""
        owner, fn, index = JuliaManager(), ctypes.CFUNCTYPE(None, ctypes.c_void_p)(deleter), len(cls.deleted)
        cls.deleted.append(0)

        def finalize():
            cls.deleted[index] += 1
            fn(p)
        weakref.finalize(owner, finalize)
        return owner


DTYPES = {(2, 32): np.float32, (2, 16): np.float16, (2, 64): np.float64, (0, 64): np.int64, (0, 32): np.int32}


class Tensor:
    """ModelContext.Tensor: array (a NumPy array indexed as the Julia array, 0-based), the C
    shape and strides, and whether the array's dimensions are reversed."""

    def __init__(self, array, shape, strides, reversed_):
        self.array, self.shape, self.strides, self.reversed = array, shape, strides, reversed_

    def cview(self):
        return self.array.transpose(range(self.array.ndim - 1, -1, -1)) if self.reversed else self.array

    def revview(self):
        return self.array if self.reversed else self.array.transpose(range(self.array.ndim - 1, -1, -1))


def wrap(dl, keep):
    """ModelContext.wrap: DLPack.jl's unsafe_wrap for column- and row-major tensors, the
    binding's reversed PermutedDimsArray for permuted ones. `keep` is the Julia manager."""
    n = dl.ndim
    shape = [dl.shape[i] for i in range(n)]
    strides = [dl.strides[i] for i in range(n)]
    size_to_strides = [int(np.prod(shape[:i])) for i in range(n)]
    col_major = n == 0 or int(np.prod(shape)) == 0 or strides == size_to_strides
    row_major = all(shape[i] == 1 or strides[i] == int(np.prod(shape[i + 1:])) for i in range(n))
    T = DTYPES[(dl.dtype.code, dl.dtype.bits)]

    def julia_array(dims):
        # unsafe_wrap(Array, Ptr{T}(data), dims): column-major over the data, no copy.
        count = int(np.prod(dims))
        buf = (ctypes.c_char * (count * np.dtype(T).itemsize)).from_address(dl.data + dl.byte_offset)
        buf._keep = keep  # the array's lifetime holds the manager (DLPack.jl's WRAPS_POOL)
        return np.ndarray(tuple(dims), dtype=T, buffer=buf, order="F")

    if col_major or row_major:
        array = julia_array(shape)
        if not col_major:
            array = array.reshape(shape[::-1], order="F")  # reshape_me_maybe(RowMajor, ...)
        return Tensor(array, shape, strides, not col_major)
    rshape, rstrides = shape[::-1], strides[::-1]
    order = list(np.argsort(rstrides, kind="stable"))  # sortperm
    expected = 1
    for k in order:
        assert rshape[k] == 1 or rstrides[k] == expected, (shape, strides)
        expected *= rshape[k]
    block = julia_array([rshape[k] for k in order])
    return Tensor(block.transpose(list(np.argsort(order))), shape, strides, True)  # invperm


class McError(Exception):
    def __init__(self, op, status, name, message):
        super().__init__(f"{op}: {name}: {message}")
        self.op, self.status, self.name, self.message = op, status, name, message


class Binding:
    """bindings/julia/src/ModelContext.jl, function for function, over JuliaFFI."""

    MC_LAYER_NONE = -1
    MC_DIM_NONE = -1
    MC_TOKENS_UINT32 = 1

    def __init__(self, ffi):
        self.ffi = ffi

    def check(self, op, status):
        if status == 0:
            return
        message = self.ffi("mc_last_error").decode()
        name = self.ffi("mc_status_name", status).decode()
        raise McError(op, status, name, message)

    def version(self):
        return self.ffi("mc_version").decode()

    def lookup(self, fn, name):
        out = ctypes.c_int32(0)
        cname = {"weight": "mc_weight_location_from_name", "dimension": "mc_dimension_from_name"}.get(
            fn, "mc_activation_from_name")
        self.check(cname, self.ffi(cname, name.encode(), ctypes.byref(out)))
        return out.value

    def context(self, model, device="cpu"):
        out = ctypes.c_void_p()
        self.check("mc_open", self.ffi("mc_open", model.encode(), None if device is None else device.encode(),
                                       ctypes.byref(out)))
        return out

    def close(self, ctx):
        self.ffi("mc_free", ctx)

    def config_json(self, ctx):
        out = ctypes.c_void_p()
        self.check("mc_config_json", self.ffi("mc_config_json", ctx, ctypes.byref(out)))
        s = ctypes.string_at(out.value).decode()
        self.ffi("mc_string_free", out)
        return s

    def dim_size(self, ctx, dim):
        d = self.lookup("dimension", dim) if isinstance(dim, str) else dim
        out = ctypes.c_int64(0)
        self.check("mc_dim_size", self.ffi("mc_dim_size", ctx, d, ctypes.byref(out)))
        return out.value

    def from_legacy(self, p):
        m = mc.DLManagedTensor.from_buffer_copy(ctypes.cast(p, ctypes.POINTER(mc.DLManagedTensor)).contents)
        return wrap(m.dl_tensor, DLPackJl.manager(p, ctypes.cast(m.deleter, ctypes.c_void_p).value))

    def from_versioned(self, p):
        struct = self.ffi.ctypes_structs["DLManagedTensorVersioned"]
        v = struct.from_buffer_copy(ctypes.cast(p, ctypes.POINTER(struct)).contents)
        return wrap(v.dl_tensor, DLPackJl.manager(p, v.deleter))

    def weight(self, ctx, location, layer=-1, normalize_dim=-1, device=None):
        loc = self.lookup("weight", location) if isinstance(location, str) else location
        nd = self.lookup("dimension", normalize_dim) if isinstance(normalize_dim, str) else normalize_dim
        out = ctypes.c_void_p()
        self.check("mc_get_weight_legacy", self.ffi("mc_get_weight_legacy", ctx, loc, layer, nd,
                                                    None if device is None else device.encode(), ctypes.byref(out)))
        return self.from_legacy(out.value)

    def encode(self, ctx, text):
        s = text.encode()
        ids = (ctypes.c_uint32 * len(s))()
        n = ctypes.c_size_t(0)
        self.check("mc_encode", self.ffi("mc_encode", ctx, s, len(s), ids, len(ids), ctypes.byref(n)))
        return list(ids[:n.value])

    def _bytes(self, op, *args):
        n = ctypes.c_size_t(0)
        self.check(op, self.ffi(op, *args, None, 0, ctypes.byref(n)))
        buf = (ctypes.c_uint8 * n.value)()
        self.check(op, self.ffi(op, *args, buf, len(buf), ctypes.byref(n)))
        return bytes(buf)

    def decode(self, ctx, ids):
        arr = (ctypes.c_uint32 * len(ids))(*ids)
        return self._bytes("mc_decode", ctx, arr, len(ids))

    def decode_token(self, ctx, token):
        return self._bytes("mc_decode_token", ctx, token)

    def forward(self, ctx, tokens, keep=()):
        acts = (ctypes.c_int32 * len(keep))(*[self.lookup("activation", a) if isinstance(a, str) else a for a, _ in keep])
        layers = (ctypes.c_int32 * len(keep))(*[layer for _, layer in keep])
        toks = (ctypes.c_uint32 * len(tokens))(*tokens)
        req_t = self.ffi.ctypes_structs["mc_forward_request"]
        d = req_t()
        self.check("mc_forward_request_init",
                   self.ffi("mc_forward_request_init", ctypes.byref(d), ctypes.sizeof(req_t)))
        req = req_t(d.struct_size, self.MC_TOKENS_UINT32, ctypes.cast(toks, ctypes.c_void_p), len(tokens), 1,
                    len(tokens), None, 0,
                    ctypes.cast(acts, ctypes.c_void_p) if keep else None,
                    ctypes.cast(layers, ctypes.c_void_p) if keep else None, len(keep))
        out = ctypes.c_void_p()
        self.check("mc_forward", self.ffi("mc_forward", ctx, ctypes.byref(req), ctypes.byref(out)))
        return out

    def edit_init(self):
        """What the module's c_edits does first for each edit."""
        edit_t = self.ffi.ctypes_structs["mc_edit"]
        e = edit_t()
        self.check("mc_edit_init", self.ffi("mc_edit_init", ctypes.byref(e), ctypes.sizeof(edit_t)))
        return e

    def objective_init(self):
        """What the module's c_objective does first."""
        obj_t = self.ffi.ctypes_structs["mc_objective"]
        o = obj_t()
        self.check("mc_objective_init", self.ffi("mc_objective_init", ctypes.byref(o), ctypes.sizeof(obj_t)))
        return o

    def attribution(self, ctx, tokens, token, other, act):
        """forward(...; objective = Objective(MC_OBJECTIVE_LOGIT_DIFF; ...), grads = [(act, 0)]),
        then objective_value and gradient, as examples/julia/attribution.jl calls them."""
        o = self.objective_init()
        ids = (ctypes.c_int64 * 2)(token, other)
        o.kind, o.tokens, o.n_tokens = 1, ctypes.cast(ids, ctypes.c_void_p), 1
        o.other_tokens, o.n_other_tokens = ctypes.c_void_p(ctypes.addressof(ids) + 8), 1
        a = self.lookup("activation", act)
        gacts, glayers = (ctypes.c_int32 * 1)(a), (ctypes.c_int32 * 1)(0)
        toks = (ctypes.c_uint32 * len(tokens))(*tokens)
        req_t = self.ffi.ctypes_structs["mc_forward_request"]
        req = req_t()
        self.check("mc_forward_request_init",
                   self.ffi("mc_forward_request_init", ctypes.byref(req), ctypes.sizeof(req_t)))
        req.token_type, req.tokens, req.n_tokens = self.MC_TOKENS_UINT32, ctypes.cast(toks, ctypes.c_void_p), len(tokens)
        req.batch, req.seq_len = 1, len(tokens)
        req.objective = ctypes.cast(ctypes.pointer(o), ctypes.c_void_p)
        req.grad_activations, req.grad_layers, req.n_grads = (ctypes.cast(gacts, ctypes.c_void_p),
                                                              ctypes.cast(glayers, ctypes.c_void_p), 1)
        out = ctypes.c_void_p()
        self.check("mc_forward", self.ffi("mc_forward", ctx, ctypes.byref(req), ctypes.byref(out)))
        p, g = ctypes.c_void_p(), ctypes.c_void_p()
        self.check("mc_forward_output_objective", self.ffi("mc_forward_output_objective", out, ctypes.byref(p)))
        self.check("mc_forward_output_grad", self.ffi("mc_forward_output_grad", out, a, 0, ctypes.byref(g)))
        self.close_output(out)
        return self.from_versioned(p.value), self.from_versioned(g.value)

    def decoding(self, ctx):
        """State(ctx, 3); append_tokens!(st, [0 => [464, 2068], 1 => [15496]]; logits =
        MC_LOGITS_LAST); copy_sequence!, truncate_sequence!, sequence_length, remove_sequence!,
        close; then sample_batch of two prompts, as the module's functions call them."""
        st = ctypes.c_void_p()
        self.check("mc_state_new", self.ffi("mc_state_new", ctx, 3, ctypes.byref(st)))
        req_t = self.ffi.ctypes_structs["mc_append_request"]
        req = req_t()
        self.check("mc_append_request_init",
                   self.ffi("mc_append_request_init", ctypes.byref(req), ctypes.sizeof(req_t)))
        seqs, toks = (ctypes.c_int32 * 2)(0, 1), (ctypes.c_uint32 * 3)(464, 2068, 15496)
        offs = (ctypes.c_size_t * 3)(0, 2, 3)
        req.token_type = self.MC_TOKENS_UINT32
        req.seq_ids, req.n_seq_ids = ctypes.cast(seqs, ctypes.c_void_p), 2
        req.tokens, req.n_tokens = ctypes.cast(toks, ctypes.c_void_p), 3
        req.offsets, req.n_offsets = ctypes.cast(offs, ctypes.c_void_p), 3
        req.logits = 1
        out = ctypes.c_void_p()
        self.check("mc_state_append", self.ffi("mc_state_append", st, ctypes.byref(req), ctypes.byref(out)))
        logits = self.activation(out, "logits", -1)
        self.close_output(out)
        self.check("mc_state_copy", self.ffi("mc_state_copy", st, 0, 2))
        self.check("mc_state_truncate", self.ffi("mc_state_truncate", st, 2, 1))
        n = ctypes.c_int64()
        self.check("mc_state_length", self.ffi("mc_state_length", st, 2, ctypes.byref(n)))
        self.check("mc_state_remove", self.ffi("mc_state_remove", st, 1))
        self.ffi("mc_state_free", st)
        opt_t = self.ffi.ctypes_structs["mc_sample_options"]
        o = opt_t()
        self.check("mc_sample_options_init", self.ffi("mc_sample_options_init", ctypes.byref(o), ctypes.sizeof(opt_t)))
        o.max_new_tokens, o.stop_at_end_of_text = 4, False
        prompts, starts = (ctypes.c_uint32 * 3)(464, 2068, 15496), (ctypes.c_size_t * 3)(0, 2, 3)
        tokens, offsets = (ctypes.c_uint32 * 9)(), (ctypes.c_size_t * 3)()
        reasons, total = (ctypes.c_int32 * 3)(), ctypes.c_size_t()
        self.check("mc_sample_batch", self.ffi(
            "mc_sample_batch", ctx, ctypes.cast(prompts, ctypes.c_void_p), 3, ctypes.cast(starts, ctypes.c_void_p), 3,
            ctypes.byref(o), None, 0, ctypes.cast(tokens, ctypes.c_void_p), 8, ctypes.cast(offsets, ctypes.c_void_p),
            3, ctypes.cast(reasons, ctypes.c_void_p), 2, ctypes.byref(total)))
        return logits, n.value, total.value, list(reasons)[:2]

    def close_output(self, out):
        self.ffi("mc_forward_output_free", out)

    def activation(self, out, act, layer=-1):
        a = self.lookup("activation", act) if isinstance(act, str) else act
        p = ctypes.c_void_p()
        self.check("mc_forward_output_get", self.ffi("mc_forward_output_get", out, a, layer, ctypes.byref(p)))
        return self.from_versioned(p.value)


def quoted(data):
    return '"' + "".join(chr(b) if 0x20 <= b < 0x7f and b not in b'"\\' else "\\x%02x" % b for b in data) + '"'


def csum(t):
    # revview(t) iterated column-major = the C row-major order; accumulated in order, in float64.
    flat = t.revview().flatten(order="F").astype(np.float64)
    return float(np.add.accumulate(flat)[-1]) if flat.size else 0.0


def tour(model, ffi=None):
    """examples/julia/tour.jl, call for call. Returns its lines and the tensors it read."""
    b = Binding(ffi or JuliaFFI())
    lines, seen = [], {}

    def dims(v):
        return "[" + ",".join(str(x) for x in v) + "]"

    def describe(kind, name, layer, t):
        lines.append("%s %s layer=%s shape=%s strides=%s dtype=float32 sum=%.6f" % (
            kind, name, "-" if layer == b.MC_LAYER_NONE else str(layer), dims(t.shape), dims(t.strides), csum(t)))
        seen[(kind, name, layer)] = t

    ctx = b.context(model, "cpu")
    lines.append("model_context " + b.version())
    lines.append("config " + b.config_json(ctx))
    layers, d_model = b.dim_size(ctx, "layers"), b.dim_size(ctx, "residual_stream_channels")
    heads, vocab = b.dim_size(ctx, "attn_heads"), b.dim_size(ctx, "vocab_size")
    lines.append(f"dims layers={layers} d_model={d_model} heads={heads} vocab={vocab}")
    describe("weight", "attn.to_query", 0, b.weight(ctx, "attn.to_query", 0))
    describe("weight", "embedding", b.MC_LAYER_NONE, b.weight(ctx, "embedding"))
    prompt = "Hello, world"
    ids = b.encode(ctx, prompt)
    lines.append("tokens " + quoted(prompt.encode()) + " -> " + dims(ids))
    lines.append("decode -> " + quoted(b.decode(ctx, ids)))
    out = b.forward(ctx, ids, keep=[("mlp.post_act", 1), ("resid.post_ln_f", b.MC_LAYER_NONE)])
    logits = b.activation(out, "logits", b.MC_LAYER_NONE)
    mlp = b.activation(out, "mlp.post_act", 1)
    resid = b.activation(out, "resid.post_ln_f", b.MC_LAYER_NONE)
    b.close_output(out)
    describe("forward", "logits", b.MC_LAYER_NONE, logits)
    describe("activation", "mlp.post_act", 1, mlp)
    describe("activation", "resid.post_ln_f", b.MC_LAYER_NONE, resid)
    unemb = b.weight(ctx, "unembedding")
    seen[("weight", "unembedding", b.MC_LAYER_NONE)] = unemb
    L, H, W = logits.cview(), resid.cview(), unemb.cview()
    last = len(ids)
    row = L[0, last - 1, :].astype(np.float64)
    max_diff = float(np.max(np.abs(row - H[0, last - 1, :].astype(np.float64) @ W.astype(np.float64))))
    best = int(np.argmax(row)) + 1  # the first maximum, as the strict > of the Julia loop
    lines.append("check logits == resid.post_ln_f @ unembedding: " + ("ok" if max_diff < 1e-4 else "FAILED"))
    lines.append(f"next token {best - 1} " + quoted(b.decode_token(ctx, best - 1)))
    try:
        b.weight(ctx, "attn.to_query", 99)
    except McError as e:
        lines.append(f"error mc_get_weight(attn.to_query, layer 99): {e.name}: {e.message}")
    try:
        b.context("/no/such/model")
    except McError as e:
        lines.append(f"error mc_open(/no/such/model): {e.name}: {e.message}")
    b.close(ctx)
    return lines, seen


class JuliaABI(unittest.TestCase):
    def test_julia_sources_parse(self):
        examples = sorted(os.path.join(os.path.dirname(TOUR), f) for f in os.listdir(os.path.dirname(TOUR))
                          if f.endswith(".jl"))
        self.assertIn(TOUR, examples)
        for path in [MODULE, PACKAGE_TESTS, *examples]:
            tree = parse_julia(path)
            bad = [n for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]
            self.assertFalse(tree.root_node.has_error, f"{path}: syntax errors at "
                             f"{[(n.start_point[0] + 1, n.text[:40]) for n in bad]}")
        # The parser does reject broken Julia.
        broken = tree_sitter.Parser(tree_sitter.Language(tree_sitter_julia.language())).parse(b"function f(x\n  x +\nend\n")
        self.assertTrue(broken.root_node.has_error)

    def test_package_layout(self):
        """A real package: Project.toml names it, gives it a uuid and a version matching the
        library's, and compat bounds; the module resolves the library in __init__."""
        with open(PROJECT) as f:
            project = f.read()
        fields = dict(re.findall(r'^(\w+) = "([^"]*)"', project, re.M))
        self.assertEqual(fields.get("name"), "ModelContext")
        self.assertRegex(fields.get("uuid", ""), r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        with open(os.path.join(mc.ROOT, "Cargo.toml")) as f:
            version = re.search(r'(?s)\[package\].*?\nversion = "([^"]+)"', f.read()).group(1)
        self.assertEqual(fields.get("version"), version)
        self.assertRegex(project, r'(?m)^\[compat\]\nDLPack = "[^"]+"\njulia = "[^"]+"')
        self.assertRegex(project, r'(?m)^\[targets\]\ntest = \["Test"\]')
        with open(MODULE) as f:
            source = f.read()
        self.assertRegex(source, r"(?s)function __init__\(\).*?global LIB = get\(ENV, \"MODEL_CONTEXT_LIB\"")
        self.assertNotRegex(source, r"(?m)^const LIB\b")

    def test_ccall_signatures_match_the_header(self):
        with open(MODULE) as f:
            structs = julia_structs(f.read())
        protos = c_prototypes()
        self.assertIn("mc_forward_output_get", protos)
        calls = julia_ccalls(parse_julia(MODULE))
        self.assertGreaterEqual(len({c[0] for c in calls}), 15)
        for name, ret, args in calls:
            self.assertIn(name, protos, f"{name} is not in the header")
            c_ret, c_args = protos[name]
            self.assertEqual(julia_class(ret, structs), c_ret, f"{name}: result {ret}")
            self.assertEqual(len(args), len(c_args), f"{name}: {len(args)} arguments, C has {len(c_args)}")
            for i, (a, c) in enumerate(zip(args, c_args)):
                self.assertEqual(julia_class(a, structs), c, f"{name}: argument {i + 1} is {a}, C has {c}")

    def test_struct_mirrors_match_c(self):
        with open(MODULE) as f:
            structs = julia_structs(f.read())
        for name in ("mc_forward_request", "DLManagedTensorVersioned", "mc_edit", "mc_axis_selection",
                     "mc_objective", "mc_append_request", "mc_sample_options"):
            fields = structs[name]
            size, offsets = c_layout(name, [f for f, _ in fields])
            self.assertEqual((size, offsets), julia_layout(fields), f"{name} layout")
        # The borrowed-operand mirror is DLManagedTensorVersioned with its DLTensor spelled out.
        flat = {"data": "dl_tensor.data", "device_type": "dl_tensor.device.device_type",
                "device_id": "dl_tensor.device.device_id", "ndim": "dl_tensor.ndim",
                "dtype_code": "dl_tensor.dtype.code", "dtype_bits": "dl_tensor.dtype.bits",
                "dtype_lanes": "dl_tensor.dtype.lanes", "shape": "dl_tensor.shape",
                "strides": "dl_tensor.strides", "byte_offset": "dl_tensor.byte_offset"}
        fields = structs["BorrowedTensor"]
        size, offsets = c_layout("DLManagedTensorVersioned", [flat.get(f, f) for f, _ in fields])
        self.assertEqual((size, offsets), julia_layout(fields), "BorrowedTensor layout")

    def test_tour_replay(self):
        DLPackJl.deleted.clear()
        ffi = JuliaFFI()
        self.check_tour(ffi)
        # Every deleter ran exactly once, once the arrays are gone.
        gc.collect()
        self.assertEqual(len(DLPackJl.deleted), 9)  # 3 weights, 3 activations, objective, gradient, logits
        self.assertEqual(set(DLPackJl.deleted), {1}, DLPackJl.deleted)

    def check_tour(self, ffi):
        lines, seen = tour(DEMO, ffi)
        b = Binding(ffi)
        self.assertEqual(b.edit_init().struct_size, 48)
        self.assertEqual(b.objective_init().struct_size, 88)
        ctx = b.context(DEMO, "cpu")
        value, grad = b.attribution(ctx, [464, 3139, 286, 4881, 318, 262], 6342, 3576, "mlp.post_act")
        self.assertEqual(value.shape, [1])
        self.assertEqual(grad.shape[:2], [1, 6])
        self.assertGreater(float(np.abs(grad.cview()).max()), 0.0)
        logits, kept, total, reasons = b.decoding(ctx)
        self.assertEqual(logits.shape[:2], [2, 1])
        self.assertEqual((kept, total, reasons), (1, 8, [1, 1]))
        b.close(ctx)
        self.assertIn("check logits == resid.post_ln_f @ unembedding: ok", lines)
        self.assertIn('tokens "Hello, world" -> [15496,11,995]', lines)
        self.assertTrue(any(line.startswith("error mc_open(/no/such/model): MC_ERR_NOT_FOUND: /no/such/model")
                            for line in lines), lines)
        # Every function the module declares went through ctypes with its Julia signature.
        self.assertEqual(set(ffi.signatures) - set(ffi.called), set())
        # The emulated Julia arrays hold the same values as the versioned path (mc.py, NumPy).
        ref = mc.Context(DEMO)
        try:
            for (kind, name, layer), t in seen.items():
                if kind != "weight":
                    continue
                expect = np.from_dlpack(ref.weight(name, None if layer == -1 else layer))
                self.assertEqual(list(expect.shape), t.shape)
                np.testing.assert_array_equal(t.cview(), expect)
                if t.reversed:  # array[k, j, i] == W[i, j, k]
                    np.testing.assert_array_equal(t.array, expect.transpose(range(expect.ndim - 1, -1, -1)))
        finally:
            ref.close()
        self.assertTrue(seen[("weight", "attn.to_query", 0)].reversed)  # permuted: the binding's path
        self.assertTrue(seen[("weight", "embedding", -1)].reversed)  # row-major: DLPack.jl, reversed
        self.assertFalse(seen[("weight", "unembedding", -1)].reversed)  # column-major: DLPack.jl, as is
        self.assertTrue(seen[("forward", "logits", -1)].reversed)

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--tour":
        print("\n".join(tour(sys.argv[2])[0]))
    else:
        unittest.main(verbosity=2)
