// The one-process communicator: what `--distributed ring` runs on without an MPI launcher.
#include "distributed/communicator.h"

namespace dtrain::distributed {

namespace {

class LocalCommunicator : public Communicator {
 public:
  std::string backend() const override { return "local"; }
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_rank() const override { return 0; }
  int local_size() const override { return 1; }
  void allreduce(torch::Tensor&, ReduceOp) override {}
  void broadcast(torch::Tensor&, int) override {}
  torch::Tensor allgather(const torch::Tensor& tensor) override {
    return tensor.unsqueeze(0).clone();
  }
  void barrier() override {}
  std::string agree(uint64_t, const std::function<std::string()>&, const std::string&) override {
    return "";
  }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace dtrain::distributed
