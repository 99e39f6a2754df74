// The run history end to end: real `dtrain train` processes writing a workspace, read back with
// `dtrain runs ...`, TensorBoard files checked by an independent Python reader.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "core/subprocess.h"
#include "run_outputs.h"
#include "test_util.h"

namespace dtrain::testing {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string quote(const std::string& s) { return "'" + s + "'"; }

/// `dtrain <args>` run in `cwd`, with a time limit.
CommandResult dtrain(const fs::path& cwd, const std::string& args, int timeout = 300) {
  return run_command("env -C " + quote(cwd.string()) + " " + dtrain_binary() + " " + args, timeout);
}

/// The JSON document in a command's output (logs, if any, go before it).
Json json_output(const CommandResult& r) {
  const size_t start = r.output.find_first_of("[{");
  if (start == std::string::npos) {
    ADD_FAILURE() << "no JSON in: " << r.output;
    return Json();
  }
  return Json::parse(r.output.substr(start));
}

Json list_runs(const fs::path& ws, const std::string& extra = "") {
  const auto r = dtrain(".", "runs list --workspace " + quote(ws.string()) + " --json " + extra);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json_output(r);
}

Json show_run(const fs::path& ws, const std::string& id) {
  const auto r = dtrain(".", "runs show --workspace " + quote(ws.string()) + " --json " + id);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  return json_output(r);
}

std::vector<int64_t> epochs_of(const Json& shown) {
  std::vector<int64_t> epochs;
  for (const auto& e : shown.at("epochs")) epochs.push_back(e.at("epoch").get<int64_t>());
  return epochs;
}

/// Width and height from a PNG's IHDR chunk.
std::pair<uint32_t, uint32_t> png_size(const fs::path& path) {
  const std::string b = read_text(path);
  EXPECT_GE(b.size(), 24u);
  EXPECT_EQ(b.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
  auto be32 = [&](size_t at) {
    uint32_t v = 0;
    for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
    return v;
  };
  return {be32(16), be32(20)};
}

/// A background `dtrain train` whose output lines are collected.
class TrainProcess {
 public:
  TrainProcess(const fs::path& cwd, std::vector<std::string> args) {
    ProcessOptions o;
    o.argv = {dtrain_binary(), "train"};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    o.cwd = cwd;
    o.output = ProcessOptions::Output::kLines;
    o.on_line = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mutex_);
      output_ += line + "\n";
    };
    process_ = std::make_unique<Subprocess>(std::move(o));
  }
  /// Waits until the output contains `text` (false after `seconds` or if the process ended).
  bool wait_for_output(const std::string& text, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < deadline) {
      if (output().find(text) != std::string::npos) return true;
      if (!process_->running()) return output().find(text) != std::string::npos;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  std::string output() {
    std::lock_guard<std::mutex> lock(mutex_);
    return output_;
  }
  Subprocess& process() { return *process_; }

 private:
  std::mutex mutex_;
  std::string output_;
  std::unique_ptr<Subprocess> process_;
};

TEST(RunsCli, TrainRecordsTheRunAndEverythingReadsItBack) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir dir;
  const fs::path ws = dir / "ws";
  const std::string common = "--data-dir " + quote(mnist) + " --workspace " + quote(ws.string());
  auto r = dtrain(dir, "train " + common +
                           " --epochs 2 --experiment e1 --run-name alpha --tag team=a "
                           "--tag owner=b --log-every-steps 200 --progress always");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\r\x1b[Kepoch 1/2 step "), std::string::npos) << "progress line drawn";

  Json runs = list_runs(ws);
  ASSERT_EQ(runs.size(), 1u) << runs.dump();
  const Json run = runs[0];
  const std::string id = run.at("id");
  EXPECT_EQ(run.at("status"), "completed");
  EXPECT_EQ(run.at("name"), "alpha");
  EXPECT_EQ(run.at("experiment"), "e1");
  EXPECT_EQ(run.at("params").at("batch_size"), "50");
  EXPECT_EQ(run.at("params").at("learning_rate"), "0.01");
  EXPECT_EQ(run.at("tags"), (Json{{"team", "a"}, {"owner", "b"}}));
  EXPECT_GT(run.at("metrics").at("validation_acc").get<double>(), 0.9);
  EXPECT_EQ(read_jsonl(dir / "outputs" / "metrics.jsonl").size(), 2u);
  EXPECT_EQ(Json::parse(read_text(dir / "outputs" / "run.json")).at("run_id"), id);

  const Json shown = show_run(ws, id.substr(0, 6));
  EXPECT_EQ(epochs_of(shown), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(shown.at("step_loss").size(), 12u);  // 2400 steps, every 200th
  std::set<std::string> artifact_paths;
  for (const auto& a : shown.at("artifacts")) artifact_paths.insert(a.at("path"));
  for (const char* p : {"model/model.pt", "model/model.json", "model/model.onnx", "metrics.jsonl",
                        "run.json", "curves.png"}) {
    EXPECT_TRUE(artifact_paths.count(p)) << p;
  }
  for (const auto& p : artifact_paths) EXPECT_EQ(p.rfind("checkpoints/", 0), std::string::npos);

  // TensorBoard, read by a program that is not dtrain's.
  const auto tb = run_command(
      "/usr/bin/python3 " + std::string(DTRAIN_SOURCE_DIR) + "/tests/tools/check_tensorboard.py " +
      quote((dir / "outputs").string()) + " " + quote((ws / "workspace.db").string()) + " " + id);
  EXPECT_EQ(tb.exit_code, 0) << tb.output;
  EXPECT_NE(tb.output.find("ok"), std::string::npos) << tb.output;

  EXPECT_EQ(png_size(dir / "outputs" / "curves.png"), std::make_pair(1200u, 500u));

  // Human-readable show and list.
  r = dtrain(".", "runs show --workspace " + quote(ws.string()) + " " + id.substr(0, 8));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("alpha"), std::string::npos);
  EXPECT_NE(r.output.find("model/model.onnx"), std::string::npos);
  r = dtrain(".", "runs list --workspace " + quote(ws.string()));
  EXPECT_NE(r.output.find(id.substr(0, 8)), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("completed"), std::string::npos) << r.output;

  // Download: byte-identical to outputs/, SHA-256 verified.
  r = dtrain(".", "runs get --workspace " + quote(ws.string()) + " " + id + " --to " +
                      quote((dir / "got").string()));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* p : {"model/model.pt", "model/model.onnx", "metrics.jsonl", "curves.png"}) {
    EXPECT_EQ(read_text(dir / "got" / p), read_text(dir / "outputs" / p)) << p;
  }
  // Deleting outputs/ loses nothing recorded: get again after it is gone.
  fs::remove_all(dir / "outputs");
  r = dtrain(".", "runs get --workspace " + quote(ws.string()) + " " + id + " --to " +
                      quote((dir / "again").string()));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(dir / "again" / "model/model.pt"), read_text(dir / "got" / "model/model.pt"));

  // A tampered blob: exit 2 naming it, nothing written.
  std::string onnx_sha;
  for (const auto& a : shown.at("artifacts")) {
    if (a.at("path") == "model/model.onnx") onnx_sha = a.at("sha256");
  }
  const fs::path blob = ws / "artifacts" / "sha256" / onnx_sha.substr(0, 2) / onnx_sha;
  std::string bytes = read_text(blob);
  bytes[bytes.size() / 2] ^= 1;
  write_bytes(blob, bytes);
  r = dtrain(".", "runs get --workspace " + quote(ws.string()) + " " + id + " --to " +
                      quote((dir / "tampered").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find(blob.string()), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("model/model.onnx"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "tampered" / "model" / "model.pt"));

  // A different file in the way is not overwritten without --force.
  write_bytes(dir / "got" / "metrics.jsonl", "mine\n");
  fs::remove(blob);
  r = dtrain(".", "runs get --workspace " + quote(ws.string()) + " " + id + " --to " +
                      quote((dir / "got").string()));
  EXPECT_EQ(r.exit_code, 2) << r.output;  // the missing blob is found first
  EXPECT_NE(r.output.find("missing"), std::string::npos) << r.output;

  // Soft delete and restore.
  r = dtrain(".", "runs delete --workspace " + quote(ws.string()) + " " + id.substr(0, 5));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(list_runs(ws).size(), 0u);
  EXPECT_EQ(list_runs(ws, "--all").size(), 1u);
  r = dtrain(".", "runs restore --workspace " + quote(ws.string()) + " " + id.substr(0, 5));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(list_runs(ws).size(), 1u);

  // A second run to filter and compare against.
  r = dtrain(dir, "train " + common + " --epochs 1 --learning-rate 0.05 --experiment e1 " +
                      "--tag team=c --output-dir out2 --progress never");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("\x1b[K"), std::string::npos) << "--progress never draws nothing";
  EXPECT_EQ(list_runs(ws, "--filter \"tags.team = 'a'\"").size(), 1u);
  EXPECT_EQ(
      list_runs(ws, "--filter \"params.learning_rate > 0.02 and status = 'completed'\"").size(),
      1u);
  EXPECT_EQ(list_runs(ws, "--filter \"metrics.validation_acc > 2\"").size(), 0u);
  const Json ordered = list_runs(ws, "--order-by 'params.learning_rate DESC' --limit 1");
  ASSERT_EQ(ordered.size(), 1u);
  EXPECT_EQ(ordered[0].at("params").at("learning_rate"), "0.05");
  r = dtrain(
      ".", "runs list --workspace " + quote(ws.string()) + " --filter 'metrics.validation_acc >'");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("position 25"), std::string::npos) << r.output;

  const std::string other = list_runs(ws, "--filter \"tags.team = 'c'\"")[0].at("id");
  r = dtrain(dir, "runs compare --workspace " + quote(ws.string()) + " " + id.substr(0, 8) + " " +
                      other.substr(0, 8) + " --plot cmp.png");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("params.learning_rate"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("metrics.validation_acc"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("params.batch_size"), std::string::npos) << "equal params are left out";
  EXPECT_EQ(png_size(dir / "cmp.png"), std::make_pair(1200u, 500u));
}

TEST(RunsCli, FourConcurrentRunsLoseNothing) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 6000, 1000, 3);
  const fs::path ws = dir / "ws";
  std::vector<std::unique_ptr<TrainProcess>> procs;
  for (int i = 0; i < 4; ++i) {
    procs.push_back(std::make_unique<TrainProcess>(
        dir,
        std::vector<std::string>{"--data-dir", (dir / "data").string(), "--workspace", ws.string(),
                                 "--epochs", "3", "--threads", "1", "--log-every-steps", "10",
                                 "--output-dir", "out" + std::to_string(i), "--run-name",
                                 "c" + std::to_string(i), "--seed", std::to_string(i)}));
  }
  for (auto& p : procs) {
    const auto code = p->process().wait_for(std::chrono::seconds(240));
    ASSERT_TRUE(code.has_value()) << "a run did not finish";
    EXPECT_EQ(*code, 0) << p->output();
    EXPECT_EQ(p->output().find("locked"), std::string::npos) << p->output();
  }
  const Json runs = list_runs(ws);
  ASSERT_EQ(runs.size(), 4u);
  for (const auto& run : runs) {
    EXPECT_EQ(run.at("status"), "completed");
    const Json shown = show_run(ws, run.at("id"));
    EXPECT_EQ(epochs_of(shown), (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(shown.at("step_loss").size(), 36u);  // 120 steps an epoch, every 10th
    EXPECT_GE(shown.at("artifacts").size(), 6u);
  }
}

TEST(RunsCli, KilledRunIsLostAndResumeContinuesTheSameRun) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir dir;
  const fs::path ws = dir / "ws";
  const std::vector<std::string> args = {"--data-dir", mnist,  "--workspace",        ws.string(),
                                         "--epochs",   "5",    "--checkpoint-every", "2",
                                         "--progress", "never"};
  {
    TrainProcess p(dir, args);
    // Epoch 3's metrics are recorded, its checkpoint is not (every 2 epochs): then kill -9.
    ASSERT_TRUE(p.wait_for_output("epoch 3/5", 120)) << p.output();
    p.process().signal_group(SIGKILL);
    p.process().wait();
  }
  Json runs = list_runs(ws);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].at("status"), "lost") << "a kill -9'd run must not look alive";
  const std::string id = runs[0].at("id");
  EXPECT_EQ(epochs_of(show_run(ws, id)), (std::vector<int64_t>{1, 2, 3}));

  std::string resume_args = "train --data-dir " + quote(mnist) + " --workspace " +
                            quote(ws.string()) +
                            " --epochs 5 --checkpoint-every 2 --resume-from outputs/checkpoints";
  const auto r = dtrain(dir, resume_args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("continuing run " + id), std::string::npos) << r.output;
  runs = list_runs(ws);
  ASSERT_EQ(runs.size(), 1u) << "the resumed run is the same run";
  EXPECT_EQ(runs[0].at("status"), "completed");
  const Json shown = show_run(ws, id);
  EXPECT_EQ(epochs_of(shown), (std::vector<int64_t>{1, 2, 3, 4, 5})) << "no epoch twice";
  std::set<int64_t> steps;
  for (const auto& s : shown.at("step_loss"))
    EXPECT_TRUE(steps.insert(s.at("step").get<int64_t>()).second);
  EXPECT_EQ(steps.size(), 60u);  // 6000 steps, every 100th, once each
  EXPECT_EQ(read_jsonl(dir / "outputs" / "metrics.jsonl").size(), 5u);
}

TEST(RunsCli, SigtermStopsAtAStepAndRecordsKilled) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir dir;
  const fs::path ws = dir / "ws";
  TrainProcess p(dir, {"--data-dir", mnist, "--workspace", ws.string(), "--epochs", "50"});
  ASSERT_TRUE(p.wait_for_output("epoch 1/50", 120)) << p.output();
  ::kill(p.process().pid(), SIGTERM);
  const auto code = p.process().wait_for(std::chrono::seconds(30));
  ASSERT_TRUE(code.has_value()) << "SIGTERM did not stop training";
  EXPECT_EQ(*code, 128 + SIGTERM) << p.output();
  EXPECT_NE(p.output().find("stopped by SIGTERM"), std::string::npos) << p.output();
  const Json runs = list_runs(ws);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].at("status"), "killed");
  EXPECT_NE(runs[0].at("error").get<std::string>().find("SIGTERM"), std::string::npos);
}

TEST(RunsCli, BadWorkspaceStopsBeforeTheFirstEpoch) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 600, 100, 1);
  const std::string data = " --data-dir " + quote((dir / "data").string()) + " --epochs 1";
  write_bytes(dir / "afile", "x");
  auto r = dtrain(dir, "train" + data + " --workspace afile");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("afile"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1/"), std::string::npos) << r.output;

  write_bytes(dir / "junk" / "workspace.db", std::string(2048, 'j'));
  r = dtrain(dir, "train" + data + " --workspace junk");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("junk/workspace.db"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("not a dtrain workspace"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("epoch 1/"), std::string::npos) << r.output;

  r = dtrain(dir, "train" + data + " --workspace /proc/nope");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("/proc/nope"), std::string::npos) << r.output;

  // Flags of the tracking rows are checked like any other.
  r = dtrain(dir, "train" + data + " --tag novalue");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("--tag"), std::string::npos) << r.output;
  r = dtrain(dir, "train" + data + " --tag a=1 --tag a=2");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = dtrain(dir, "train" + data + " --progress sometimes");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = dtrain(dir, "train" + data + " --log-every-steps -1");
  EXPECT_EQ(r.exit_code, 2) << r.output;

  // --workspace none tracks nothing; DTRAIN_WORKSPACE chooses the folder when the flag is absent.
  r = dtrain(dir, "train" + data + " --workspace none --output-dir o1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(fs::exists(dir / "dtrain-workspace"));
  r = run_command("env -C " + quote(dir.path().string()) + " DTRAIN_WORKSPACE=fromenv " +
                  dtrain_binary() + " train" + data + " --output-dir o2");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(list_runs(dir / "fromenv").size(), 1u);
  EXPECT_FALSE(fs::exists(dir / "dtrain-workspace"));

  // Reading commands never create a workspace, and name what is wrong.
  r = dtrain(dir, "runs list --workspace nothere");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("nothere"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "nothere"));
  r = dtrain(dir, "runs show --workspace fromenv ffff");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("no such run"), std::string::npos) << r.output;
  r = dtrain(dir, "runs frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.output;
}

TEST(ResumeAuto, StartsFreshResumesTheNewestAndSkipsACorruptOne) {
  TempDir dir;
  write_synthetic_mnist(dir / "data", 600, 100, 2);
  const std::string common = "train --data-dir " + quote((dir / "data").string()) +
                             " --workspace none --checkpoint-every 1 --resume-from auto";
  auto r = dtrain(dir, common + " --epochs 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("no checkpoint in"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("starting fresh"), std::string::npos) << r.output;

  // Leftovers of a killed run's atomic writes are removed at start.
  write_bytes(dir / "outputs" / "checkpoints" / "ckpt-epoch-000003.pt.tmp.AbC123", "partial");
  write_bytes(dir / "outputs" / "metrics.jsonl.tmp.XyZ789", "partial");
  r = dtrain(dir, common + " --epochs 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("after epoch 2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("removed 2 stale temporary files"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir / "outputs" / "metrics.jsonl.tmp.XyZ789"));
  EXPECT_EQ(read_jsonl(dir / "outputs" / "metrics.jsonl").size(), 3u);

  // The newest checkpoint is corrupt: said loudly, the one before it is used.
  const fs::path newest = dir / "outputs" / "checkpoints" / "ckpt-epoch-000003.pt";
  write_bytes(newest, read_text(newest).substr(0, 200));
  r = dtrain(dir, common + " --epochs 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cannot resume from outputs/checkpoints/ckpt-epoch-000003.pt"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("after epoch 2"), std::string::npos) << r.output;
  EXPECT_EQ(read_jsonl(dir / "outputs" / "metrics.jsonl").size(), 4u);

  // Checkpoints that exist but none loads (another architecture): exit 2, not a fresh start.
  r = dtrain(dir, common + " --epochs 5 --first-layer-neurons 17");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("none of the"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace dtrain::testing
