#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/file_util.h"
#include "core/optimizers.h"
#include "models/mlp.h"
#include "test_util.h"

namespace dtrain {
namespace {

using testing::TempDir;

models::Mlp make_mlp(std::vector<int64_t> hidden) {
  return models::Mlp(models::MlpOptions(16, std::move(hidden), 4));
}

void take_steps(models::Mlp& mlp, Optimizer& opt, int steps) {
  for (int i = 0; i < steps; ++i) {
    opt.zero_grad();
    auto loss = mlp->forward(torch::randn({8, 16})).pow(2).mean();
    loss.backward();
    opt.step();
  }
}

CheckpointMeta meta_for(int64_t epoch, const std::string& opt) {
  CheckpointMeta m;
  m.epoch = epoch;
  m.config = {{"k", 1}};
  m.model = {{"model", "mlp"}};
  m.optimizer = opt;
  EpochMetrics e;
  e.epoch = 1;
  e.validation_acc = 0.5;
  m.history = {e};
  return m;
}

TEST(Checkpoint, RoundTripModelOptimizerAndRng) {
  TempDir dir;
  torch::manual_seed(3);
  auto a = make_mlp({8, 6});
  const OptimizerSettings sgd{"sgd", 0.1, 0.9, 0.0};
  auto opt_a = make_optimizer(sgd, a->parameters());
  take_steps(a, *opt_a, 3);
  save_checkpoint(dir / "c.pt", *a, opt_a.get(), meta_for(2, "sgd"));
  const torch::Tensor expected_draw = torch::rand({4});

  torch::manual_seed(99);
  auto b = make_mlp({8, 6});
  auto opt_b = make_optimizer(sgd, b->parameters());
  CheckpointMeta meta = load_checkpoint(dir / "c.pt", *b, opt_b.get(), true);
  EXPECT_EQ(meta.epoch, 2);
  EXPECT_EQ(meta.optimizer, "sgd");
  ASSERT_EQ(meta.history.size(), 1u);
  EXPECT_EQ(meta.history[0].validation_acc, 0.5);
  EXPECT_TRUE(torch::equal(torch::rand({4}), expected_draw)) << "RNG state not restored";

  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  // Same momentum buffers: one more identical step keeps them identical.
  torch::manual_seed(5);
  take_steps(a, *opt_a, 1);
  torch::manual_seed(5);
  take_steps(b, *opt_b, 1);
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
}

TEST(Checkpoint, OtherArchitectureIsAClearError) {
  TempDir dir;
  auto a = make_mlp({8, 6});
  save_checkpoint(dir / "c.pt", *a, nullptr, meta_for(1, ""));
  auto wider = make_mlp({9, 6});
  try {
    load_checkpoint(dir / "c.pt", *wider, nullptr, false);
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("fc1.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[8,16]"), std::string::npos) << e.what();
  }
  auto deeper = make_mlp({8, 6, 5});
  EXPECT_THROW(load_checkpoint(dir / "c.pt", *deeper, nullptr, false), CheckpointError);
}

TEST(Checkpoint, WeightsOnlyFileCannotRestoreOptimizer) {
  TempDir dir;
  auto a = make_mlp({8});
  save_checkpoint(dir / "c.pt", *a, nullptr, meta_for(1, ""));
  auto opt = make_optimizer({"sgd", 0.1, 0.0, 0.0}, a->parameters());
  EXPECT_THROW(load_checkpoint(dir / "c.pt", *a, opt.get(), false), CheckpointError);
}

TEST(Checkpoint, CorruptTruncatedOrForeignFilesAreClearErrors) {
  TempDir dir;
  auto a = make_mlp({8});
  save_checkpoint(dir / "good.pt", *a, nullptr, meta_for(1, ""));
  const std::string bytes = read_file(dir / "good.pt");
  testing::write_bytes(dir / "truncated.pt", bytes.substr(0, bytes.size() / 2));
  std::string flipped = bytes;
  for (size_t i = bytes.size() / 3; i < bytes.size() / 3 + 64; ++i) flipped[i] ^= 0x5a;
  testing::write_bytes(dir / "flipped.pt", flipped);
  testing::write_bytes(dir / "text.pt", "hello");
  for (const char* name : {"truncated.pt", "flipped.pt", "text.pt", "missing.pt"}) {
    EXPECT_THROW(load_checkpoint(dir / name, *a, nullptr, false), DataError) << name;
  }
}

TEST(Checkpoint, ResolveTakesNewestInFolder) {
  TempDir dir;
  auto a = make_mlp({4});
  for (int e : {2, 10, 4})
    save_checkpoint(dir / checkpoint_file_name(e), *a, nullptr, meta_for(e, ""));
  EXPECT_EQ(resolve_checkpoint(dir.path()).filename(), checkpoint_file_name(10));
  TempDir empty;
  EXPECT_THROW(resolve_checkpoint(empty.path()), CheckpointError);
}

TEST(FileUtil, AtomicWriteLeavesNoTempFiles) {
  TempDir dir;
  write_file_atomic(dir / "sub" / "f.txt", "one");
  write_file_atomic(dir / "sub" / "f.txt", "two");
  EXPECT_EQ(read_file(dir / "sub" / "f.txt"), "two");
  write_file_atomic(dir / "sub" / "f.txt", "three", /*durable=*/false);
  EXPECT_EQ(read_file(dir / "sub" / "f.txt"), "three");
  int files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir / "sub")) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(FileUtil, OutputFolderCheckCreatesTheFolderAndLeavesNothingInIt) {
  TempDir dir;
  check_output_folder(dir / "out", 1024, "--output-dir");
  ASSERT_TRUE(std::filesystem::is_directory(dir / "out"));
  EXPECT_TRUE(std::filesystem::is_empty(dir / "out"));
  write_file_atomic(dir / "file", "x");
  try {
    check_output_folder(dir / "file" / "out", 1024, "--output-dir");
    FAIL() << "a folder under a file was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("--output-dir " + (dir / "file" / "out").string()),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(check_output_folder(dir / "out", uint64_t{1} << 62, "--output-dir"), ConfigError);
}

}  // namespace
}  // namespace dtrain
