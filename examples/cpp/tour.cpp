// The C tour (examples/c/tour.c) in C++: every object the library hands out is owned by a
// std::unique_ptr whose deleter is the object's one free function, failures become
// exceptions carrying the status and message, and the output is the C tour's, line for line.
//
//   c++ -std=c++17 tour.cpp $(pkg-config --cflags --libs model_context) -o tour
//   ./tour MODEL_DIR
#include <model_context.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mc {

// A failed call: the status (one per error class) and mc_last_error()'s message, read on the
// thread that made the call.
struct Error : std::runtime_error {
  mc_status status;
  std::string message;
  Error(const char *what, mc_status s, std::string msg)
      : std::runtime_error(std::string(what) + ": " + mc_status_name(s) + ": " + msg),
        status(s), message(std::move(msg)) {}
};

inline void check(mc_status s, const char *what) {
  if (s != MC_OK) throw Error(what, s, mc_last_error());
}

// RAII owners, one per object type, each calling that type's free function (all accept NULL).
struct ContextFree {
  void operator()(mc_context *c) const noexcept { mc_free(c); }
};
struct OutputFree {
  void operator()(mc_forward_output *o) const noexcept { mc_forward_output_free(o); }
};
struct TensorFree {  // the DLPack deleter, called exactly once, from any thread
  void operator()(DLManagedTensorVersioned *t) const noexcept {
    if (t && t->deleter) t->deleter(t);
  }
};
struct StringFree {
  void operator()(char *s) const noexcept { mc_string_free(s); }
};
using Context = std::unique_ptr<mc_context, ContextFree>;
using ForwardOutput = std::unique_ptr<mc_forward_output, OutputFree>;
using Tensor = std::unique_ptr<DLManagedTensorVersioned, TensorFree>;
using String = std::unique_ptr<char, StringFree>;

inline Context open(const char *model, const char *device) {
  mc_context *c = nullptr;
  check(mc_open(model, device, &c), "mc_open");
  return Context(c);
}

inline std::string config_json(const mc_context *c) {
  char *s = nullptr;
  check(mc_config_json(c, &s), "mc_config_json");
  return String(s).get();
}

inline int64_t dim(const mc_context *c, mc_dimension d) {
  int64_t n = 0;
  check(mc_dim_size(c, d, &n), "mc_dim_size");
  return n;
}

inline Tensor weight(const mc_context *c, mc_weight_location loc, int32_t layer) {
  DLManagedTensorVersioned *t = nullptr;
  check(mc_get_weight(c, loc, layer, MC_DIM_NONE, nullptr, &t), "mc_get_weight");
  return Tensor(t);
}

inline std::vector<uint32_t> encode(const mc_context *c, const std::string &text) {
  std::vector<uint32_t> ids(text.size());  // one id per byte always suffices
  size_t n = 0;
  check(mc_encode(c, text.data(), text.size(), ids.data(), ids.size(), &n), "mc_encode");
  ids.resize(n);
  return ids;
}

inline std::string decode(const mc_context *c, const std::vector<uint32_t> &ids) {
  size_t n = 0;
  check(mc_decode(c, ids.data(), ids.size(), nullptr, 0, &n), "mc_decode");  // size probe
  std::string bytes(n, '\0');
  check(mc_decode(c, ids.data(), ids.size(), bytes.data(), bytes.size(), &n), "mc_decode");
  return bytes;
}

inline std::string decode_token(const mc_context *c, uint32_t id) {
  size_t n = 0;
  check(mc_decode_token(c, id, nullptr, 0, &n), "mc_decode_token");
  std::string bytes(n, '\0');
  check(mc_decode_token(c, id, bytes.data(), bytes.size(), &n), "mc_decode_token");
  return bytes;
}

struct ActivationRequest {
  mc_activation act;
  int32_t layer;
};

inline ForwardOutput forward(const mc_context *c, const std::vector<uint32_t> &ids,
                             const std::vector<ActivationRequest> &wanted) {
  std::vector<mc_activation> acts;
  std::vector<int32_t> layers;
  for (const auto &w : wanted) {
    acts.push_back(w.act);
    layers.push_back(w.layer);
  }
  mc_forward_request req;
  check(mc_forward_request_init(&req, sizeof req), "mc_forward_request_init");
  req.tokens = ids.data();
  req.n_tokens = ids.size();
  req.token_type = MC_TOKENS_UINT32;
  req.batch = 1;
  req.seq_len = static_cast<int64_t>(ids.size());
  req.activations = acts.data();
  req.layers = layers.data();
  req.n_activations = acts.size();
  mc_forward_output *out = nullptr;
  check(mc_forward(c, &req, &out), "mc_forward");
  return ForwardOutput(out);
}

inline Tensor get(const mc_forward_output *out, mc_activation act, int32_t layer) {
  DLManagedTensorVersioned *t = nullptr;
  check(mc_forward_output_get(out, act, layer, &t), "mc_forward_output_get");
  return Tensor(t);
}

}  // namespace mc

// A float32 CPU tensor read through its strides.
struct View {
  const DLTensor &t;
  explicit View(const mc::Tensor &m) : t(m->dl_tensor) {
    if (t.device.device_type != kDLCPU || t.dtype.code != kDLFloat || t.dtype.bits != 32)
      throw std::runtime_error("this tour reads float32 tensors on the CPU only");
  }
  double at(int64_t offset) const {
    return reinterpret_cast<const float *>(static_cast<const char *>(t.data) + t.byte_offset)[offset];
  }
  int64_t offset_of(int64_t flat) const {
    int64_t offset = 0;
    for (int i = t.ndim - 1; i >= 0; i--) {
      offset += (flat % t.shape[i]) * t.strides[i];
      flat /= t.shape[i];
    }
    return offset;
  }
  double sum() const {
    int64_t n = 1;
    for (int i = 0; i < t.ndim; i++) n *= t.shape[i];
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += at(offset_of(i));
    return s;
  }
};

static std::string dims(const int64_t *v, int n) {
  std::string s = "[";
  for (int i = 0; i < n; i++) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

static std::string quoted(const std::string &bytes) {
  std::string s = "\"";
  char hex[8];
  for (unsigned char c : bytes) {
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      s += static_cast<char>(c);
    } else {
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      s += hex;
    }
  }
  return s + "\"";
}

static void describe(const char *kind, const char *name, int32_t layer, const mc::Tensor &m) {
  View v(m);
  std::string l = layer == MC_LAYER_NONE ? "-" : std::to_string(layer);
  std::printf("%s %s layer=%s shape=%s strides=%s dtype=float32 sum=%.6f\n", kind, name, l.c_str(),
              dims(v.t.shape, v.t.ndim).c_str(), dims(v.t.strides, v.t.ndim).c_str(), v.sum());
}

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  try {
    mc::Context ctx = mc::open(argv[1], "cpu");
    const mc_context *c = ctx.get();
    std::printf("model_context %s\n", mc_version());
    std::printf("config %s\n", mc::config_json(c).c_str());
    int64_t vocab = mc::dim(c, MC_DIM_VOCAB_SIZE), d_model = mc::dim(c, MC_DIM_RESIDUAL_STREAM_CHANNELS);
    std::printf("dims layers=%lld d_model=%lld heads=%lld vocab=%lld\n",
                static_cast<long long>(mc::dim(c, MC_DIM_LAYERS)), static_cast<long long>(d_model),
                static_cast<long long>(mc::dim(c, MC_DIM_ATTN_HEADS)), static_cast<long long>(vocab));

    describe("weight", "attn.to_query", 0, mc::weight(c, MC_WEIGHT_ATTN_TO_QUERY, 0));
    describe("weight", "embedding", MC_LAYER_NONE, mc::weight(c, MC_WEIGHT_EMBEDDING, MC_LAYER_NONE));

    std::string prompt = "Hello, world";
    std::vector<uint32_t> ids = mc::encode(c, prompt);
    std::string list;
    for (size_t i = 0; i < ids.size(); i++) list += (i ? "," : "") + std::to_string(ids[i]);
    std::printf("tokens \"%s\" -> [%s]\n", prompt.c_str(), list.c_str());
    std::printf("decode -> %s\n", quoted(mc::decode(c, ids)).c_str());

    mc::Tensor logits, mlp, resid;
    {
      mc::ForwardOutput out =
          mc::forward(c, ids, {{MC_ACT_MLP_POST_ACT, 1}, {MC_ACT_RESID_POST_LN_F, MC_LAYER_NONE}});
      logits = mc::get(out.get(), MC_ACT_LOGITS, MC_LAYER_NONE);
      mlp = mc::get(out.get(), MC_ACT_MLP_POST_ACT, 1);
      resid = mc::get(out.get(), MC_ACT_RESID_POST_LN_F, MC_LAYER_NONE);
    }  // the output is freed here; the tensors taken from it stay valid
    describe("forward", "logits", MC_LAYER_NONE, logits);
    describe("activation", mc_activation_name(MC_ACT_MLP_POST_ACT), 1, mlp);
    describe("activation", mc_activation_name(MC_ACT_RESID_POST_LN_F), MC_LAYER_NONE, resid);

    mc::Tensor unemb = mc::weight(c, MC_WEIGHT_UNEMBEDDING, MC_LAYER_NONE);
    View L(logits), H(resid), W(unemb);
    int64_t last = static_cast<int64_t>(ids.size()) - 1, best = 0;
    double max_diff = 0.0;
    for (int64_t v = 0; v < vocab; v++) {
      double dot = 0.0;
      for (int64_t d = 0; d < d_model; d++)
        dot += H.at(last * H.t.strides[1] + d * H.t.strides[2]) * W.at(d * W.t.strides[0] + v * W.t.strides[1]);
      double l = L.at(last * L.t.strides[1] + v * L.t.strides[2]);
      max_diff = std::fmax(max_diff, std::fabs(l - dot));
      if (l > L.at(last * L.t.strides[1] + best * L.t.strides[2])) best = v;
    }
    std::printf("check logits == resid.post_ln_f @ unembedding: %s\n", max_diff < 1e-4 ? "ok" : "FAILED");
    std::printf("next token %lld %s\n", static_cast<long long>(best),
                quoted(mc::decode_token(c, static_cast<uint32_t>(best))).c_str());

    try {
      mc::weight(c, MC_WEIGHT_ATTN_TO_QUERY, 99);
    } catch (const mc::Error &e) {
      std::printf("error mc_get_weight(attn.to_query, layer 99): %s: %s\n", mc_status_name(e.status),
                  e.message.c_str());
    }
    try {
      mc::open("/no/such/model", "cpu");
    } catch (const mc::Error &e) {
      std::printf("error mc_open(/no/such/model): %s: %s\n", mc_status_name(e.status), e.message.c_str());
    }
    return max_diff < 1e-4 ? 0 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
