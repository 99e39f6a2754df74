// End-to-end tests of the dtrain binary: exit codes, messages, and real MNIST training.
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/checkpoint.h"
#include "models/model_io.h"
#include "run_outputs.h"

namespace dtrain {
namespace {

using testing::CommandResult;
using testing::TempDir;

CommandResult dtrain(const std::string& args, int timeout = 600) {
  return testing::run_command(testing::dtrain_binary() + " " + args, timeout);
}

void expect_usage_error(const std::string& args, const std::string& fragment) {
  CommandResult r = dtrain(args, 60);
  EXPECT_EQ(r.exit_code, 2) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos)
      << "dtrain " << args << " should mention '" << fragment << "':\n"
      << r.output;
}

TEST(Cli, BadFlagsExitTwoNamingTheFlag) {
  TempDir dir;
  const std::string d = " --data-dir " + dir.path().string();
  expect_usage_error("train --no-such-flag" + d, "no-such-flag");
  expect_usage_error("train --batch-size -5" + d, "--batch-size");
  expect_usage_error("train --batch-size 0" + d, "--batch-size");
  expect_usage_error("train --learning-rate abc" + d, "--learning-rate");
  expect_usage_error("train --learning-rate nan" + d, "--learning-rate");
  expect_usage_error("train --epochs 2.5" + d, "--epochs");
  expect_usage_error("train --device tpu" + d, "--device");
  expect_usage_error("train --optimizer rmsprop" + d, "--optimizer");
  expect_usage_error("train --hidden-sizes 10,x" + d, "--hidden-sizes");
  expect_usage_error("train --lr-scaling cubic" + d, "--lr-scaling");
  expect_usage_error("train --lr-scaling linear --distributed ps" + d, "--lr-scaling");
  expect_usage_error("train --warmup-epochs -1" + d, "--warmup-epochs");
  expect_usage_error("train --warmup-epochs inf" + d, "--warmup-epochs");
  expect_usage_error("train --target-accuracy 1.5" + d, "--target-accuracy");
  expect_usage_error("train --target-accuracy -0.1" + d, "--target-accuracy");
  expect_usage_error("train", "--data-dir");
  expect_usage_error("train --data-dir \"\"", "--data-dir");
  expect_usage_error("train --data-dir a --data-folder b", "disagree");
  expect_usage_error("train stray" + d, "stray");
  expect_usage_error("frobnicate", "unknown command");
  expect_usage_error("data fetch cifar --into " + dir.path().string(), "mnist");
  expect_usage_error("eval --data-dir " + dir.path().string(), "--model");
}

TEST(Cli, MissingDataExitsTwoNamingTheFolder) {
  TempDir dir;
  expect_usage_error("train --data-dir " + (dir / "nowhere").string(), "nowhere");
  expect_usage_error("train --data-folder " + dir.path().string(), "train-images-idx3-ubyte");
}

TEST(Cli, UnusableOutputFolderFailsBeforeTheFirstStep) {
  TempDir data, dir;
  testing::write_synthetic_mnist(data.path(), 100, 20, 1);
  const std::string base = "train --epochs 1 --workspace none --data-dir " + data.path().string();
  std::ofstream(dir / "a-file") << "x";
  expect_usage_error(base + " --output-dir " + (dir / "a-file").string(), "a-file");
  expect_usage_error(base + " --output-dir " + (dir / "a-file" / "below").string(), "a-file");

  // A file system too small for a checkpoint (784-300-100-10 takes about 1 MB a copy).
  const auto small = dir / "small";
  std::filesystem::create_directories(small);
  if (std::system(
          ("mount -t tmpfs -o size=512k tmpfs " + small.string() + " 2>/dev/null").c_str()) != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (needs root); the full-disk case is not tested";
  }
  CommandResult r = dtrain(base + " --output-dir " + small.string(), 60);
  std::system(("umount " + small.string()).c_str());
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("KiB free"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(small.string()), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1"), std::string::npos) << "no epoch ran:\n" << r.output;
}

TEST(Cli, TargetAccuracyNotReachedIsRecordedAndExitsZero) {
  TempDir data, out;
  testing::write_synthetic_mnist(data.path(), 100, 20, 1);  // random labels: never 100 %
  CommandResult r = dtrain("train --epochs 2 --target-accuracy 1 --workspace none --data-dir " +
                               data.path().string() + " --output-dir " + out.path().string(),
                           120);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("not reached in 2 epochs"), std::string::npos) << r.output;
  auto run = nlohmann::json::parse(testing::read_text(out / "run.json"));
  EXPECT_EQ(run["target_accuracy"], 1.0);
  EXPECT_EQ(run["target_reached"], false);
  EXPECT_TRUE(run["epochs_to_target"].is_null());
  EXPECT_TRUE(run["time_to_target_seconds"].is_null());
  EXPECT_EQ(run["epochs_completed"], 2);
}

TEST(Cli, HelpExitsZero) {
  for (const char* cmd : {"--help", "train --help", "eval --help", "data fetch --help"}) {
    CommandResult r = dtrain(cmd, 60);
    EXPECT_EQ(r.exit_code, 0) << cmd << "\n" << r.output;
  }
  EXPECT_NE(dtrain("train --help", 60).output.find("--first-layer-neurons"), std::string::npos);
}

TEST(Cli, EvalOfMissingOrCorruptModelExitsTwo) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir dir;
  testing::write_bytes(dir / "bad.pt", "garbage");
  expect_usage_error("eval --model " + (dir / "none").string() + " --data-dir " + mnist, "none");
  expect_usage_error("eval --model " + (dir / "bad.pt").string() + " --data-dir " + mnist,
                     "bad.pt");
}

using testing::read_jsonl;

TEST(EndToEnd, OneEpochOnMnistReaches90PercentAndWritesOutputs) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir out;
  // One epoch reaches 0.90 (0.938 at the defaults): --target-accuracy ends the run there.
  CommandResult r = dtrain("train --data-folder " + mnist +
                           " --epochs 3 --target-accuracy 0.9 --output-dir " + out.path().string());
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto lines = read_jsonl(out / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 1u) << r.output;
  for (const char* key : {"epoch", "train_loss", "train_acc", "validation_acc", "epoch_seconds",
                          "samples_per_second"}) {
    EXPECT_TRUE(lines[0].contains(key)) << key;
  }
  EXPECT_GE(lines[0]["validation_acc"].get<double>(), 0.90);

  auto run = nlohmann::json::parse(testing::read_text(out / "run.json"));
  EXPECT_EQ(run["config"]["batch_size"], 50);
  EXPECT_EQ(run["config"]["learning_rate"], 0.01);
  EXPECT_EQ(run["config"]["hidden_sizes"], nlohmann::json({300, 100}));
  EXPECT_TRUE(run["versions"].contains("libtorch"));
  EXPECT_EQ(run["device"], "cpu");
  EXPECT_GE(run["final_acc"].get<double>(), 0.90);
  EXPECT_GT(run["total_seconds"].get<double>(), 0);
  EXPECT_EQ(run["target_reached"], true);
  EXPECT_EQ(run["epochs_to_target"], 1);
  EXPECT_GT(run["time_to_target_seconds"].get<double>(), lines[0]["epoch_seconds"].get<double>());
  EXPECT_LT(run["time_to_target_seconds"].get<double>(), run["total_seconds"].get<double>());

  EXPECT_TRUE(std::filesystem::exists(out / "checkpoints" / checkpoint_file_name(1)));
  EXPECT_TRUE(std::filesystem::exists(out / "model" / "model.pt"));
  auto model_json = nlohmann::json::parse(testing::read_text(out / "model" / "model.json"));
  EXPECT_EQ(model_json["architecture"]["hidden_sizes"], nlohmann::json({300, 100}));

  // dtrain eval on the saved model agrees with the training run's final accuracy.
  CommandResult e = dtrain("eval --model " + (out / "model").string() + " --data-dir " + mnist);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  const auto pos = e.output.find('{');
  ASSERT_NE(pos, std::string::npos) << e.output;
  auto result = nlohmann::json::parse(e.output.substr(pos, e.output.find('\n', pos) - pos));
  EXPECT_EQ(result["samples"], 10000);
  EXPECT_NEAR(result["accuracy"].get<double>(), run["final_acc"].get<double>(), 1e-9);
}

TEST(EndToEnd, ResumedCliRunMatchesUninterruptedRun) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir full, part;
  const std::string common = " --data-dir " + mnist +
                             " --threads 1 --first-layer-neurons 64 --second-layer-neurons 32"
                             " --checkpoint-every 1 --seed 5";
  ASSERT_EQ(dtrain("train --epochs 2 --output-dir " + full.path().string() + common).exit_code, 0);
  ASSERT_EQ(dtrain("train --epochs 1 --output-dir " + part.path().string() + common).exit_code, 0);
  CommandResult r = dtrain("train --epochs 2 --output-dir " + part.path().string() + common +
                           " --resume-from " + (part / "checkpoints").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;

  auto a = models::load_model(full / "model"), b = models::load_model(part / "model");
  auto pa = a.model.module->named_parameters(), pb = b.model.module->named_parameters();
  for (const auto& p : pa) EXPECT_TRUE(torch::equal(p.value(), pb[p.key()])) << p.key();
  EXPECT_EQ(read_jsonl(part / "metrics.jsonl").size(), 2u);

  // A checkpoint of another architecture is refused with exit 2, outputs untouched.
  const std::string before = testing::read_text(part / "run.json");
  CommandResult bad =
      dtrain("train --epochs 3 --output-dir " + part.path().string() + " --data-dir " + mnist +
             " --first-layer-neurons 65 --resume-from " + (part / "checkpoints").string());
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("checkpoint"), std::string::npos) << bad.output;
  EXPECT_EQ(testing::read_text(part / "run.json"), before);
}

}  // namespace
}  // namespace dtrain
