// Weight products through oneDNN (mkldnn::_linear_pointwise, the operator PyTorch's CPU
// compiler uses), on a weight reordered once into oneDNN's own layout
// (mkldnn::_reorder_linear_weight; libtorch's `linear` reorders a bfloat16 weight on every
// call) or on a plain float32 matrix. These two
// operators are registered by libtorch but not part of the ATen API tch wraps, so they are
// called through the dispatcher here. Every entry point catches C++ exceptions (`guarded.h`).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

#include "guarded.h"

namespace {

using mc::guarded;

at::Tensor call(const char *name, std::vector<c10::IValue> stack) {
  auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
  op.callBoxed(&stack);
  return stack.at(0).toTensor();
}

}  // namespace

extern "C" {

// `w` [out, in] reordered for products of about `rows` rows.
at::Tensor *mc_packed_reorder(const at::Tensor *w, int64_t rows) {
  return guarded([&] {
    return call("mkldnn::_reorder_linear_weight", {*w, c10::IValue(rows)});
  });
}

// x [rows, in] times the reordered or plain weight, plus `bias` [out] when not null.
at::Tensor *mc_packed_linear(const at::Tensor *x, const at::Tensor *w, const at::Tensor *bias) {
  return guarded([&] {
    c10::IValue b = bias ? c10::IValue(*bias) : c10::IValue();
    c10::impl::GenericList scalars(c10::OptionalType::create(c10::NumberType::get()));
    return call("mkldnn::_linear_pointwise",
                {*x, *w, b, c10::IValue(std::string("none")), c10::IValue(scalars),
                 c10::IValue(std::string(""))});
  });
}

}  // extern "C"
