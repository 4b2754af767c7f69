// The one way a C++ entry point of this crate reports failure: a null result, and the exception's
// message in a thread-local string the Rust side reads (`mc_cpp_last_error`, gemv.cpp; `cpp.rs`).
#pragma once

#include <ATen/core/Tensor.h>

#include <exception>
#include <string>

namespace mc {

inline thread_local std::string last_error;

// A heap tensor for Rust to own (tch frees it), or null with `last_error` set.
template <class F>
at::Tensor *guarded(F f) {
  try {
    return new at::Tensor(f());
  } catch (const std::exception &e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return nullptr;
}

}  // namespace mc
