#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/thread_team.h"
#include "core/trainer.h"
#include "data/mnist.h"
#include "data/sampler.h"
#include "models/registry.h"
#include "quarters_data.h"
#include "test_util.h"

namespace dtrain {
namespace {

using testing::TempDir;

RunConfig small_config(const std::filesystem::path& out, const std::string& optimizer) {
  RunConfig c;
  c.output_dir = out.string();
  c.hidden_sizes = {16, 8};
  c.batch_size = 10;
  c.learning_rate = optimizer == "adam" ? 0.01 : 0.05;
  c.optimizer = optimizer;
  c.epochs = 3;
  c.checkpoint_every = 1;
  c.seed = 11;
  return c;
}

std::vector<EpochMetrics> run(RunConfig config, const std::string& resume_from = "") {
  auto train = testing::quarters_dataset(203, 1), test = testing::quarters_dataset(50, 2);
  torch::manual_seed(config.seed);
  Model model = models::build_model(config, {64, 10});
  Trainer trainer(config, model, torch::kCPU);
  if (!resume_from.empty()) trainer.resume(resume_from);
  data::ShuffleSampler sampler({train.size(), config.batch_size, config.seed, 0, 1, true});
  data::ShardSampler test_sampler(test.size(), 16);
  return trainer.fit(train, sampler, test, test_sampler);
}

torch::Tensor flat_weights(const std::filesystem::path& checkpoint) {
  RunConfig c;
  c.hidden_sizes = {16, 8};
  Model m = models::build_model(c, {64, 10});
  load_checkpoint(checkpoint, *m.module, nullptr, false);
  std::vector<torch::Tensor> parts;
  for (auto& p : m.module->parameters()) parts.push_back(p.detach().flatten());
  return torch::cat(parts);
}

// (optimizer, compute threads): with threads > 1 each batch is split across a ThreadTeam.
class ResumeEquivalence : public ::testing::TestWithParam<std::tuple<std::string, int>> {
 protected:
  void SetUp() override { set_compute_threads(std::get<1>(GetParam())); }
  void TearDown() override { set_compute_threads(1); }
  static std::string optimizer() { return std::get<0>(GetParam()); }
};

TEST_P(ResumeEquivalence, InterruptedRunEndsWithIdenticalWeights) {
  TempDir full_dir, part_dir;
  auto full = run(small_config(full_dir.path(), optimizer()));
  ASSERT_EQ(full.size(), 3u);
  EXPECT_GT(full.back().validation_acc, 0.9) << "the synthetic task should be learnt";

  RunConfig first = small_config(part_dir.path(), optimizer());
  first.epochs = 1;  // "interrupted" after epoch 1
  run(first);
  auto resumed =
      run(small_config(part_dir.path(), optimizer()), (part_dir / "checkpoints").string());
  ASSERT_EQ(resumed.size(), 3u);  // history carried over from the checkpoint
  const auto last = checkpoint_file_name(3);
  EXPECT_TRUE(torch::equal(flat_weights(full_dir / "checkpoints" / last),
                           flat_weights(part_dir / "checkpoints" / last)))
      << "resumed run must end with exactly the same weights";
  EXPECT_EQ(full.back().train_loss, resumed.back().train_loss);
}

INSTANTIATE_TEST_SUITE_P(OptimizersAndThreads, ResumeEquivalence,
                         ::testing::Combine(::testing::Values("sgd", "adam"),
                                            ::testing::Values(1, 3)));

TEST(Trainer, ResumeRejectsOtherArchitectureAndOptimizer) {
  TempDir dir;
  RunConfig c = small_config(dir.path(), "sgd");
  c.epochs = 1;
  run(c);
  RunConfig wider = small_config(dir.path(), "sgd");
  wider.hidden_sizes = {32, 8};
  EXPECT_THROW(run(wider, (dir / "checkpoints").string()), CheckpointError);
  EXPECT_THROW(run(small_config(dir.path(), "adam"), (dir / "checkpoints").string()),
               CheckpointError);
}

TEST(Trainer, SyncThatSkipsStepsLeavesWeightsAlone) {
  struct SkipAll : GradientSync {
    Outcome synchronize(const NamedTensors&) override { return Outcome::kSkip; }
  } skip;
  TempDir dir;
  RunConfig c = small_config(dir.path(), "sgd");
  c.epochs = 1;
  c.checkpoint_every = 0;
  auto train = testing::quarters_dataset(40, 1);
  torch::manual_seed(1);
  Model model = models::build_model(c, {64, 10});
  auto before = model.module->parameters()[0].clone();
  Trainer trainer(c, model, torch::kCPU, &skip);
  data::ShuffleSampler sampler({train.size(), 10, 1, 0, 1, true});
  auto h = trainer.fit(train, sampler, train, data::ShardSampler(40, 10));
  EXPECT_EQ(h.back().skipped_steps, 4);
  EXPECT_TRUE(torch::equal(before, model.module->parameters()[0]));
}

// One process: the optimizer steps inside the backward pass (SingleProcessSync). A strategy that
// does not say it leaves gradients alone gets the step after synchronize(): the same bits.
TEST(Trainer, StepWithinTheBackwardPassIsTheStepAfterIt) {
  struct StepAfter : GradientSync {
  } step_after;
  for (int threads : {1, 2}) {
    set_compute_threads(threads);
    for (const std::string optimizer : {"sgd", "adam"}) {
      std::vector<torch::Tensor> weights;
      std::vector<double> losses;
      for (GradientSync* sync : std::vector<GradientSync*>{nullptr, &step_after}) {
        TempDir dir;
        RunConfig c = small_config(dir.path(), optimizer);
        c.epochs = 2;
        c.checkpoint_every = 0;
        auto train = testing::quarters_dataset(60, 1);
        torch::manual_seed(1);
        Model model = models::build_model(c, {64, 10});
        Trainer trainer(c, model, torch::kCPU, sync);
        data::ShuffleSampler sampler({train.size(), 10, 1, 0, 1, true});
        auto h = trainer.fit(train, sampler, train, data::ShardSampler(60, 10));
        std::vector<torch::Tensor> parts;
        for (auto& p : model.module->parameters()) parts.push_back(p.detach().flatten());
        weights.push_back(torch::cat(parts));
        losses.push_back(h.back().train_loss);
      }
      EXPECT_TRUE(torch::equal(weights[0], weights[1])) << optimizer << ", " << threads;
      EXPECT_EQ(losses[0], losses[1]) << optimizer << ", " << threads;
    }
  }
  set_compute_threads(1);
}

// --lr-scaling and --warmup-epochs: the rate of each step is a function of the step; each epoch
// records the rate of its last step. A sync that claims 4 processes (it syncs nothing).
TEST(Trainer, LearningRateScalingAndWarmup) {
  struct FourProcesses : GradientSync {
    int world_size() const override { return 4; }
    bool agrees_on_step_control() const override { return true; }
  } four;
  auto rates = [&](const std::string& scaling, double warmup) {
    TempDir dir;
    RunConfig c = small_config(dir.path(), "sgd");
    c.checkpoint_every = 0;
    c.lr_scaling = scaling;
    c.warmup_epochs = warmup;
    auto train = testing::quarters_dataset(40, 1);
    torch::manual_seed(1);
    Trainer trainer(c, models::build_model(c, {64, 10}), torch::kCPU, &four);
    data::ShuffleSampler sampler({train.size(), 10, 1, 0, 1, true});  // 4 steps an epoch
    std::vector<double> out;
    for (const auto& m : trainer.fit(train, sampler, train, data::ShardSampler(40, 10))) {
      out.push_back(m.learning_rate);
    }
    return out;
  };
  const double lr = 0.05;
  EXPECT_EQ(rates("none", 0), (std::vector<double>{lr, lr, lr}));
  EXPECT_EQ(rates("linear", 0), (std::vector<double>{4 * lr, 4 * lr, 4 * lr}));
  EXPECT_EQ(rates("sqrt", 0), (std::vector<double>{2 * lr, 2 * lr, 2 * lr}));
  // Warm-up over 2 epochs = 8 steps from lr to 4 lr: step 4 (the last of epoch 1, 3 steps done)
  // runs at lr + 3/8 of the way, step 8 at 7/8, then 4 lr.
  const auto warm = rates("linear", 2);
  ASSERT_EQ(warm.size(), 3u);
  EXPECT_DOUBLE_EQ(warm[0], lr + 3 * lr * 3 / 8);
  EXPECT_DOUBLE_EQ(warm[1], lr + 3 * lr * 7 / 8);
  EXPECT_DOUBLE_EQ(warm[2], 4 * lr);
}

TEST(Trainer, TargetAccuracyStopsAfterTheFirstEpochReachingIt) {
  auto train = testing::quarters_dataset(203, 1), test = testing::quarters_dataset(50, 2);
  TempDir dir;
  RunConfig c = small_config(dir.path(), "sgd");
  c.epochs = 20;
  c.target_accuracy = 0.9;
  torch::manual_seed(c.seed);
  Trainer trainer(c, models::build_model(c, {64, 10}), torch::kCPU);
  data::ShuffleSampler sampler({train.size(), c.batch_size, c.seed, 0, 1, true});
  const auto h = trainer.fit(train, sampler, test, data::ShardSampler(test.size(), 16));
  ASSERT_LT(h.size(), 20u) << "the synthetic task is learnt in a few epochs";
  EXPECT_GE(h.back().validation_acc, 0.9);
  for (size_t i = 0; i + 1 < h.size(); ++i) EXPECT_LT(h[i].validation_acc, 0.9);
  const TargetOutcome t = target_outcome(h, 0.9);
  EXPECT_TRUE(t.reached);
  EXPECT_EQ(t.epochs, static_cast<int64_t>(h.size()));
  double seconds = 0;
  for (const auto& m : h) seconds += m.epoch_seconds + m.validation_seconds;
  EXPECT_DOUBLE_EQ(t.seconds, seconds);
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoints" / checkpoint_file_name(h.size())))
      << "the stopping epoch is checkpointed like a last epoch";
  const std::vector<EpochMetrics> before_last(h.begin(), h.end() - 1);
  EXPECT_FALSE(target_outcome(before_last, 0.9).reached);
}

}  // namespace
}  // namespace dtrain
