// NCCL half of the tbrm-dist bridge, compiled only when build.rs finds libtorch_cuda.so plus
// the CUDA runtime and NCCL headers (the CUDA torch wheel pulls them in as the
// nvidia-cuda-runtime and nvidia-nccl pip packages). It lives in its own translation unit
// because ProcessGroupNCCL.hpp drags in the CUDA headers, which the Gloo half does not need.

// ProcessGroupNCCL.hpp is empty unless this is defined (torch's own build defines it globally).
#define USE_C10D_NCCL 1

#include "bridge.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> tbrm_dist_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world_size,
    int device_index,
    std::chrono::milliseconds timeout) {
  // Runtime check: the binary may run on a machine without a GPU or driver even though it was
  // built against CUDA libtorch.
  const auto devices = static_cast<int>(c10::cuda::device_count());
  TORCH_CHECK(
      devices > 0, "NCCL backend needs a CUDA device, but CUDA reports none available");
  TORCH_CHECK(
      device_index >= 0 && device_index < devices,
      "NCCL device index (LOCAL_RANK) ",
      device_index,
      " out of range: ",
      devices,
      " CUDA device(s) visible");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, opts);
  // Binding the device makes the communicator for it eagerly (one per rank, on LOCAL_RANK's
  // GPU) instead of guessing the device from the rank at the first collective.
  pg->setBoundDeviceId(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
  return pg;
}
