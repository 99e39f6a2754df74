// dtrain cluster run: a whole parameter-server cluster on 127.0.0.1, for tests and for trying PS
// mode on one machine.
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/stop_signal.h"
#include "core/subprocess.h"
#include "distributed/ports.h"
#include "tools/cluster_run.h"

namespace dtrain::cli {

namespace {

std::mutex out_mutex;

// Path of the running dtrain binary, so children are the same build.
std::string self_exe() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("/proc/self/exe") : p.string();
}

/// 128 + SIGINT, SIGTERM or SIGUSR1: how a task ends after a graceful stop.
bool is_stop_exit(int code) {
  return code == 128 + SIGINT || code == 128 + SIGTERM || code == 128 + SIGUSR1;
}

}  // namespace

int cluster_run(const ClusterRunOptions& o) {
  if (o.ps < 1 || o.ps > 64) throw ConfigError("--ps: expected 1 to 64 parameter servers");
  if (o.workers < 0 || o.workers > 256 || o.workers + (o.chief ? 1 : 0) < 1) {
    throw ConfigError("--workers: expected 0 to 256 workers, and at least one worker or --chief");
  }
  if (o.workers == 0 && !o.chief) throw ConfigError("--workers: need at least one worker");
  const int total = o.ps + o.workers + (o.chief ? 1 : 0);
  const std::vector<int> ports = distributed::free_loopback_ports(total);
  nlohmann::json cluster;
  int next = 0;
  auto address = [&] { return "127.0.0.1:" + std::to_string(ports[static_cast<size_t>(next++)]); };
  for (int i = 0; i < o.ps; ++i) cluster["ps"].push_back(address());
  for (int i = 0; i < o.workers; ++i) cluster["worker"].push_back(address());
  if (o.chief) cluster["chief"].push_back(address());

  // Destroying a Subprocess ends its process group: an exception anywhere below (a task that
  // cannot start, a full disk) takes every started task down with it.
  std::vector<std::unique_ptr<Subprocess>> children;
  const std::string exe = self_exe();
  // The tasks share a secret: the caller's DTRAIN_CLUSTER_TOKEN, else a fresh random one.
  const char* given = std::getenv("DTRAIN_CLUSTER_TOKEN");
  const std::string token = given != nullptr && *given != '\0' ? given : random_hex(16);
  auto start = [&](const std::string& type, int index) {
    const std::string name = type + ":" + std::to_string(index);
    const nlohmann::json tf = {{"cluster", cluster}, {"task", {{"type", type}, {"index", index}}}};
    ProcessOptions p;
    p.argv = {exe, "train", "--distributed", "ps"};
    p.argv.insert(p.argv.end(), o.train_args.begin(), o.train_args.end());
    p.env["TF_CONFIG"] = tf.dump();
    p.env["DTRAIN_CLUSTER_TOKEN"] = token;
    p.name = name;
    p.output = ProcessOptions::Output::kLines;
    p.on_line = [name](const std::string& line) {
      std::lock_guard<std::mutex> lock(out_mutex);
      std::cout << "[" << name << "] " << line << std::endl;
    };
    children.push_back(std::make_unique<Subprocess>(std::move(p)));
  };
  spdlog::info("cluster run: {} ps, {} worker(s){} on 127.0.0.1; TF_CONFIG cluster {}", o.ps,
               o.workers, o.chief ? " and a chief" : "", cluster.dump());
  for (int i = 0; i < o.ps; ++i) start("ps", i);
  if (o.chief) start("chief", 0);
  for (int i = 0; i < o.workers; ++i) start("worker", i);

  // The first task to fail stops the others: SIGTERM to each group, SIGKILL 10 s later. A stop
  // signal to this command is passed to every task: they stop after the same step, the chief
  // checkpoints and shuts the ps tasks down (SIGKILL only if that takes over kStopGrace).
  constexpr auto kStopGrace = std::chrono::seconds(180);
  install_stop_signals();
  int first_failure = 0, forwarded = 0, stopped = 0;
  std::string failed;
  auto kill_at = std::chrono::steady_clock::time_point::max();
  while (true) {
    if (const int sig = stop_signal(); sig != 0 && forwarded == 0 && first_failure == 0) {
      forwarded = sig;
      spdlog::warn("cluster run: {}: passing it to every task; they stop after the same step",
                   signal_name(sig));
      for (auto& c : children) c->signal_group(sig);
      kill_at = std::chrono::steady_clock::now() + kStopGrace;
    }
    size_t running = 0;
    for (auto& c : children) {
      const auto code = c->poll();
      if (!code) {
        ++running;
        continue;
      }
      // A task stopped by a signal (here or sent to it alone) is not a failure: the others stop
      // too, through the ps, and a second signal would cut the chief's checkpoint short.
      if (is_stop_exit(*code)) {
        if (stopped == 0) stopped = *code;
        continue;
      }
      if (*code != 0 && first_failure == 0) {
        first_failure = *code;
        failed = c->name();
        spdlog::error("cluster run: {} exited with {}; stopping the other tasks", failed, *code);
        for (auto& other : children) other->signal_group(SIGTERM);
        kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      }
    }
    if (running == 0) break;
    if (std::chrono::steady_clock::now() > kill_at) {
      for (auto& c : children) c->signal_group(SIGKILL);
      kill_at = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (first_failure != 0) {
    spdlog::error("cluster run: failed: {} exited with {}", failed, first_failure);
    return first_failure;
  }
  if (stopped != 0) {
    spdlog::warn("cluster run: the tasks stopped on {}", signal_name(stopped - 128));
    return stopped;
  }
  spdlog::info("cluster run: all {} tasks exited 0", children.size());
  return 0;
}

}  // namespace dtrain::cli
