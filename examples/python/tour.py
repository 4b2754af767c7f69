"""Python is not a target language of model_context, but its tensors are DLPack: this example
opens a checkpoint through ctypes (tests/python/mc.py) and hands weights and forward-pass
activations to NumPy and PyTorch with `__dlpack__`, zero-copy.

    MC_LIB=$PREFIX/lib/libmodel_context.so python examples/python/tour.py MODEL_DIR
"""
import ctypes
import os
import sys

import torch  # before the library, so both use the same libtorch
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "python"))
import mc  # noqa: E402

MC_ACT_MLP_POST_ACT, MC_ACT_RESID_POST_LN_F, MC_ACT_LOGITS, MC_TOKENS_UINT32 = 18, 10, 19, 1


class ForwardRequest(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("token_type", ctypes.c_int32), ("tokens", ctypes.c_void_p),
                ("n_tokens", ctypes.c_size_t), ("batch", ctypes.c_int64), ("seq_len", ctypes.c_int64), ("pad", ctypes.c_void_p),
                ("n_pad", ctypes.c_size_t), ("activations", ctypes.c_void_p), ("layers", ctypes.c_void_p),
                ("n_activations", ctypes.c_size_t), ("edits", ctypes.c_void_p), ("n_edits", ctypes.c_size_t),
                ("start_residual", ctypes.c_void_p), ("start_layer", ctypes.c_int32),
                ("end_layer", ctypes.c_int32), ("logits", ctypes.c_int32), ("reserved", ctypes.c_uint32)]


def check(lib, status, what):
    if status != 0:
        raise mc.McError(status, f"{what}: {lib.mc_last_error().decode()}")


class Activation:
    """One activation of a forward output, speaking the DLPack protocol: every `__dlpack__`
    hands out a new tensor (mc_forward_output_get) that the consumer frees with its deleter."""

    def __init__(self, lib, output, act, layer):
        self.lib, self.output, self.act, self.layer = lib, output, act, layer

    def __dlpack_device__(self):
        return (1, 0)  # the context was opened on the CPU

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        p = ctypes.POINTER(mc.DLManagedTensorVersioned)()
        check(self.lib, self.lib.mc_forward_output_get(self.output, self.act, self.layer, ctypes.byref(p)),
              "mc_forward_output_get")
        return mc._PyCapsule_New(ctypes.cast(p, ctypes.c_void_p), b"dltensor_versioned",
                                 ctypes.cast(mc._DESTROY_VERSIONED, ctypes.c_void_p))


def c_order_sum(a):
    """The sum in row-major order, accumulated in float64 like the C tour."""
    flat = np.ascontiguousarray(a).ravel().astype(np.float64)
    return float(np.add.accumulate(flat)[-1])


def main(model):
    ctx = mc.Context(model)
    lib = ctx.lib
    lib.mc_status_name.restype = ctypes.c_char_p
    lib.mc_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                              ctypes.c_void_p]
    lib.mc_decode_token.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t,
                                    ctypes.c_void_p]
    lib.mc_forward_request_init.argtypes = [ctypes.POINTER(ForwardRequest), ctypes.c_size_t]
    lib.mc_forward.argtypes = [ctypes.c_void_p, ctypes.POINTER(ForwardRequest), ctypes.c_void_p]
    lib.mc_forward_output_get.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p]
    lib.mc_forward_output_free.argtypes = [ctypes.c_void_p]
    print("model_context", lib.mc_version().decode())

    # Weights: NumPy sees the read-only flag of the file-backed view; PyTorch shares the memory.
    q = np.from_dlpack(ctx.weight("attn.to_query", 0))
    print(f"numpy weight attn.to_query layer=0 shape={list(q.shape)} "
          f"strides={[s // q.itemsize for s in q.strides]} writeable={q.flags.writeable} sum={c_order_sum(q):.6f}")
    e = torch.from_dlpack(ctx.weight("embedding"))
    print(f"torch weight embedding shape={list(e.shape)} stride={list(e.stride())} dtype={e.dtype}")

    text = b"Hello, world"
    ids = (ctypes.c_uint32 * len(text))()
    n = ctypes.c_size_t()
    check(lib, lib.mc_encode(ctx.handle, text, len(text), ids, len(ids), ctypes.byref(n)), "mc_encode")
    tokens = list(ids[:n.value])
    print(f'tokens "{text.decode()}" -> [{",".join(map(str, tokens))}]')

    acts = (ctypes.c_int32 * 2)(MC_ACT_MLP_POST_ACT, MC_ACT_RESID_POST_LN_F)
    layers = (ctypes.c_int32 * 2)(1, mc.MC_LAYER_NONE)
    req = ForwardRequest()
    check(lib, lib.mc_forward_request_init(ctypes.byref(req), ctypes.sizeof(req)), "mc_forward_request_init")
    req.tokens, req.n_tokens, req.token_type = ctypes.cast(ids, ctypes.c_void_p), len(tokens), MC_TOKENS_UINT32
    req.batch, req.seq_len = 1, len(tokens)
    req.activations, req.layers, req.n_activations = ctypes.cast(acts, ctypes.c_void_p), ctypes.cast(layers, ctypes.c_void_p), 2
    out = ctypes.c_void_p()
    check(lib, lib.mc_forward(ctx.handle, ctypes.byref(req), ctypes.byref(out)), "mc_forward")
    logits = torch.from_dlpack(Activation(lib, out, MC_ACT_LOGITS, mc.MC_LAYER_NONE))
    mlp = np.from_dlpack(Activation(lib, out, MC_ACT_MLP_POST_ACT, 1))
    resid = torch.from_dlpack(Activation(lib, out, MC_ACT_RESID_POST_LN_F, mc.MC_LAYER_NONE))
    lib.mc_forward_output_free(out)  # the tensors taken from it stay valid
    print(f"torch forward logits shape={list(logits.shape)} sum={c_order_sum(logits.numpy()):.6f}")
    print(f"numpy activation mlp.post_act layer=1 shape={list(mlp.shape)} sum={c_order_sum(mlp):.6f}")

    unemb = torch.from_dlpack(ctx.weight("unembedding"))
    ok = torch.allclose(logits[0, -1], resid[0, -1] @ unemb, atol=1e-4, rtol=0)
    print("torch check logits == resid.post_ln_f @ unembedding:", "ok" if ok else "FAILED")
    best = int(torch.argmax(logits[0, -1]))
    piece = ctypes.create_string_buffer(64)
    check(lib, lib.mc_decode_token(ctx.handle, best, piece, 64, ctypes.byref(n)), "mc_decode_token")
    print(f"next token {best} {piece.raw[:n.value]!r}")

    try:
        np.from_dlpack(ctx.weight("attn.to_query", 99))
    except mc.McError as err:
        print(f"error mc_get_weight(attn.to_query, layer 99): {lib.mc_status_name(err.status).decode()}: "
              f"{str(err).split(': ', 1)[1]}")
    ctx.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
