// A C entry point to ExecuTorch's own runtime for the emulated ARM64 target's Python (edgevit/targets/_arm64_runner.py
// loads it with ctypes). Built by `edgevit target setup android-arm64` with an aarch64 cross compiler against the
// headers and runtime libraries of the official `executorch` aarch64 wheel, at the host's ExecuTorch version (see
// edgevit/targets/executorch_runtime.py for why this route). It does what edgevit.export.executorch.load does on
// the host: load the program's "forward" method once, then run it on one float32 input and copy out the first
// (float32) output.
//
// Every function reports failure by returning a negative value or null and writing a message to err[0:errlen].

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using executorch::aten::ScalarType;
using executorch::aten::SizesType;
using executorch::extension::from_blob;
using executorch::extension::module::Module;
using executorch::runtime::Error;

namespace {

void say(char* err, size_t errlen, const std::string& what) {
  if (err != nullptr && errlen > 0) {
    std::snprintf(err, errlen, "%s", what.c_str());
  }
}

std::string code(Error e) {
  return std::string("ExecuTorch error ") + executorch::runtime::to_string(e);
}

}  // namespace

extern "C" {

// Load PATH's "forward" method (weights packed now: XNNPACK's init runs here). Returns a handle or null; the handle
// lives as long as the guest process (one model per process), so there is no free function.
void* edgevit_et_load(const char* path, char* err, size_t errlen) {
  auto module = std::make_unique<Module>(path, Module::LoadMode::File);
  Error e = module->load_method("forward");
  if (e != Error::Ok) {
    say(err, errlen, "cannot load method forward of " + std::string(path) + ": " + code(e));
    return nullptr;
  }
  auto meta = module->method_meta("forward");
  if (!meta.ok() || meta->num_inputs() != 1 || meta->num_outputs() < 1) {
    say(err, errlen, "expected a forward method with one input and at least one output in " + std::string(path));
    return nullptr;
  }
  return module.release();
}

// Number of elements of forward's first output (from the program's metadata), or -1.
int64_t edgevit_et_output_numel(void* handle, char* err, size_t errlen) {
  auto meta = static_cast<Module*>(handle)->method_meta("forward");
  if (!meta.ok()) {
    say(err, errlen, "no method metadata: " + code(meta.error()));
    return -1;
  }
  auto out = meta->output_tensor_meta(0);
  if (!out.ok()) {
    say(err, errlen, "output 0 is not a tensor: " + code(out.error()));
    return -1;
  }
  int64_t numel = 1;
  for (auto s : out->sizes()) {
    numel *= s;
  }
  return numel;
}

// Run forward on the float32 tensor X of shape SIZES[0:NDIM]; copy its first output (float32) into OUT, which holds
// CAPACITY elements. Returns the number of elements written, or -1.
int64_t edgevit_et_forward(
    void* handle,
    float* x,
    const int64_t* sizes,
    int ndim,
    float* out,
    int64_t capacity,
    char* err,
    size_t errlen) {
  std::vector<SizesType> shape(sizes, sizes + ndim);
  auto input = from_blob(x, shape, ScalarType::Float);
  auto result = static_cast<Module*>(handle)->forward(input);
  if (!result.ok()) {
    say(err, errlen, "forward failed: " + code(result.error()));
    return -1;
  }
  const auto& value = result->at(0);
  if (!value.isTensor() || value.toTensor().scalar_type() != ScalarType::Float) {
    say(err, errlen, "forward's first output is not a float32 tensor");
    return -1;
  }
  const auto& tensor = value.toTensor();
  const int64_t numel = tensor.numel();
  if (numel > capacity) {
    say(err, errlen, "output has " + std::to_string(numel) + " elements, buffer " + std::to_string(capacity));
    return -1;
  }
  std::memcpy(out, tensor.const_data_ptr<float>(), numel * sizeof(float));
  return numel;
}

}  // extern "C"
