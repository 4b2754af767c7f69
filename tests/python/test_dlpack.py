"""An outside consumer: numpy.from_dlpack and torch.from_dlpack read weights exported over
ctypes, versioned and legacy, and agree with the seed's results (gen_context_golden.py)."""
import json
import os
import sys
import unittest

import torch  # before the library, so both use the same libtorch
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mc  # noqa: E402

GOLDEN = os.environ.get("MC_CONTEXT_GOLDEN_DIR", os.path.join(mc.ROOT, "data", "context_golden"))
DTYPES = {"float32": (np.float32, torch.float32), "float16": (np.float16, torch.float16)}


class DLPackConsumers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(GOLDEN, "manifest.json")) as f:
            cls.manifest = json.load(f)

    def cases(self):
        for ckpt in self.manifest["checkpoints"]:
            ctx = mc.Context(os.path.join(GOLDEN, ckpt["root"]))
            try:
                for case in ckpt["cases"]:
                    if case["normalize_dim"] is None:
                        yield ctx, case
            finally:
                ctx.close()

    def expected(self, case):
        raw = np.fromfile(os.path.join(GOLDEN, case["file"]), dtype=DTYPES[case["dtype"]][0])
        return raw.reshape(case["shape"])

    def test_numpy_and_torch_versioned_and_legacy(self):
        n = 0
        for ctx, case in self.cases():
            exp = self.expected(case)
            for legacy in (False, True):
                w = ctx.weight(case["location"], case["layer"], legacy=legacy)
                a = np.from_dlpack(w)
                self.assertEqual(list(a.shape), case["shape"])
                self.assertEqual([s // a.itemsize for s in a.strides], case["stride"])
                np.testing.assert_array_equal(a, exp)
                if not legacy:
                    self.assertFalse(a.flags.writeable, "read-only flag reaches numpy")
                t = torch.from_dlpack(w)
                self.assertEqual(list(t.shape), case["shape"])
                self.assertEqual(list(t.stride()), case["stride"])
                self.assertEqual(t.dtype, DTYPES[case["dtype"]][1])
                self.assertTrue(torch.equal(t, torch.from_numpy(exp.copy())))
                n += 1
        self.assertGreater(n, 100)

    def test_normalised_weights(self):
        for ctx, case in self.cases():
            w = ctx.weight(case["location"], case["layer"], normalize_dim=case_dim(case))
            t = torch.from_dlpack(w)
            ref = torch.nn.functional.normalize(torch.from_numpy(self.expected(case).copy()).float(), dim=0)
            torch.testing.assert_close(t.float(), ref, rtol=1e-3, atol=1e-5)

    def test_tensor_outlives_context(self):
        ckpt = self.manifest["checkpoints"][0]
        ctx = mc.Context(os.path.join(GOLDEN, ckpt["root"]))
        t = torch.from_dlpack(ctx.weight("embedding"))
        ctx.close()
        case = next(c for c in ckpt["cases"] if c["location"] == "embedding" and c["normalize_dim"] is None)
        self.assertTrue(torch.equal(t, torch.from_numpy(self.expected(case).copy())))

    def test_errors_surface_with_status(self):
        ctx = mc.Context(os.path.join(GOLDEN, "basic"))
        with self.assertRaises(mc.McError) as e:
            np.from_dlpack(ctx.weight("attn.to_query", layer=99))
        self.assertEqual(e.exception.status, 2)
        self.assertIn("layer 99", str(e.exception))
        with self.assertRaises(mc.McError):
            mc.Context("/no/such/model")
        ctx.close()


def case_dim(case):
    # The first axis's dimension name: every location's first axis appears once in its shape.
    return {
        "mlp.to_hidden": "residual_stream_channels", "mlp.to_residual": "mlp_acts",
        "embedding": "vocab_size", "unembedding": "residual_stream_channels",
        "position_embedding": "max_context_length", "attn.to_query": "attn_heads",
        "attn.to_key": "attn_heads", "attn.to_value": "attn_heads", "attn.to_residual": "attn_heads",
        "attn.query_bias": "attn_heads", "attn.key_bias": "attn_heads", "attn.value_bias": "attn_heads",
        "mlp.hidden_bias": "mlp_acts",
    }.get(case["location"], "residual_stream_channels")


if __name__ == "__main__":
    unittest.main(verbosity=2)
