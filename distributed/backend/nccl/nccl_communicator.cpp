// NCCL backend. Compiled against the CUDA Toolkit wherever it is found; it runs only on a machine
// with a GPU and a CUDA LibTorch (tools/gpu-check.sh runs its tests there).
//
// Ordering, as in flashlight's and nccl-tests' NCCL code: collectives run on a stream of their
// own, which first waits on an event recorded on LibTorch's current stream (so NCCL reads what
// LibTorch wrote), and LibTorch's stream waits on an event recorded after the collective (so
// what follows reads NCCL's result). The host waits for the collective by polling, never in an
// unbounded cudaStreamSynchronize: a stall or an asynchronous NCCL error aborts the communicator.
#include "distributed/backend/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <thread>

#include "core/errors.h"
#include "dtrain/config.h"

#if DTRAIN_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#ifndef NCCL_VERSION
#define NCCL_VERSION(X, Y, Z) ((X)*1000 + (Y)*100 + (Z))
#endif
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 4, 0)
#error "dtrain's NCCL backend needs NCCL 2.4 or newer (ncclCommGetAsyncError, ncclCommAbort)"
#endif

namespace dtrain::distributed {

namespace {

[[noreturn]] void fail(const std::string& call, const std::string& why, int rank, const char* file,
                       int line) {
  throw CommError(call + " failed on rank " + std::to_string(rank) + ": " + why + " (" + file +
                  ":" + std::to_string(line) + ")");
}

#define NCCL_CHECK(call)                                                                        \
  do {                                                                                          \
    const ncclResult_t dtrain_nccl_rc_ = (call);                                                \
    if (dtrain_nccl_rc_ != ncclSuccess)                                                         \
      fail(#call, ncclGetErrorString(dtrain_nccl_rc_), bootstrap_->rank(), __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK(call)                                                                        \
  do {                                                                                          \
    const cudaError_t dtrain_cuda_rc_ = (call);                                                 \
    if (dtrain_cuda_rc_ != cudaSuccess)                                                         \
      fail(#call, cudaGetErrorString(dtrain_cuda_rc_), bootstrap_->rank(), __FILE__, __LINE__); \
  } while (0)

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat:
      return ncclFloat32;
    case torch::kHalf:
      return ncclFloat16;
    case torch::kDouble:
      return ncclFloat64;
    case torch::kInt:
      return ncclInt32;
    case torch::kLong:
      return ncclInt64;
    case torch::kByte:
      return ncclUint8;
    default:
      throw CommError("NCCL: unsupported dtype " + std::string(c10::toString(t)));
  }
}

/// LibTorch's current stream on `device`. A CPU-only LibTorch issues no CUDA work (it cannot
/// make CUDA tensors), so the legacy default stream stands in for it there.
cudaStream_t torch_stream(int device) {
#if DTRAIN_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> bootstrap, int device_index, StallOptions stall)
      : bootstrap_(std::move(bootstrap)), stall_(stall), device_index_(device_index) {
    int devices = 0;
    CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (local_size() > devices) {
      throw ConfigError(std::to_string(local_size()) + " ranks on this host but " +
                        std::to_string(devices) +
                        " visible GPU(s): NCCL needs a GPU of its own for each rank");
    }
    if (device_index_ != local_rank() || device_index_ < 0 || device_index_ >= devices) {
      throw ConfigError("rank " + std::to_string(rank()) +
                        " was given cuda:" + std::to_string(device_index_) + " but is local rank " +
                        std::to_string(local_rank()) + " of " + std::to_string(local_size()) +
                        " with " + std::to_string(devices) +
                        " visible GPU(s): the launcher's local rank variables disagree with MPI");
    }
    CUDA_CHECK(cudaSetDevice(device_index_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    ncclUniqueId id;
    if (rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    torch::Tensor id_bytes =
        torch::from_blob(&id, {static_cast<int64_t>(sizeof(id))}, torch::kByte);
    bootstrap_->broadcast(id_bytes, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, size(), id, rank()));
    if (rank() == 0) {
      int version = 0;
      ncclGetVersion(&version);
      spdlog::info("NCCL {} communicator of {} ranks (this one on cuda:{})", version, size(),
                   device_index_);
    }
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (done_ != nullptr) cudaEventDestroy(done_);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return bootstrap_->rank(); }
  int size() const override { return bootstrap_->size(); }
  int local_rank() const override { return bootstrap_->local_rank(); }
  int local_size() const override { return bootstrap_->local_size(); }
  torch::Device device() const override {
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_index_));
  }

  void allreduce(torch::Tensor& t, ReduceOp op) override {
    check(t, "allreduce");
    if (t.numel() == 0) return;
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    // Integers are averaged with truncation, like the MPI backend; floats by NCCL itself.
    const bool avg_in_nccl = op == ReduceOp::kAverage && t.is_floating_point();
#else
    const bool avg_in_nccl = false;  // no ncclAvg before NCCL 2.10
#endif
    const ncclRedOp_t nccl_op =
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
        avg_in_nccl ? ncclAvg :
#endif
                    ncclSum;
    collective("allreduce", [&](cudaStream_t s) {
      return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), nccl_op, comm_, s);
    });
    if (op == ReduceOp::kAverage && !avg_in_nccl) {
      if (t.is_floating_point()) {
        t.div_(size());
      } else {
        t.div_(size(), "trunc");
      }
    }
  }
  void broadcast(torch::Tensor& t, int root) override {
    check(t, "broadcast");
    if (t.numel() == 0) return;
    collective("broadcast", [&](cudaStream_t s) {
      return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), root, comm_, s);
    });
  }
  torch::Tensor allgather(const torch::Tensor& t) override {
    check(t, "allgather");
    std::vector<int64_t> shape = {size()};
    for (int64_t d : t.sizes()) shape.push_back(d);
    torch::Tensor out = torch::empty(shape, t.options());
    if (t.numel() == 0) return out;
    collective("allgather", [&](cudaStream_t s) {
      return ncclAllGather(t.data_ptr(), out.data_ptr(), static_cast<size_t>(t.numel()),
                           nccl_type(t.scalar_type()), comm_, s);
    });
    return out;
  }
  void barrier() override { bootstrap_->barrier(); }
  std::string agree(uint64_t signature, const std::function<std::string()>& describe,
                    const std::string& what) override {
    return bootstrap_->agree(signature, describe, what);
  }

 private:
  void check(const torch::Tensor& t, const char* call) const {
    if (!t.defined() || !t.is_contiguous() || !t.device().is_cuda() ||
        t.device().index() != device_index_) {
      throw CommError(std::string(call) + " on rank " + std::to_string(rank()) +
                      ": the NCCL backend needs a contiguous tensor on cuda:" +
                      std::to_string(device_index_) + ", got one on " + t.device().str());
    }
    if (comm_ == nullptr) {
      throw CommError(std::string(call) + " on rank " + std::to_string(rank()) +
                      ": the NCCL communicator was aborted after an earlier failure");
    }
  }

  /// Runs one NCCL call between the two stream waits and waits for it, bounded.
  template <typename Launch>
  void collective(const char* what, Launch launch) {
    const cudaStream_t torch = torch_stream(device_index_);
    CUDA_CHECK(cudaEventRecord(ready_, torch));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    NCCL_CHECK(launch(stream_));
    CUDA_CHECK(cudaEventRecord(done_, stream_));
    wait_for(done_, what);
    CUDA_CHECK(cudaStreamWaitEvent(torch, done_, 0));
  }

  /// Polls `event` and NCCL's asynchronous error state, as nccl-tests' testStreamSynchronize
  /// does; warns every stall.warning_seconds and aborts at stall.abort_seconds.
  void wait_for(cudaEvent_t event, const char* what) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    double next_warning = stall_.warning_seconds;
    for (int polls = 0;; ++polls) {
      const cudaError_t state = cudaEventQuery(event);
      if (state == cudaSuccess) return;
      if (state != cudaErrorNotReady) {
        abort_comm();
        fail(std::string("NCCL ") + what, cudaGetErrorString(state), rank(), __FILE__, __LINE__);
      }
      ncclResult_t async = ncclSuccess;
      NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
      if (async != ncclSuccess) {
        abort_comm();
        throw CommError(std::string("NCCL ") + what + " on rank " + std::to_string(rank()) +
                        " (cuda:" + std::to_string(device_index_) +
                        "): NCCL reported an asynchronous error: " + ncclGetErrorString(async) +
                        " (a peer failed or the network between the ranks broke)");
      }
      const double waited = std::chrono::duration<double>(clock::now() - start).count();
      if (waited >= stall_.abort_seconds) {
        abort_comm();
        throw CommError(std::string("NCCL ") + what + " on rank " + std::to_string(rank()) +
                        " (cuda:" + std::to_string(device_index_) + ") did not finish in " +
                        fmt_seconds(waited) + " s (--stall-abort-seconds " +
                        fmt_seconds(stall_.abort_seconds) +
                        "): a peer rank stalled or died; the NCCL communicator was aborted");
      }
      if (waited >= next_warning) {
        spdlog::warn("NCCL {} on rank {} has waited {} s for its peers", what, rank(),
                     fmt_seconds(waited));
        next_warning += stall_.warning_seconds;
      }
      if (polls < 1000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
    }
  }

  static std::string fmt_seconds(double s) { return std::to_string(static_cast<int64_t>(s)); }

  void abort_comm() {
    if (comm_ == nullptr) return;
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }

  std::unique_ptr<Communicator> bootstrap_;
  StallOptions stall_;
  int device_index_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  cudaEvent_t done_ = nullptr;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap,
                                                     int device_index, StallOptions stall) {
  return std::make_unique<NcclCommunicator>(std::move(bootstrap), device_index, stall);
}

}  // namespace dtrain::distributed
