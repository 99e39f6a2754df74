// NCCL backend. Compiled against the CUDA Toolkit; on machines without a GPU it is built but
// never run (dtrain's CI has no GPU: this path is untested there).
#include "distributed/backend/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <spdlog/spdlog.h>

#include "core/errors.h"

namespace dtrain::distributed {

namespace {

[[noreturn]] void fail(const std::string& call, const std::string& why, int rank, const char* file,
                       int line) {
  throw CommError(call + " failed on rank " + std::to_string(rank) + ": " + why + " (" + file +
                  ":" + std::to_string(line) + ")");
}

#define NCCL_CHECK(call)                                                                  \
  do {                                                                                    \
    const ncclResult_t dtrain_nccl_rc_ = (call);                                          \
    if (dtrain_nccl_rc_ != ncclSuccess)                                                   \
      fail(#call, ncclGetErrorString(dtrain_nccl_rc_), mpi_->rank(), __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK(call)                                                                  \
  do {                                                                                    \
    const cudaError_t dtrain_cuda_rc_ = (call);                                           \
    if (dtrain_cuda_rc_ != cudaSuccess)                                                   \
      fail(#call, cudaGetErrorString(dtrain_cuda_rc_), mpi_->rank(), __FILE__, __LINE__); \
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

class NcclCommunicator : public Communicator {
 public:
  explicit NcclCommunicator(std::unique_ptr<MpiCommunicator> mpi) : mpi_(std::move(mpi)) {
    int devices = 0;
    CUDA_CHECK(cudaGetDeviceCount(&devices));
    if (devices <= 0) throw CommError("NCCL backend: no CUDA device visible");
    device_index_ = mpi_->local_rank() % devices;
    if (mpi_->local_size() > devices) {
      spdlog::warn("{} local ranks share {} GPU(s)", mpi_->local_size(), devices);
    }
    CUDA_CHECK(cudaSetDevice(device_index_));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ncclUniqueId id;
    if (mpi_->rank() == 0) NCCL_CHECK(ncclGetUniqueId(&id));
    torch::Tensor id_bytes =
        torch::from_blob(&id, {static_cast<int64_t>(sizeof(id))}, torch::kByte);
    mpi_->broadcast(id_bytes, 0);
    NCCL_CHECK(ncclCommInitRank(&comm_, mpi_->size(), id, mpi_->rank()));
    spdlog::warn("NCCL backend on cuda:{}: compiled in CI but untested there (no GPU)",
                 device_index_);
  }
  ~NcclCommunicator() override {
    if (comm_ != nullptr) ncclCommDestroy(comm_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  std::string backend() const override { return "nccl"; }
  int rank() const override { return mpi_->rank(); }
  int size() const override { return mpi_->size(); }
  int local_rank() const override { return mpi_->local_rank(); }
  int local_size() const override { return mpi_->local_size(); }
  torch::Device device() const override { return torch::Device(torch::kCUDA, device_index_); }

  void allreduce(torch::Tensor& t, ReduceOp op) override {
    check(t, "allreduce");
    if (t.numel() == 0) return;
    // ncclAvg would truncate nothing for floats; integers are averaged like the MPI backend.
    const bool avg_in_nccl = op == ReduceOp::kAverage && t.is_floating_point();
    NCCL_CHECK(ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                             nccl_type(t.scalar_type()), avg_in_nccl ? ncclAvg : ncclSum, comm_,
                             stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (op == ReduceOp::kAverage && !avg_in_nccl) t.div_(size(), "trunc");
  }
  void broadcast(torch::Tensor& t, int root) override {
    check(t, "broadcast");
    if (t.numel() == 0) return;
    NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                             nccl_type(t.scalar_type()), root, comm_, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  torch::Tensor allgather(const torch::Tensor& t) override {
    check(t, "allgather");
    std::vector<int64_t> shape = {size()};
    for (int64_t d : t.sizes()) shape.push_back(d);
    torch::Tensor out = torch::empty(shape, t.options());
    if (t.numel() == 0) return out;
    NCCL_CHECK(ncclAllGather(t.data_ptr(), out.data_ptr(), static_cast<size_t>(t.numel()),
                             nccl_type(t.scalar_type()), comm_, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    return out;
  }
  void barrier() override { mpi_->barrier(); }
  std::string agree(uint64_t signature, const std::function<std::string()>& describe,
                    const std::string& what) override {
    return mpi_->agree(signature, describe, what);
  }

 private:
  void check(const torch::Tensor& t, const char* call) const {
    if (!t.defined() || !t.is_contiguous() || !t.device().is_cuda()) {
      throw CommError(std::string(call) + ": the NCCL backend needs a contiguous CUDA tensor");
    }
  }

  std::unique_ptr<MpiCommunicator> mpi_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_index_ = 0;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<MpiCommunicator> mpi) {
  return std::make_unique<NcclCommunicator>(std::move(mpi));
}

}  // namespace dtrain::distributed
