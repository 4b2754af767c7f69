"""A minimal ctypes view of libmodel_context for the Python-side tests (and the ctypes
example): open a context, fetch weights as objects speaking the DLPack protocol."""
import ctypes
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    pass


DLManagedTensor._fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                            ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor)))]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    pass


DLManagedTensorVersioned._fields_ = [
    ("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
    ("deleter", ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensorVersioned))),
    ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]

MC_LAYER_NONE = -1
MC_DIM_NONE = -1


def load_library(path=None):
    path = path or os.environ.get("MC_LIB") or os.path.join(ROOT, "target", "debug", "libmodel_context.so")
    lib = ctypes.CDLL(path)
    lib.mc_last_error.restype = ctypes.c_char_p
    lib.mc_version.restype = ctypes.c_char_p
    lib.mc_weight_location_name.restype = ctypes.c_char_p
    lib.mc_open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.mc_free.argtypes = [ctypes.c_void_p]
    for name, out in (("mc_get_weight", DLManagedTensorVersioned), ("mc_get_weight_legacy", DLManagedTensor)):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_int32, ctypes.c_char_p,
                       ctypes.POINTER(ctypes.POINTER(out))]
    lib.mc_weight_location_from_name.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32)]
    lib.mc_dimension_from_name.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int32)]
    return lib


class McError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"status {status}: {message}")
        self.status = status


_PyCapsule_New = ctypes.pythonapi.PyCapsule_New
_PyCapsule_New.restype = ctypes.py_object
_PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
# The destructor runs inside the capsule's deallocation: it must see a raw pointer, never a
# py_object (taking a reference there would deallocate the capsule a second time).
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", ctypes.pythonapi))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))


def _capsule_destructor(name, struct):
    # An unconsumed capsule still carries its original name: then we own it and free it.
    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def destroy(capsule):
        if _PyCapsule_IsValid(capsule, name):
            p = ctypes.cast(_PyCapsule_GetPointer(capsule, name), ctypes.POINTER(struct))
            p.contents.deleter(p)
    return destroy


_DESTROY_VERSIONED = _capsule_destructor(b"dltensor_versioned", DLManagedTensorVersioned)
_DESTROY_LEGACY = _capsule_destructor(b"dltensor", DLManagedTensor)


class Weight:
    """One weight fetched through the C ABI; speaks `__dlpack__` in versioned or legacy form."""

    def __init__(self, ctx, loc, layer=MC_LAYER_NONE, normalize_dim=MC_DIM_NONE, legacy=False):
        self.ctx, self.args, self.legacy = ctx, (loc, layer, normalize_dim), legacy

    def _fetch(self, legacy):
        struct = DLManagedTensor if legacy else DLManagedTensorVersioned
        out = ctypes.POINTER(struct)()
        fn = self.ctx.lib.mc_get_weight_legacy if legacy else self.ctx.lib.mc_get_weight
        status = fn(self.ctx.handle, *self.args, None, ctypes.byref(out))
        if status != 0:
            raise McError(status, self.ctx.lib.mc_last_error().decode())
        return out

    def __dlpack_device__(self):
        return (1, 0)

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        legacy = self.legacy or max_version is None or max_version[0] < 1
        p = self._fetch(legacy)
        if legacy:
            return _PyCapsule_New(ctypes.cast(p, ctypes.c_void_p), b"dltensor", ctypes.cast(_DESTROY_LEGACY, ctypes.c_void_p))
        return _PyCapsule_New(ctypes.cast(p, ctypes.c_void_p), b"dltensor_versioned",
                              ctypes.cast(_DESTROY_VERSIONED, ctypes.c_void_p))

    def raw(self, legacy=False):
        """The managed tensor itself (caller calls its deleter)."""
        return self._fetch(legacy)


class Context:
    def __init__(self, model, device=b"cpu", lib=None):
        self.lib = lib or load_library()
        self.handle = ctypes.c_void_p()
        status = self.lib.mc_open(model.encode() if isinstance(model, str) else model, device, ctypes.byref(self.handle))
        if status != 0:
            raise McError(status, self.lib.mc_last_error().decode())

    def location(self, name):
        out = ctypes.c_int32()
        assert self.lib.mc_weight_location_from_name(name.encode(), ctypes.byref(out)) == 0, name
        return out.value

    def dimension(self, name):
        out = ctypes.c_int32()
        assert self.lib.mc_dimension_from_name(name.encode(), ctypes.byref(out)) == 0, name
        return out.value

    def weight(self, name, layer=None, normalize_dim=None, legacy=False):
        nd = MC_DIM_NONE if normalize_dim is None else self.dimension(normalize_dim)
        return Weight(self, self.location(name), MC_LAYER_NONE if layer is None else layer, nd, legacy)

    def close(self):
        if self.handle:
            self.lib.mc_free(self.handle)
            self.handle = None
