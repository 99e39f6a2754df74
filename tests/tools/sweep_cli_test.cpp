// `dtrain sweep` end to end: real trials on MNIST, early termination, the best model registered,
// resume after the controller is killed, and broken specs stopped early.
#include <gtest/gtest.h>
#include <signal.h>

#include <mutex>
#include <sstream>
#include <thread>

#include "core/subprocess.h"
#include "run_outputs.h"
#include "test_util.h"

namespace dtrain::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

CommandResult in_dir(const fs::path& cwd, const std::string& args, int timeout = 600) {
  return run_command(
      "env -C '" + cwd.string() + "' DTRAIN_WORKSPACE=ws " + dtrain_binary() + " " + args, timeout);
}

Json runs_json(const fs::path& cwd) {
  const auto r = in_dir(cwd, "runs list --json --all");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return Json::parse(r.output.substr(r.output.find('[')));
}

std::string sweep_id_in(const std::string& output) {
  const size_t at = output.find("] sweep ");
  if (at == std::string::npos) return "";
  return output.substr(at + 8, 32);
}

TEST(SweepCli, SmallMnistSweepCancelsABadLearningRateRange) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir dir;
  // Grid order: two good learning rates first, then the bad range interleaved with good ones.
  const Json spec = {
      {"experiment", "mnist-lr"},
      {"parameters", {{"learning-rate", {{"choice", {0.05, 0.03, 8.0, 6.0, 0.02, 9.0}}}}}},
      {"sampling", "grid"},
      {"primary_metric", "validation_acc"},
      {"goal", "maximize"},
      {"max_total_runs", 6},
      {"max_concurrent_runs", 2},
      {"early_termination",
       {{"policy", "bandit"},
        {"slack_factor", 0.1},
        {"evaluation_interval", 1},
        {"delay_evaluation", 1}}},
      {"train_args", {"--data-dir", mnist, "--epochs", "2"}}};
  write_bytes(dir / "sweep.json", spec.dump());
  const auto r = in_dir(dir, "sweep --spec sweep.json --output-dir sw --register-best best-mnist");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::string id = sweep_id_in(r.output);
  ASSERT_EQ(id.size(), 32u) << r.output;

  const Json summary = Json::parse(read_text(dir / "sw" / "sweep.json"));
  ASSERT_EQ(summary.at("trials").size(), 6u);
  int cancelled = 0, epochs_run = 0;
  for (const auto& t : summary.at("trials")) {
    const double lr = t.at("params").at("learning-rate");
    epochs_run += t.at("epochs").get<int>();
    if (t.at("status") == "cancelled") {
      ++cancelled;
      EXPECT_GE(lr, 6.0) << "only the bad range is cancelled: " << t.dump();
      EXPECT_NE(t.at("reason").get<std::string>().find("bandit at epoch 1"), std::string::npos);
    } else {
      EXPECT_EQ(t.at("status"), "completed") << t.dump();
    }
    if (lr < 1) {
      EXPECT_EQ(t.at("status"), "completed");
      EXPECT_GT(t.at("validation_acc").get<double>(), 0.95);
    }
  }
  EXPECT_GE(cancelled, 2) << r.output;
  std::cout << "early termination: " << epochs_run << " of " << 6 * 2 << " epochs run, "
            << cancelled << " trials cancelled" << std::endl;
  EXPECT_LT(summary.at("best").at("params").at("learning-rate").get<double>(), 1);
  EXPECT_NE(r.output.find("best: trial"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::file_size(dir / "sw" / "sweep.png") > 1000);

  // Parent and child runs in the workspace; cancelled runs say why.
  int children = 0;
  for (const auto& run : runs_json(dir)) {
    if (run.at("id") == id) {
      EXPECT_EQ(run.at("status"), "completed");
      EXPECT_EQ(run.at("tags").at("best_run"), summary.at("best").at("run_id"));
      continue;
    }
    ASSERT_EQ(run.at("tags").at("sweep"), id);
    EXPECT_TRUE(run.at("tags").contains("param.learning-rate"));
    EXPECT_EQ(run.at("experiment"), "mnist-lr");
    if (run.at("status") == "cancelled") {
      EXPECT_NE(run.at("error").get<std::string>().find("bandit"), std::string::npos);
    }
    ++children;
  }
  EXPECT_EQ(children, 6);
  const auto show = in_dir(dir, "model show best-mnist:1 --json");
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_EQ(Json::parse(show.output.substr(show.output.find('{'))).at("run_id"),
            summary.at("best").at("run_id"));
}

TEST(SweepCli, ResumeAfterTheControllerIsKilledRunsNothingTwice) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 20000, 500, 9);
  const Json spec = {
      {"parameters", {{"learning-rate", {{"choice", {0.01, 0.02, 0.03, 0.04}}}}}},
      {"sampling", "grid"},
      {"max_total_runs", 4},
      {"max_concurrent_runs", 2},
      {"train_args",
       {"--data-dir", (dir / "data").string(), "--epochs", "3", "--checkpoint-every", "1"}}};
  write_bytes(dir / "sweep.json", spec.dump());
  std::string output;
  std::mutex mutex;
  {
    ProcessOptions o;
    o.argv = {dtrain_binary(), "sweep", "--spec", "sweep.json", "--output-dir", "sw"};
    o.env = {{"DTRAIN_WORKSPACE", "ws"}};
    o.cwd = dir.path();
    o.output = ProcessOptions::Output::kLines;
    o.on_line = [&](const std::string& line) {
      std::lock_guard<std::mutex> lock(mutex);
      output += line + "\n";
    };
    Subprocess controller(std::move(o));
    // Kill it once trial 2 (started after one of the first two finished) has a checkpoint.
    const fs::path ckpt = dir / "sw" / "trial-002" / "checkpoints" / "ckpt-epoch-000001.pt";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(180);
    while (std::chrono::steady_clock::now() < deadline && !fs::exists(ckpt)) {
      std::lock_guard<std::mutex> lock(mutex);
      ASSERT_TRUE(controller.running()) << output;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ASSERT_TRUE(fs::exists(ckpt)) << output;
    controller.signal_group(SIGKILL);
    controller.wait();
  }
  std::string id;
  {
    std::lock_guard<std::mutex> lock(mutex);
    id = sweep_id_in(output);
  }
  ASSERT_EQ(id.size(), 32u) << output;
  // Its trials die with it (parent-death signal); give them a moment.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto r = in_dir(dir, "sweep --resume " + id.substr(0, 10));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("trial 2 resumed"), std::string::npos) << r.output;

  std::map<std::string, int> completed_per_trial;
  for (const auto& run : runs_json(dir)) {
    if (run.at("id") == id || !run.at("tags").contains("trial")) continue;
    if (run.at("status") == "completed") ++completed_per_trial[run.at("tags").at("trial")];
  }
  EXPECT_EQ(completed_per_trial,
            (std::map<std::string, int>{{"0", 1}, {"1", 1}, {"2", 1}, {"3", 1}}))
      << r.output;
  ASSERT_TRUE(fs::exists(dir / "sw" / "sweep.json")) << r.output;
  const Json summary = Json::parse(read_text(dir / "sw" / "sweep.json"));
  EXPECT_EQ(summary.at("trials").size(), 4u);
  for (const auto& t : summary.at("trials")) {
    EXPECT_EQ(t.at("status"), "completed");
    EXPECT_EQ(t.at("epochs"), 3);
  }
  // A resumed trial continued its run: epochs 1..3 once each.
  for (const auto& t : summary.at("trials")) {
    ASSERT_EQ(t.at("run_id").get<std::string>().size(), 32u) << t.dump();
    const auto shown = in_dir(dir, "runs show --json " + t.at("run_id").get<std::string>());
    const Json j = Json::parse(shown.output.substr(shown.output.find('{')));
    std::vector<int64_t> epochs;
    for (const auto& e : j.at("epochs")) epochs.push_back(e.at("epoch"));
    EXPECT_EQ(epochs, (std::vector<int64_t>{1, 2, 3})) << t.dump();
  }
}

TEST(SweepCli, BrokenSpecsStopBeforeOrEarly) {
  TempDir dir;
  write_bytes(dir / "bad.json",
              R"({"parameters": {"learning-rate": {"choice": [0.1]}, "colour": {"choice": [1]}},
                  "train_args": ["--data-dir", "d"]})");
  auto r = in_dir(dir, "sweep --spec bad.json");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("bad.json: parameters.colour"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "ws")) << "nothing starts before the spec is valid";
  write_bytes(dir / "notjson.json", "{");
  r = in_dir(dir, "sweep --spec notjson.json");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = in_dir(dir, "sweep --spec bad.json --resume abc");
  EXPECT_EQ(r.exit_code, 2) << r.output;

  // Every trial fails the same way (no data there): stop after the first max_concurrent_runs.
  write_bytes(dir / "nodata.json",
              R"({"parameters": {"learning-rate": {"uniform": [0.01, 0.1]}},
                  "max_total_runs": 10, "max_concurrent_runs": 2,
                  "train_args": ["--data-dir", "/nonexistent/mnist", "--epochs", "1"]})");
  r = in_dir(dir, "sweep --spec nodata.json");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("the first 2 trials failed with the same error"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("/nonexistent/mnist"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("trial 2 started"), std::string::npos) << r.output;
  int failed_trials = 0;
  for (const auto& run : runs_json(dir)) {
    if (!run.at("tags").contains("trial")) continue;
    EXPECT_EQ(run.at("status"), "failed") << run.dump();
    EXPECT_NE(run.at("error").get<std::string>().find("/nonexistent/mnist"), std::string::npos);
    EXPECT_TRUE(run.at("tags").contains("param.learning-rate"));
    ++failed_trials;
  }
  EXPECT_EQ(failed_trials, 2) << "each failed trial is recorded as a run";
}

TEST(SweepCli, LauncherPrefixRunsDataParallelTrialsAndTheDeadlineCancels) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 2000, 200, 4);
  // Each trial is itself a 2-rank ring job under mpirun.
  const Json spec = {{"parameters", {{"learning-rate", {{"choice", {0.02}}}}}},
                     {"sampling", "grid"},
                     {"max_total_runs", 1},
                     {"launcher", {"mpirun", "--oversubscribe", "-np", "2"}},
                     {"train_args",
                      {"--data-dir", (dir / "data").string(), "--epochs", "1", "--distributed",
                       "ring", "--threads", "1"}}};
  write_bytes(dir / "mpi.json", spec.dump());
  auto r = run_command("env -C '" + dir.path().string() +
                           "' DTRAIN_WORKSPACE=ws OMPI_ALLOW_RUN_AS_ROOT=1 "
                           "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 " +
                           dtrain_binary() + " sweep --spec mpi.json --output-dir mpi",
                       300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json mpi = Json::parse(read_text(dir / "mpi" / "sweep.json"));
  ASSERT_EQ(mpi.at("trials").size(), 1u);
  EXPECT_EQ(mpi.at("trials")[0].at("status"), "completed") << r.output;
  bool found = false;
  for (const auto& run : runs_json(dir)) {
    if (run.at("tags").contains("trial")) {
      EXPECT_EQ(run.at("world_size"), 2) << "the trial ran as a 2-rank job";
      found = true;
    }
  }
  EXPECT_TRUE(found);

  // max_duration_minutes: running trials are cancelled and the sweep ends with what it has.
  const Json slow = {{"parameters", {{"learning-rate", {{"choice", {0.01, 0.02}}}}}},
                     {"sampling", "grid"},
                     {"max_total_runs", 2},
                     {"max_concurrent_runs", 2},
                     {"max_duration_minutes", 0.05},
                     {"train_args", {"--data-dir", (dir / "data").string(), "--epochs", "1000"}}};
  write_bytes(dir / "slow.json", slow.dump());
  const auto start = std::chrono::steady_clock::now();
  r = in_dir(dir, "sweep --spec slow.json --output-dir slow", 120);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LT(seconds, 40) << "3 s of sweep, then the trials are stopped";
  const Json timed = Json::parse(read_text(dir / "slow" / "sweep.json"));
  for (const auto& t : timed.at("trials")) {
    EXPECT_EQ(t.at("status"), "cancelled");
    EXPECT_NE(t.at("reason").get<std::string>().find("max_duration_minutes"), std::string::npos);
  }
}

}  // namespace
}  // namespace dtrain::testing
