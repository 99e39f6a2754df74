// Multi-process runs of `dtrain train --distributed ring` under mpirun, each with a hard timeout.
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <regex>
#include <sstream>

#include "run_outputs.h"

namespace dtrain {
namespace {

using testing::CommandResult;
using testing::TempDir;

const std::string kMpirun =
    "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe ";

CommandResult mpirun(int np, const std::string& args, int timeout = 300,
                     const std::string& mpi_flags = "") {
  return testing::run_command(kMpirun + mpi_flags + " -np " + std::to_string(np) + " " +
                                  testing::dtrain_binary() + " " + args,
                              timeout);
}

CommandResult single(const std::string& args, int timeout = 300) {
  return testing::run_command(testing::dtrain_binary() + " " + args, timeout);
}

using testing::last_metrics;

torch::Tensor weights(const std::filesystem::path& model_dir) {
  return testing::model_weights(model_dir);
}

class DistributedCli : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_synthetic_mnist(data_.path(), 400, 100, 123); }
  std::string common(const std::filesystem::path& out) const {
    return " --data-dir " + data_.path().string() + " --output-dir " + out.string() +
           " --first-layer-neurons 32 --second-layer-neurons 16 --threads 1 --seed 3";
  }
  TempDir data_;
};

TEST_F(DistributedCli, TwoRanksAtBatchBEqualOneRankAt2B) {
  TempDir one, two;
  CommandResult a = single("train --epochs 2 --batch-size 50" + common(one.path()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  CommandResult b =
      mpirun(2, "train --distributed ring --epochs 2 --batch-size 25" + common(two.path()));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto wa = weights(one / "model"), wb = weights(two / "model");
  EXPECT_TRUE(torch::allclose(wa, wb, /*rtol=*/1e-4, /*atol=*/1e-5))
      << "max abs diff " << (wa - wb).abs().max().item<double>();
  auto run = nlohmann::json::parse(testing::read_text(two / "run.json"));
  EXPECT_EQ(run["distribution"]["world_size"], 2);
  EXPECT_EQ(run["distribution"]["algorithm"], "ring");
}

TEST_F(DistributedCli, MpiAllreduceAndFp16AndAccumulationAgree) {
  TempDir ref, mpi, fp16, accumulate, accumulate_ref;
  ASSERT_EQ(mpirun(2, "train --distributed ring --epochs 1 --batch-size 25" + common(ref.path()))
                .exit_code,
            0);
  CommandResult m =
      mpirun(2, "train --distributed ring --allreduce mpi --epochs 1 --batch-size 25" +
                    common(mpi.path()));
  ASSERT_EQ(m.exit_code, 0) << m.output;
  EXPECT_TRUE(torch::allclose(weights(ref / "model"), weights(mpi / "model"), 1e-4, 1e-5));
  CommandResult h =
      mpirun(2, "train --distributed ring --compression fp16 --epochs 1 --batch-size 25" +
                    common(fp16.path()));
  ASSERT_EQ(h.exit_code, 0) << h.output;
  EXPECT_TRUE(torch::allclose(weights(ref / "model"), weights(fp16 / "model"), 1e-2, 1e-3))
      << "fp16 compression changes only rounding";
  // Two local passes of 25 per step on two ranks = one pass of 100 on one rank.
  CommandResult k = mpirun(2,
                           "train --distributed ring --backward-passes-per-step 2 --epochs 1 "
                           "--batch-size 25" +
                               common(accumulate.path()));
  ASSERT_EQ(k.exit_code, 0) << k.output;
  ASSERT_EQ(single("train --epochs 1 --batch-size 100" + common(accumulate_ref.path())).exit_code,
            0);
  // Each 2-rank step covers two consecutive global batches of 50 (rank r takes slice r of each,
  // data/sampler.cpp), i.e. exactly the 100 samples of the 1-rank step: same gradient up to float
  // summation order, so the same weights.
  EXPECT_EQ(last_metrics(accumulate)["steps"], last_metrics(accumulate_ref)["steps"]);
  const auto wk = weights(accumulate / "model"), wr = weights(accumulate_ref / "model");
  EXPECT_TRUE(torch::allclose(wk, wr, 1e-4, 1e-5))
      << "max abs diff " << (wk - wr).abs().max().item<double>();
}

// On one host the gradients are reduced through a shared-memory window (a file in Open MPI's
// backing directory, a tmpfs). Where that has too little room (Docker's /dev/shm is 64 MiB), the
// ranks agree to reduce through messages instead, with a warning: the same training, no SIGBUS.
TEST_F(DistributedCli, TooLittleSharedMemoryFallsBackToMessagesWithAWarning) {
  TempDir ref, out, small;
  struct Mount {
    std::string dir;
    bool mounted = false;
    ~Mount() {
      if (mounted) std::system(("umount " + dir).c_str());
    }
  } mount{small.path().string()};
  mount.mounted =
      std::system(("mount -t tmpfs -o size=1M tmpfs " + mount.dir + " 2>/dev/null").c_str()) == 0;
  if (!mount.mounted) GTEST_SKIP() << "cannot mount a small tmpfs here (needs root)";
  const std::string train = "train --distributed ring --epochs 2 --batch-size 25";
  CommandResult a = mpirun(2, train + common(ref.path()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  EXPECT_EQ(a.output.find("reducing through messages"), std::string::npos) << a.output;
  CommandResult b = mpirun(2, train + common(out.path()), 300,
                           "-x OMPI_MCA_osc_sm_backing_directory=" + mount.dir);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("has 1 MiB free"), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("reducing through messages instead"), std::string::npos) << b.output;
  EXPECT_TRUE(torch::allclose(weights(ref / "model"), weights(out / "model"), 1e-4, 1e-5));
}

TEST_F(DistributedCli, WithoutLauncherRunsAsOneRankAndSaysSo) {
  TempDir out;
  CommandResult r = single("train --distributed ring --epochs 1" + common(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("running as a single rank"), std::string::npos) << r.output;
}

TEST_F(DistributedCli, RanksThatDisagreeFailAtStartNamingRankAndField) {
  TempDir out;
  const std::string bin = testing::dtrain_binary();
  const std::string base = " train --distributed ring --epochs 1 --data-dir " +
                           data_.path().string() + " --output-dir " + out.path().string() +
                           " --threads 1";
  const auto start = std::chrono::steady_clock::now();
  CommandResult r =
      testing::run_command(kMpirun + "-np 1 " + bin + base + " --first-layer-neurons 32 : -np 1 " +
                               bin + base + " --first-layer-neurons 31 --learning-rate 0.02",
                           120);
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 1 vs rank 0"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("hidden_sizes"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("learning_rate"), std::string::npos) << r.output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
  EXPECT_FALSE(std::filesystem::exists(out / "model")) << "nothing written";
}

TEST_F(DistributedCli, KilledRankEndsTheJobWithinSixtySeconds) {
  TempDir out;
  const auto start = std::chrono::steady_clock::now();
  CommandResult r =
      mpirun(2, "train --distributed ring --epochs 50 --batch-size 10" + common(out.path()), 120,
             "-x DTRAIN_FAULT_INJECT=kill:1:5");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("kills itself"), std::string::npos) << r.output;
  EXPECT_LT(took, std::chrono::seconds(60)) << r.output;
}

TEST_F(DistributedCli, StalledRankIsNamedThenTheJobAborts) {
  TempDir out;
  const auto start = std::chrono::steady_clock::now();
  CommandResult r = mpirun(3,
                           "train --distributed ring --epochs 50 --batch-size 10 "
                           "--stall-warning-seconds 2 --stall-abort-seconds 6" +
                               common(out.path()),
                           120, "-x DTRAIN_FAULT_INJECT=stall:2:4");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("waiting for rank(s) 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("stall-abort-seconds"), std::string::npos) << r.output;
  EXPECT_LT(took, std::chrono::seconds(60)) << r.output;
}

TEST_F(DistributedCli, StalledRankZeroIsReportedWithinASecondOfTheLimit) {
  TempDir out;
  CommandResult r = mpirun(2,
                           "train --distributed ring --epochs 50 --batch-size 10 "
                           "--stall-warning-seconds 2 --stall-abort-seconds 6" +
                               common(out.path()),
                           120, "-x DTRAIN_FAULT_INJECT=stall:0:4");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("(--stall-abort-seconds 6)"), std::string::npos) << r.output;
  const std::regex stalled(R"(stalled for (\d+) s on rank 1 waiting for rank\(s\) 0)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.output, m, stalled)) << r.output;
  EXPECT_GE(std::stoi(m[1]), 6) << r.output;
  EXPECT_LE(std::stoi(m[1]), 7) << r.output;
}

// torchrun --max-restarts: a rank is killed (SIGKILL) in two attempts; the third completes, with
// the weights of a run that was never interrupted.
TEST_F(DistributedCli, LaunchRestartsAKilledRingJobToTheUninterruptedWeights) {
  TempDir plain, restarted, scripts;
  const std::string train =
      "train --distributed ring --epochs 4 --batch-size 10 "
      "--checkpoint-every 1 --workspace none";
  CommandResult a = mpirun(2, train + common(plain.path()));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  // 400 samples, 2 ranks of batch 10: 20 steps an epoch. Each attempt counts steps from its own
  // start, so step 30 falls in epoch 2 in the first attempt and in epoch 3 in the second.
  const auto script = scripts / "job.sh";
  std::ofstream(script) << "case \"$DTRAIN_RESTART_COUNT\" in 0|1) f=kill:1:30 ;; *) f= ;; esac\n"
                        << "exec " << kMpirun << "-x DTRAIN_FAULT_INJECT=$f -np 2 "
                        << testing::dtrain_binary() << " " << train << " --resume-from auto"
                        << common(restarted.path()) << "\n";
  CommandResult b =
      single("launch --max-restarts 3 --restart-backoff 0.5 -- sh " + script.string(), 300);
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("restart 1 of 3"), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("restart 2 of 3"), std::string::npos) << b.output;
  EXPECT_EQ(b.output.find("restart 3 of 3"), std::string::npos) << b.output;
  EXPECT_NE(b.output.find("succeeded after 2 restarts"), std::string::npos) << b.output;
  EXPECT_TRUE(torch::equal(weights(plain / "model"), weights(restarted / "model")))
      << "max abs diff "
      << (weights(plain / "model") - weights(restarted / "model")).abs().max().item<double>();
}

TEST(Launch, UsageErrorsAreNotRetriedAndBadFlagsExitTwo) {
  TempDir dir;
  const auto counter = dir / "count";
  CommandResult r = single("launch --max-restarts 5 --restart-backoff 0 -- sh -c 'echo x >> " +
                               counter.string() + "; exit 2'",
                           60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_EQ(testing::read_text(counter), "x\n") << "exit 2 must not be retried";
  r = single("launch --max-restarts 2 --restart-backoff 0 -- sh -c 'echo x >> " + counter.string() +
                 "; kill -9 $$'",
             60);
  EXPECT_EQ(r.exit_code, 137) << r.output;
  EXPECT_EQ(testing::read_text(counter), "x\nx\nx\nx\n") << "1 + 2 restarts";
  EXPECT_NE(r.output.find("killed by SIGKILL"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("no restarts left"), std::string::npos) << r.output;
  for (const char* bad : {"launch --max-restarts -1 -- true", "launch --max-restarts x -- true",
                          "launch --restart-backoff nan -- true", "launch --max-restarts 2",
                          "launch -- /no/such/program"}) {
    r = single(bad, 60);
    EXPECT_EQ(r.exit_code, 2) << bad << "\n" << r.output;
  }
}

TEST_F(DistributedCli, NonFiniteGradientOnOneRankIsSkippedByAll) {
  TempDir out;
  CommandResult r =
      mpirun(2, "train --distributed ring --epochs 1 --batch-size 25" + common(out.path()), 120,
             "-x DTRAIN_FAULT_INJECT=nan:1:3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("every rank skips this step"), std::string::npos) << r.output;
  EXPECT_EQ(last_metrics(out)["skipped_steps"], 1);
  EXPECT_TRUE(torch::isfinite(weights(out / "model")).all().item<bool>());
}

TEST_F(DistributedCli, CheckpointsResumeOnAnotherWorldSize) {
  TempDir out;
  ASSERT_EQ(mpirun(2, "train --distributed ring --epochs 1 --checkpoint-every 1 --batch-size 25" +
                          common(out.path()))
                .exit_code,
            0);
  CommandResult r = mpirun(3, "train --distributed ring --epochs 2 --batch-size 25 --resume-from " +
                                  (out / "checkpoints").string() + common(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(last_metrics(out)["epoch"], 2);
  EXPECT_EQ(
      nlohmann::json::parse(testing::read_text(out / "run.json"))["distribution"]["world_size"], 3);
}

TEST(DistributedMnist, TwoRanksOneEpochReach90Percent) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir out;
  CommandResult r = mpirun(2,
                           "train --distributed ring --epochs 1 --data-dir " + mnist +
                               " --output-dir " + out.path().string(),
                           600);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GE(last_metrics(out)["validation_acc"].get<double>(), 0.90);
}

TEST_F(DistributedCli, RingRunIsRecordedOnceByRankZero) {
  TempDir out, ws;
  CommandResult r = mpirun(2, "train --distributed ring --epochs 2 --workspace " +
                                  ws.path().string() + " --tag job=ring" + common(out.path()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  CommandResult list = single("runs list --json --workspace " + ws.path().string());
  ASSERT_EQ(list.exit_code, 0) << list.output;
  const auto runs = nlohmann::json::parse(list.output.substr(list.output.find('[')));
  ASSERT_EQ(runs.size(), 1u) << "only rank 0 records the run";
  EXPECT_EQ(runs[0].at("status"), "completed");
  EXPECT_EQ(runs[0].at("world_size"), 2);
  EXPECT_EQ(runs[0].at("strategy"), "ring");
  EXPECT_EQ(runs[0].at("tags").at("job"), "ring");
  EXPECT_TRUE(runs[0].at("metrics").contains("validation_acc"));
}

}  // namespace
}  // namespace dtrain
