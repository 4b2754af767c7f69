#!/usr/bin/env python3
"""Write golden torch.save files and a manifest for the Rust .pt reader's tests.

Usage: gen_pt_golden.py [OUT_DIR]     (default: <repo>/data/pt_golden)

Every "good" file is written by the real torch.save (seeded), read back with torch.load, and
described in OUT_DIR/manifest.json: per tensor its dtype, shape, stride, storage offset, which
tensors of the file share a storage, and a .bin file with `tensor.contiguous()` raw bytes as
torch.load returns them. Some files are also rewritten with Python's zipfile as deflated and as
unaligned (stored, odd data offsets) archives; torch.load must still read those the same way.

Hostile files (forbidden globals, truncated / missing records, bad geometry, legacy format,
deep nesting, lying zip sizes, ...) are listed under "hostile"; the Rust tests hard-code what
our reader must answer. For each, the manifest records what torch.load(weights_only=True) said.
"""

import io
import json
import shutil
import struct
import sys
import zipfile
from pathlib import Path

import torch

SEED = 1234
DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.float64,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]
SHAPES = [(), (5,), (3, 4), (2, 3, 4), (2, 3, 2, 3)]


def dtype_name(dt):
    return str(dt).removeprefix("torch.")


def random_tensor(shape, dt, gen):
    if dt.is_floating_point:
        return torch.randn(shape, generator=gen, dtype=torch.float64).to(dt)
    if dt == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    info = torch.iinfo(dt)
    return torch.randint(max(info.min, -(2**62)), min(info.max, 2**62), shape, generator=gen, dtype=dt)


def raw_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


class Golden:
    def __init__(self, out):
        self.out = out
        self.files = []
        self.hostile = []
        (out / "bin").mkdir(parents=True, exist_ok=True)
        (out / "markers").mkdir(parents=True, exist_ok=True)

    def describe(self, name, variant, weights_only=True):
        """Read `name` back with torch.load and record what it returned."""
        obj = torch.load(self.out / name, weights_only=weights_only)
        if isinstance(obj, torch.Tensor):
            kind, items = "tensor", [(None, obj)]
        else:
            assert isinstance(obj, dict), type(obj)
            kind, items = "dict", list(obj.items())
        groups = {}
        tensors = []
        for i, (key, t) in enumerate(items):
            ptr = t.untyped_storage().data_ptr()
            group = groups.setdefault(ptr, len(groups))
            stem = name.removesuffix(".pt") + ("" if key is None else f"__{i}")
            bin_path = f"bin/{stem}.bin"
            (self.out / bin_path).write_bytes(raw_bytes(t))
            tensors.append(
                {
                    "key": key,
                    "dtype": dtype_name(t.dtype),
                    "shape": list(t.shape),
                    "stride": list(t.stride()),
                    "storage_offset": t.storage_offset(),
                    "storage_group": group,
                    "bin": bin_path,
                }
            )
        self.files.append({"file": name, "variant": variant, "kind": kind, "tensors": tensors})
        return obj

    def save(self, name, obj):
        torch.save(obj, self.out / name)
        loaded = self.describe(name, "torch")
        check_same(obj, loaded)

    def rewrite(self, src, variant):
        """Copy `src` as a deflated or an unaligned (stored, odd data offsets) archive."""
        name = src.removesuffix(".pt") + f"__{variant}.pt"
        with zipfile.ZipFile(self.out / src) as zin:
            entries = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zout:
            for fname, data in entries:
                info = zipfile.ZipInfo(fname, date_time=(2020, 1, 1, 0, 0, 0))
                if variant == "deflated":
                    info.compress_type = zipfile.ZIP_DEFLATED
                else:
                    info.compress_type = zipfile.ZIP_STORED
                    # Local header is 30 bytes + name + extra; make the data start odd.
                    start = buf.tell() + 30 + len(fname.encode())
                    if start % 2 == 0:
                        info.extra = struct.pack("<HHB", 0xCAFE, 1, 0)
                zout.writestr(info, data)
        (self.out / name).write_bytes(buf.getvalue())
        if variant == "unaligned":
            with zipfile.ZipFile(self.out / name) as z:
                for i in z.infolist():
                    if "/data/" in i.filename:
                        # header_offset + fixed header + name + local extra
                        raw = (self.out / name).read_bytes()
                        n, m = struct.unpack("<HH", raw[i.header_offset + 26 : i.header_offset + 30])
                        assert (i.header_offset + 30 + n + m) % 2 == 1, i.filename
        loaded = self.describe(name, variant)
        check_same(torch.load(self.out / src, weights_only=True), loaded)

    def hostile_file(self, name, data, note):
        path = self.out / name
        path.write_bytes(data)
        try:
            torch.load(path, weights_only=True)
            torch_says = "loaded"
        except Exception as e:  # noqa: BLE001 - we only record what torch said
            torch_says = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        self.hostile.append({"file": name, "note": note, "torch_weights_only": torch_says})


def check_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        assert a.storage_offset() == b.storage_offset()
        assert raw_bytes(a) == raw_bytes(b)
    else:
        assert list(a.keys()) == list(b.keys())
        for k in a:
            check_same(a[k], b[k])


# ---- hand-written pickles (protocol 2 opcodes, as torch emits them) -------------------------


def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    if 0 <= v < 256:
        return b"K" + bytes([v])
    if -(2**31) <= v < 2**31:
        return b"J" + struct.pack("<i", v)
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def p_tuple(items):
    return b"(" + b"".join(items) + b"t"


def p_tensor(storage_class, key, numel, offset, size, stride):
    pid = p_tuple([p_str("storage"), b"ctorch\n" + storage_class.encode() + b"\n", p_str(key), p_str("cpu"), p_int(numel)])
    args = p_tuple(
        [
            pid + b"Q",
            p_int(offset),
            p_tuple([p_int(s) for s in size]),
            p_tuple([p_int(s) for s in stride]),
            b"\x89",
            b"ccollections\nOrderedDict\n)R",
        ]
    )
    return b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"


def torch_zip(pickle_bytes, records, folder="archive", byteorder=b"little"):
    """A zip laid out like torch's: folder/data.pkl, folder/data/<key>, byteorder, version."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", pickle_bytes)
        z.writestr(f"{folder}/byteorder", byteorder)
        for key, data in records.items():
            z.writestr(f"{folder}/data/{key}", data)
        z.writestr(f"{folder}/version", b"3\n")
    return buf.getvalue()


def rezip(src_bytes, edit):
    """Rewrite a zip, passing each (name, data) through edit (returning None drops it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(src_bytes)) as zin, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zout:
        for i in zin.infolist():
            data = edit(i.filename, zin.read(i.filename))
            if data is not None:
                zout.writestr(i.filename, data)
    return buf.getvalue()


def make_hostile(g):
    out = g.out
    f32 = struct.pack("<12f", *range(12))

    # Forbidden globals whose call would create a marker file; torch.load(weights_only=False)
    # proves each file is live (it runs the call), then the marker is removed again.
    os_marker = (out / "markers" / "os_system_ran").resolve()
    eval_marker = (out / "markers" / "builtins_eval_ran").resolve()
    posix_marker = (out / "markers" / "posix_system_ran").resolve()
    live = [
        ("forbidden_os_system.pt", b"\x80\x02cos\nsystem\n" + p_str(f"touch '{os_marker}'") + b"\x85R.", os_marker),
        (
            "forbidden_builtins_eval.pt",
            b"\x80\x02cbuiltins\neval\n" + p_str(f"open({str(eval_marker)!r}, 'w').close()") + b"\x85R.",
            eval_marker,
        ),
        (
            # Protocol 4 spelling (STACK_GLOBAL), hidden as a value in an otherwise valid state dict.
            "forbidden_stack_global.pt",
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}("
            + p_str("ok")
            + p_tensor("FloatStorage", "0", 12, 0, (12,), (1,))
            + p_str("evil")
            + b"\x8c\x05posix\x8c\x06system\x93"
            + p_str(f"touch '{posix_marker}'")
            + b"\x85Ru.",
            posix_marker,
        ),
    ]
    markers = []
    for name, pkl, marker in live:
        g.hostile_file(name, torch_zip(pkl, {"0": f32}), f"REDUCE of a forbidden global; a real call would create {marker}")
        assert not marker.exists()
        try:
            torch.load(out / name, weights_only=False)
        except Exception:  # noqa: BLE001 - the evil call's return value is not a tensor
            pass
        assert marker.exists(), f"{name} did not run under torch.load(weights_only=False)"
        marker.unlink()
        markers.append(str(marker))

    g.hostile_file("empty_file.pt", b"", "empty file")
    g.hostile_file("not_zip.pt", b"this is not a zip archive, just some text\n" * 4, "plain text")

    legacy = io.BytesIO()
    torch.save(torch.arange(6, dtype=torch.float32), legacy, _use_new_zipfile_serialization=False)
    g.hostile_file("legacy.pt", legacy.getvalue(), "torch.save(..., _use_new_zipfile_serialization=False)")

    good = torch_zip(p_tensor("FloatStorage", "0", 12, 0, (3, 4), (4, 1)) + b".", {"0": f32})
    assert torch.equal(torch.load(io.BytesIO(good), weights_only=True), torch.arange(12.0).reshape(3, 4))
    g.hostile_file(
        "truncated_record.pt",
        rezip(good, lambda n, d: d[:20] if n.endswith("/data/0") else d),
        "data/0 holds 20 of the 48 bytes the storage needs",
    )
    g.hostile_file(
        "missing_record.pt",
        rezip(good, lambda n, d: None if n.endswith("/data/0") else d),
        "no data/0 record",
    )
    g.hostile_file(
        "big_endian.pt",
        rezip(good, lambda n, d: b"big" if n.endswith("/byteorder") else d),
        "byteorder says big",
    )
    g.hostile_file(
        "strides_outside.pt",
        torch_zip(p_tensor("FloatStorage", "0", 12, 2, (3, 4), (4, 1)) + b".", {"0": f32}),
        "offset 2 + view of 12 elements reaches element 13 of a 12-element storage",
    )
    g.hostile_file(
        "negative_stride.pt",
        torch_zip(p_tensor("FloatStorage", "0", 12, 11, (12,), (-1,)) + b".", {"0": f32}),
        "stride -1",
    )
    g.hostile_file(
        "numel_overflow.pt",
        torch_zip(p_tensor("FloatStorage", "0", 12, 0, (2**40, 2**40), (0, 0)) + b".", {"0": f32}),
        "size 2^40 x 2^40 overflows the element count",
    )
    g.hostile_file(
        "storage_too_big.pt",
        torch_zip(p_tensor("FloatStorage", "0", 2**40, 0, (12,), (1,)) + b".", {"0": f32}),
        "pickle claims a 2^40-element storage over a 48-byte record",
    )
    depth = 100_000
    g.hostile_file(
        "deep_nesting.pt",
        torch_zip(b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b".", {}),
        f"{depth} nested lists",
    )

    # Zip bomb: data/0 inflates to 64 MiB while the central directory says 48 bytes.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", p_tensor("FloatStorage", "0", 12, 0, (12,), (1,)) + b".")
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/data/0", b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("archive/version", b"3\n")
    bomb = bytearray(buf.getvalue())
    eocd = bomb.rindex(b"PK\x05\x06")
    cd = struct.unpack_from("<I", bomb, eocd + 16)[0]
    while True:
        assert bomb[cd : cd + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", bomb, cd + 28)
        if bomb[cd + 46 : cd + 46 + n] == b"archive/data/0":
            break
        cd += 46 + n + m + k
    struct.pack_into("<I", bomb, cd + 24, 48)  # uncompressed size in the central directory
    local = struct.unpack_from("<I", bomb, cd + 42)[0]
    struct.pack_into("<I", bomb, local + 22, 48)  # and in the local header
    g.hostile_file("zip_bomb.pt", bytes(bomb), "data/0 declares 48 bytes but inflates to 64 MiB")
    return markers


def main():
    repo = Path(__file__).resolve().parent.parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "data" / "pt_golden"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    g = Golden(out)

    for dt in DTYPES:
        for shape in SHAPES:
            g.save(f"{dtype_name(dt)}_{len(shape)}d.pt", random_tensor(shape, dt, gen))

    # The archive's top-level folder is the file stem: cover every stem length up to 48 (the
    # zip crate's default offset detection once failed on all 21-character ones).
    stems = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL"
    for k in range(1, len(stems) + 1):
        g.save(f"{stems[:k]}.pt", torch.randn(3 * k, generator=gen))
    g.save("xf_layers.0.ln_1.bias.pt", torch.randn(768, generator=gen))

    base = torch.randn(6, 8, generator=gen)
    g.save("view_transposed.pt", base.t())
    g.save("view_sliced.pt", base[1:5, ::3])
    g.save("view_offset.pt", base[2:4])
    g.save("view_expanded.pt", torch.randn(3, 1, generator=gen).expand(3, 5))
    g.save("view_permuted_4d.pt", torch.randn(2, 3, 4, 5, generator=gen).permute(3, 1, 0, 2))
    g.save("view_f16_narrow.pt", random_tensor((7, 9), torch.float16, gen).narrow(1, 2, 4))
    g.save("view_bf16_column.pt", random_tensor((5, 6), torch.bfloat16, gen)[:, 3])
    g.save("view_i64_step.pt", torch.arange(40, dtype=torch.int64).reshape(5, 8)[::2, 1::3])
    g.save("empty_tensor.pt", torch.zeros(0, 3))
    g.save("large_f32.pt", torch.randn(256, 1024, generator=gen))
    g.save("requires_grad.pt", torch.randn(4, 4, generator=gen).requires_grad_())
    shared = torch.randn(4, 6, generator=gen)
    g.save("shared_storage.pt", {"base": shared, "transposed": shared.t(), "row": shared[2], "other": torch.ones(3)})
    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3), torch.nn.BatchNorm1d(3)
    )
    g.save("state_dict.pt", model.state_dict())
    g.save(
        "plain_dict.pt",
        {"w": torch.randn(2, 3, generator=gen), "ids": torch.arange(5), "mask": torch.tensor([True, False])},
    )
    g.save("parameter.pt", torch.nn.Parameter(torch.randn(3, 3, generator=gen)))
    for proto in (4, 5):
        # Newer pickle protocols bring FRAME, MEMOIZE, SHORT_BINUNICODE and STACK_GLOBAL
        # (torch's weights_only unpickler refuses FRAME, so read back our own file unrestricted).
        name = f"protocol{proto}_dict.pt"
        obj = {"a": torch.randn(2, 5, generator=gen).t(), "b": torch.arange(7, dtype=torch.int32)[2:]}
        torch.save(obj, g.out / name, pickle_protocol=proto)
        check_same(obj, g.describe(name, "torch", weights_only=False))

    for src in ["float32_2d.pt", "bfloat16_3d.pt", "bool_1d.pt", "shared_storage.pt", "state_dict.pt", "parameter.pt", "view_sliced.pt", "empty_tensor.pt"]:
        g.rewrite(src, "deflated")
    # Unaligned copies only of multi-byte dtypes (any offset is aligned for one-byte ones).
    for src in ["float32_2d.pt", "float16_4d.pt", "int64_1d.pt", "shared_storage.pt", "state_dict.pt", "view_transposed.pt"]:
        g.rewrite(src, "unaligned")

    markers = make_hostile(g)
    manifest = {
        "torch_version": torch.__version__,
        "seed": SEED,
        "files": g.files,
        "hostile": g.hostile,
        "markers": markers,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"wrote {len(g.files)} golden files and {len(g.hostile)} hostile files to {out}")


if __name__ == "__main__":
    main()
