// GPU tests: training on cuda:0 against the CPU, checkpoints across devices, the NCCL backend on
// one rank and the ordering of its streams against LibTorch's. Each skips, saying why, where
// LibTorch sees no CUDA device; tools/gpu-check.sh runs them on a GPU machine.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "core/checkpoint.h"
#include "core/device.h"
#include "core/errors.h"
#include "core/optimizers.h"
#include "core/trainer.h"
#include "data/mnist.h"
#include "data/sampler.h"
#include "distributed/backend/nccl/nccl_communicator.h"
#include "models/registry.h"
#include "quarters_data.h"
#include "test_util.h"

namespace dtrain {
namespace {

using testing::TempDir;

#define SKIP_WITHOUT_CUDA()                                                              \
  if (!torch::cuda::is_available())                                                      \
  GTEST_SKIP() << "LibTorch sees no CUDA device (CPU-only LibTorch or no GPU); the GPU " \
                  "tests run on a GPU machine with tools/gpu-check.sh"

RunConfig small_config(const std::filesystem::path& out, int epochs) {
  RunConfig c;
  c.output_dir = out.string();
  c.hidden_sizes = {32, 16};
  c.batch_size = 20;
  c.learning_rate = 0.05;
  c.epochs = epochs;
  c.checkpoint_every = 1;
  c.seed = 5;
  return c;
}

struct Trained {
  std::vector<EpochMetrics> history;
  torch::Tensor weights;  // flattened, on the CPU
};

Trained train_on(const torch::Device& device, RunConfig config, const std::string& resume = "") {
  auto train = testing::quarters_dataset(600, 1), test = testing::quarters_dataset(200, 2);
  torch::manual_seed(config.seed);
  Model model = models::build_model(config, {64, 10});
  Trainer trainer(config, model, device);
  if (!resume.empty()) trainer.resume(resume);
  data::ShuffleSampler sampler({train.size(), config.batch_size, config.seed, 0, 1, true});
  data::ShardSampler test_sampler(test.size(), 50);
  Trained out;
  out.history = trainer.fit(train, sampler, test, test_sampler);
  std::vector<torch::Tensor> parts;
  for (auto& p : trainer.model().module->parameters()) {
    EXPECT_EQ(p.device(), device) << "a parameter is not on the run's device";
    parts.push_back(p.detach().cpu().flatten());
  }
  out.weights = torch::cat(parts);
  return out;
}

TEST(Cuda, TrainsToTheAccuracyOfTheCpu_CUDA) {
  SKIP_WITHOUT_CUDA();
  TempDir cpu_dir, gpu_dir;
  const Trained cpu = train_on(torch::kCPU, small_config(cpu_dir.path(), 3));
  const Trained gpu = train_on(torch::Device(torch::kCUDA, 0), small_config(gpu_dir.path(), 3));
  ASSERT_EQ(gpu.history.size(), 3u);
  EXPECT_GT(gpu.history.back().validation_acc, 0.9) << "the task should be learnt on the GPU";
  // Same data order and initial weights: only float summation order differs.
  EXPECT_NEAR(gpu.history.back().validation_acc, cpu.history.back().validation_acc, 0.02);
  EXPECT_NEAR(gpu.history.back().validation_loss, cpu.history.back().validation_loss, 0.05);
  EXPECT_LT((gpu.weights - cpu.weights).abs().max().item<float>(), 0.05f);
}

TEST(Cuda, CheckpointsMoveBetweenGpuAndCpu_CUDA) {
  SKIP_WITHOUT_CUDA();
  const torch::Device gpu(torch::kCUDA, 0);
  TempDir a, b;
  // Written on the GPU after epoch 1, resumed on the CPU for epochs 2-3.
  train_on(gpu, small_config(a.path(), 1));
  const auto ckpt = a / "checkpoints" / checkpoint_file_name(1);
  {
    RunConfig c = small_config(a.path(), 1);
    Model m = models::build_model(c, {64, 10});
    auto opt = make_optimizer(OptimizerSettings::from(c), m.module->parameters());
    EXPECT_NO_THROW(load_checkpoint(ckpt, *m.module, opt.get(), false));
  }
  const Trained on_cpu = train_on(torch::kCPU, small_config(a.path(), 3), ckpt.string());
  ASSERT_EQ(on_cpu.history.size(), 3u);
  EXPECT_GT(on_cpu.history.back().validation_acc, 0.9);
  // And back: written on the CPU after epoch 1, resumed on the GPU.
  train_on(torch::kCPU, small_config(b.path(), 1));
  const Trained on_gpu = train_on(gpu, small_config(b.path(), 3),
                                  (b / "checkpoints" / checkpoint_file_name(1)).string());
  ASSERT_EQ(on_gpu.history.size(), 3u);
  EXPECT_GT(on_gpu.history.back().validation_acc, 0.9);
}

TEST(Cuda, DeviceIsTheLocalRanksGpu_CUDA) {
  SKIP_WITHOUT_CUDA();
  const int gpus = static_cast<int>(torch::cuda::device_count());
  EXPECT_EQ(choose_device("auto", gpus, {0, 1, ""}), torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(choose_device("cuda", gpus, {gpus - 1, gpus, ""}),
            torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(gpus - 1)));
  EXPECT_THROW(choose_device("cuda", gpus, {0, gpus + 1, ""}), ConfigError);
}

std::unique_ptr<distributed::Communicator> single_rank_nccl() {
  return distributed::make_nccl_communicator(distributed::make_local_communicator(), 0, {5, 30});
}

#define SKIP_WITHOUT_NCCL()                                                                 \
  SKIP_WITHOUT_CUDA();                                                                      \
  if (!distributed::nccl_available())                                                       \
  GTEST_SKIP() << "this build has no NCCL backend (CMake found no CUDA Toolkit/NCCL; give " \
                  "-DCUDAToolkit_ROOT and -DNCCL_ROOT)"

TEST(Cuda, NcclSingleRankCollectives_CUDA) {
  SKIP_WITHOUT_NCCL();
  auto comm = single_rank_nccl();
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->device(), torch::Device(torch::kCUDA, 0));
  const auto opts = torch::TensorOptions().device(comm->device());
  torch::Tensor f = torch::arange(1000, opts.dtype(torch::kFloat));
  comm->allreduce(f, distributed::ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(f.cpu(), torch::arange(1000, torch::kFloat)));
  comm->allreduce(f, distributed::ReduceOp::kAverage);
  EXPECT_TRUE(torch::equal(f.cpu(), torch::arange(1000, torch::kFloat)));
  torch::Tensor i = torch::full({7}, 9, opts.dtype(torch::kLong));
  comm->allreduce(i, distributed::ReduceOp::kAverage);
  EXPECT_EQ(i.sum().item<int64_t>(), 63);
  torch::Tensor h = torch::ones({33}, opts.dtype(torch::kHalf));
  comm->broadcast(h, 0);
  EXPECT_EQ(h.sum().item<float>(), 33.0f);
  const torch::Tensor g = comm->allgather(torch::ones({2, 3}, opts));
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THROW(
      {
        torch::Tensor cpu = torch::ones({3});
        comm->allreduce(cpu, distributed::ReduceOp::kSum);
      },
      CommError);
}

// Fill-then-collective in a loop: each input is produced on LibTorch's stream by work queued
// behind a long matrix product, so a collective that did not wait for LibTorch's stream would read
// the previous iteration's values, and a reader that did not wait for NCCL would see stale output.
TEST(Cuda, NcclCollectivesAreOrderedWithLibTorchsStream_CUDA) {
  SKIP_WITHOUT_NCCL();
  auto comm = single_rank_nccl();
  const auto opts = torch::TensorOptions().device(comm->device());
  const torch::Tensor big = torch::randn({2048, 2048}, opts);
  torch::Tensor buffer = torch::zeros({1 << 20}, opts);
  for (int iteration = 0; iteration < 100; ++iteration) {
    const torch::Tensor slow = torch::mm(big, big).sum() * 0;  // long kernel, value 0
    buffer.fill_(static_cast<double>(iteration)).add_(slow);
    const torch::Tensor gathered = comm->allgather(buffer);
    const torch::Tensor expected = torch::full({1, 1 << 20}, static_cast<float>(iteration));
    ASSERT_TRUE(torch::equal(gathered.cpu(), expected)) << "iteration " << iteration;
    // The sum of what was gathered, taken on LibTorch's stream right after, against the CPU.
    torch::Tensor total = gathered.sum().reshape({1});
    comm->allreduce(total, distributed::ReduceOp::kSum);
    ASSERT_EQ(total.item<float>(), static_cast<float>(iteration) * (1 << 20))
        << "iteration " << iteration;
  }
}

}  // namespace
}  // namespace dtrain
