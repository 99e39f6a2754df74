// Preemption: SIGTERM, SIGINT or SIGUSR1 at a random moment stops training at the next step
// boundary with a checkpoint of that exact position; --resume-from auto then ends with the
// weights of a run that was never stopped. Under mpirun the ranks agree on the step.
#include <gtest/gtest.h>
#include <torch/nn/module.h>

#include <signal.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "core/checkpoint.h"
#include "core/subprocess.h"
#include "run_outputs.h"

namespace dtrain {
namespace {

using testing::TempDir;

const std::vector<std::string> kMpirun = {
    "env",    "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1",
    "mpirun", "--oversubscribe",          "-np",
    "2"};

class Preemption : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_synthetic_mnist(data_.path(), 6000, 200, 17); }

  std::vector<std::string> train(const std::filesystem::path& out, bool ring = false) const {
    std::vector<std::string> argv = ring ? kMpirun : std::vector<std::string>{};
    std::istringstream flags(
        "train --epochs 12 --batch-size 10 --first-layer-neurons 200 --second-layer-neurons 100 "
        "--threads 1 --seed 5 --workspace none --progress never --optimizer adam "
        "--learning-rate 0.001");
    for (std::string a; flags >> a;) argv.push_back(a);
    argv.insert(argv.begin() + (ring ? static_cast<long>(kMpirun.size()) : 0),
                testing::dtrain_binary());
    if (ring) argv.insert(argv.end(), {"--distributed", "ring"});
    argv.insert(argv.end(), {"--data-dir", data_.path().string(), "--output-dir", out.string()});
    return argv;
  }

  /// Runs to the end; returns its output.
  std::string run(std::vector<std::string> argv, int expected_exit = 0) {
    std::string command;
    for (const auto& a : argv) command += "'" + a + "' ";
    testing::CommandResult r = testing::run_command(command, 300);
    EXPECT_EQ(r.exit_code, expected_exit) << r.output;
    return r.output;
  }

  /// `dtrain cluster run` of 1 ps and 2 workers in sync or async mode, same recipe (4 epochs).
  std::vector<std::string> cluster(const std::filesystem::path& out, bool sync) const {
    std::vector<std::string> argv = train(out);
    argv.erase(argv.begin() + 1);  // "train"
    argv.insert(argv.begin() + 1, {"cluster", "run", "--ps", "1", "--workers", "2", "--"});
    argv.insert(argv.end(), {"--epochs", "4", "--ps-mode", sync ? "sync" : "async"});
    return argv;
  }

  /// Starts it, and once training is under way sends `signal` after a random delay (to the
  /// process group, or through `send`).
  std::pair<int, std::string> run_and_signal(
      std::vector<std::string> argv, int signal, std::mt19937& rng,
      const std::function<void(Subprocess&)>& send = nullptr) {
    std::mutex mu;
    std::string output;
    bool training = false;
    ProcessOptions p;
    p.argv = std::move(argv);
    p.output = ProcessOptions::Output::kLines;
    p.on_line = [&](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu);
      output += line + "\n";
      if (line.find("model: ") != std::string::npos) training = true;
    };
    Subprocess child(std::move(p));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (training) break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(100, 900)(rng)));
    if (send) {
      send(child);
    } else {
      child.signal_group(signal);
    }
    const auto code = child.wait_for(std::chrono::seconds(120));
    std::lock_guard<std::mutex> lock(mu);
    return {code.value_or(-1), output};
  }

  TempDir data_;
};

TEST_F(Preemption, SignalsAtRandomMomentsResumeToTheUninterruptedWeights) {
  TempDir full;
  run(train(full.path()));
  const torch::Tensor expected = testing::model_weights(full / "model");
  std::mt19937 rng(std::random_device{}());
  for (int signal : {SIGTERM, SIGINT, SIGUSR1}) {
    TempDir out;
    const auto [code, output] = run_and_signal(train(out.path()), signal, rng);
    ASSERT_EQ(code, 128 + signal) << output;
    EXPECT_NE(output.find("stopped after step"), std::string::npos) << output;
    const auto found = find_checkpoints(out / "checkpoints");
    ASSERT_FALSE(found.empty()) << output;
    EXPECT_GT(found.front().steps, 0) << "a mid-epoch checkpoint: " << found.front().path;
    auto resume = train(out.path());
    resume.insert(resume.end(), {"--resume-from", "auto"});
    const std::string resumed = run(resume);
    EXPECT_NE(resumed.find("after step " + std::to_string(found.front().steps)), std::string::npos)
        << resumed;
    EXPECT_TRUE(torch::equal(testing::model_weights(out / "model"), expected))
        << "signal " << signal << ": max abs diff "
        << (testing::model_weights(out / "model") - expected).abs().max().item<double>();
    // The epochs' metrics are those of the uninterrupted run (steps and sums carried over).
    const auto a = testing::read_jsonl(full / "metrics.jsonl");
    const auto b = testing::read_jsonl(out / "metrics.jsonl");
    ASSERT_EQ(b.back()["epoch"], 12);
    EXPECT_EQ(a.back()["steps"], b.back()["steps"]);
    EXPECT_EQ(a.back()["global_step"], b.back()["global_step"]);
  }
}

TEST_F(Preemption, StepCheckpointsSurviveAKillAndOnlyTheNewestAreKept) {
  TempDir full, out;
  run(train(full.path()));
  std::mt19937 rng(std::random_device{}());
  auto argv = train(out.path());
  argv.insert(argv.end(), {"--checkpoint-every-steps", "100"});
  const auto [code, output] = run_and_signal(argv, SIGKILL, rng);
  ASSERT_EQ(code, 128 + SIGKILL) << output;
  int step_files = 0;
  for (const auto& f : find_checkpoints(out / "checkpoints")) step_files += f.steps > 0;
  EXPECT_LE(step_files, 2);
  argv.insert(argv.end(), {"--resume-from", "auto"});
  run(argv);
  EXPECT_TRUE(
      torch::equal(testing::model_weights(out / "model"), testing::model_weights(full / "model")));
  for (const auto& f : find_checkpoints(out / "checkpoints")) {
    EXPECT_EQ(f.steps, 0) << "superseded by the epoch checkpoints: " << f.path;
  }
}

TEST_F(Preemption, RanksAgreeOnTheStepAndResumeToTheUninterruptedWeights) {
  TempDir full, out;
  // 4 epochs (the suite's longest test with 12): still several seconds of training to stop in.
  const auto ring = [this](const TempDir& dir) {
    auto argv = train(dir.path(), true);
    argv.insert(argv.end(), {"--epochs", "4"});
    return argv;
  };
  run(ring(full));
  std::mt19937 rng(std::random_device{}());
  const auto [code, output] = run_and_signal(ring(out), SIGTERM, rng);
  EXPECT_NE(code, 0) << output;
  const size_t at = output.find("stopped after step");
  ASSERT_NE(at, std::string::npos) << "exit " << code << ":\n" << output;
  EXPECT_EQ(output.find("MPI_ABORT"), std::string::npos) << output;
  auto resume = ring(out);
  resume.insert(resume.end(), {"--resume-from", "auto"});
  run(resume);
  EXPECT_TRUE(
      torch::equal(testing::model_weights(out / "model"), testing::model_weights(full / "model")));
}

/// The pid of the task of `type` that `cluster run` (pid `parent`) started, or -1.
pid_t cluster_task(pid_t parent, const std::string& type) {
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    std::ifstream environ(entry.path() / "environ");
    const std::string env((std::istreambuf_iterator<char>(environ)), {});
    if (env.find("\"type\":\"" + type + "\"") != std::string::npos) return std::stoi(name);
  }
  return -1;
}

// A parameter-server cluster agrees through its ps: every task stops after the same step, the
// chief's checkpoint holds the whole cluster's position and partial sums, and resuming ends with
// the weights of a cluster that was never stopped. Whoever gets the signal: here `cluster run`,
// which passes it to every task.
TEST_F(Preemption, PsClusterStopsAfterTheSameStepAndResumesToTheUninterruptedWeights) {
  TempDir full, out;
  run(cluster(full.path(), true));
  std::mt19937 rng(std::random_device{}());
  const auto [code, output] = run_and_signal(cluster(out.path(), true), SIGTERM, rng);
  ASSERT_EQ(code, 128 + SIGTERM) << output;
  EXPECT_NE(output.find("stopped after step"), std::string::npos) << output;
  EXPECT_NE(output.find("shutdown requested by worker:0"), std::string::npos) << output;
  EXPECT_EQ(output.find("failed"), std::string::npos) << output;
  auto resume = cluster(out.path(), true);
  resume.insert(resume.end(), {"--resume-from", "auto"});
  run(resume);
  const torch::Tensor expected = testing::model_weights(full / "model");
  const torch::Tensor got = testing::model_weights(out / "model");
  EXPECT_TRUE(torch::equal(got, expected)) << "max abs diff " << (got - expected).abs().max();
}

// Only the ps is told (its node is being preempted): it tells the tasks through its replies, they
// stop, the chief checkpoints and shuts it down, and everyone exits with the signal's code. Async
// mode, where a stop spreads to each task at its next push.
TEST_F(Preemption, SignalToThePsAloneStopsTheWholeCluster) {
  TempDir out;
  std::mt19937 rng(std::random_device{}());
  pid_t ps = -1;
  const auto [code, output] =
      run_and_signal(cluster(out.path(), false), SIGTERM, rng, [&](Subprocess& child) {
        ps = cluster_task(child.pid(), "ps");
        ASSERT_GT(ps, 0);
        ::kill(ps, SIGTERM);
      });
  ASSERT_EQ(code, 128 + SIGTERM) << output;
  EXPECT_NE(output.find("[ps:0] SIGTERM: the training tasks stop"), std::string::npos) << output;
  for (const char* task : {"[worker:0] stopped by SIGTERM", "[worker:1] stopped by SIGTERM"})
    EXPECT_NE(output.find(task), std::string::npos) << task << "\n" << output;
  EXPECT_EQ(output.find("failed"), std::string::npos) << output;
  const auto found = find_checkpoints(out / "checkpoints");
  ASSERT_FALSE(found.empty()) << output;
}

TEST_F(Preemption, MidEpochCheckpointOfAnotherWorldSizeIsRefused) {
  TempDir out;
  std::mt19937 rng(1);
  const auto [code, output] = run_and_signal(train(out.path(), true), SIGTERM, rng);
  ASSERT_NE(output.find("stopped after step"), std::string::npos) << output;
  const auto found = find_checkpoints(out / "checkpoints");
  ASSERT_FALSE(found.empty());
  ASSERT_GT(found.front().steps, 0);
  auto single = train(out.path());
  single.insert(single.end(), {"--resume-from", found.front().path.string()});
  const std::string refused = run(single, 2);
  EXPECT_NE(refused.find("resumes only with the same"), std::string::npos) << refused;
  // auto says why it passes over it and takes the newest one that fits (an epoch checkpoint, or
  // a fresh start when there is none).
  single = train(out.path());
  single.insert(single.end(), {"--resume-from", "auto", "--epochs", "1"});
  const bool epoch_checkpoint = found.back().steps == 0;
  const std::string fallback = run(single, epoch_checkpoint ? 0 : 2);
  EXPECT_NE(fallback.find("resumes only with the same"), std::string::npos) << fallback;
}

}  // namespace
}  // namespace dtrain
