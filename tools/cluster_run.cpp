// dtrain cluster run: a whole parameter-server cluster on 127.0.0.1, for tests and for trying PS
// mode on one machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "tools/cluster_run.h"

extern char** environ;

namespace dtrain::cli {

namespace {

struct Child {
  std::string name;
  pid_t pid = -1;
  int out_fd = -1;
  std::thread reader;
  bool running = false;
  int exit_code = 0;
};

// Ports the kernel picks for 127.0.0.1; the sockets stay open until all are chosen so that no
// two tasks get the same one.
std::vector<int> free_ports(int n) {
  std::vector<int> fds, ports;
  for (int i = 0; i < n; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw IoError("cluster run: cannot pick a free port on 127.0.0.1");
    }
    fds.push_back(fd);
    ports.push_back(ntohs(addr.sin_port));
  }
  for (int fd : fds) close(fd);
  return ports;
}

std::mutex out_mutex;

void prefix_lines(int fd, const std::string& name) {
  FILE* in = fdopen(fd, "r");
  char* line = nullptr;
  size_t cap = 0;
  while (getline(&line, &cap, in) > 0) {
    std::lock_guard<std::mutex> lock(out_mutex);
    std::cout << "[" << name << "] " << line << std::flush;
  }
  free(line);
  fclose(in);
}

void spawn(Child& c, const std::vector<std::string>& args, const std::string& tf_config) {
  int pipe_fds[2];
  if (pipe(pipe_fds) != 0) throw IoError("cluster run: pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
  std::vector<std::string> env_store = {"TF_CONFIG=" + tf_config};
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("TF_CONFIG=", 0) != 0) env_store.emplace_back(*e);
  }
  std::vector<char*> envp, argv;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> arg_store = args;
  for (auto& a : arg_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int rc = posix_spawn(&c.pid, "/proc/self/exe", &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (rc != 0) {
    close(pipe_fds[0]);
    throw IoError("cluster run: cannot start " + c.name);
  }
  c.running = true;
  c.reader = std::thread(prefix_lines, pipe_fds[0], c.name);
}

}  // namespace

int cluster_run(const ClusterRunOptions& o) {
  if (o.ps < 1 || o.ps > 64) throw ConfigError("--ps: expected 1 to 64 parameter servers");
  if (o.workers < 0 || o.workers > 256 || o.workers + (o.chief ? 1 : 0) < 1) {
    throw ConfigError("--workers: expected 0 to 256 workers, and at least one worker or --chief");
  }
  if (o.workers == 0 && !o.chief) throw ConfigError("--workers: need at least one worker");
  const int total = o.ps + o.workers + (o.chief ? 1 : 0);
  const std::vector<int> ports = free_ports(total);
  nlohmann::json cluster;
  int next = 0;
  auto address = [&] { return "127.0.0.1:" + std::to_string(ports[static_cast<size_t>(next++)]); };
  for (int i = 0; i < o.ps; ++i) cluster["ps"].push_back(address());
  for (int i = 0; i < o.workers; ++i) cluster["worker"].push_back(address());
  if (o.chief) cluster["chief"].push_back(address());

  std::vector<std::unique_ptr<Child>> children;
  auto start = [&](const std::string& type, int index) {
    auto c = std::make_unique<Child>();
    c->name = type + ":" + std::to_string(index);
    const nlohmann::json tf = {{"cluster", cluster}, {"task", {{"type", type}, {"index", index}}}};
    std::vector<std::string> args = {"dtrain", "train", "--distributed", "ps"};
    args.insert(args.end(), o.train_args.begin(), o.train_args.end());
    spawn(*c, args, tf.dump());
    children.push_back(std::move(c));
  };
  spdlog::info("cluster run: {} ps, {} worker(s){} on 127.0.0.1; TF_CONFIG cluster {}", o.ps, o.workers,
               o.chief ? " and a chief" : "", cluster.dump());
  for (int i = 0; i < o.ps; ++i) start("ps", i);
  if (o.chief) start("chief", 0);
  for (int i = 0; i < o.workers; ++i) start("worker", i);

  int first_failure = 0;
  std::string failed;
  size_t running = children.size();
  auto deadline = std::chrono::steady_clock::time_point::max();
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      for (auto& c : children) {
        if (c->pid != pid) continue;
        c->running = false;
        --running;
        c->exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        if (c->exit_code != 0 && first_failure == 0) {
          first_failure = c->exit_code;
          failed = c->name;
          spdlog::error("cluster run: {} exited with {}; stopping the other tasks", c->name, c->exit_code);
          for (auto& other : children) if (other->running) kill(other->pid, SIGTERM);
          deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (auto& c : children) if (c->running) kill(c->pid, SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& c : children) c->reader.join();
  if (first_failure != 0) {
    spdlog::error("cluster run: failed: {} exited with {}", failed, first_failure);
    return first_failure;
  }
  spdlog::info("cluster run: all {} tasks exited 0", children.size());
  return 0;
}

}  // namespace dtrain::cli
