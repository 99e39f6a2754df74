// dtrain launch: run a training command and start it again when it fails at run time, as
// torchrun's --max-restarts and Horovod elastic do. The command resumes by itself (e.g.
// `dtrain train --resume-from auto`); launch only decides whether to run it again.
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <thread>

#include "core/errors.h"
#include "core/stop_signal.h"
#include "core/subprocess.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dtrain::cli {

namespace {

/// Why an attempt ended, in words.
std::string describe_exit(int code) {
  if (code > 128 && code < 128 + 65) {
    return "killed by " + signal_name(code - 128) + " (exit " + std::to_string(code) + ")";
  }
  return "exit code " + std::to_string(code);
}

/// Sleeps `seconds`, returning early (true) when a stop signal arrives.
bool sleep_unless_stopped(double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    if (stop_signal() != 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return stop_signal() != 0;
}

}  // namespace

int launch_command(int argc, char** argv) {
  int split = argc;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      split = i;
      break;
    }
  }
  cxxopts::Options options(
      "dtrain launch",
      "Run COMMAND; when it fails at run time (an exit code other than 0 and 2, or a signal) run "
      "it again, up to --max-restarts times. Usage and configuration errors (exit 2) are never "
      "retried. Each attempt sees DTRAIN_RESTART_COUNT (0 for the first). SIGINT/SIGTERM/SIGUSR1 "
      "are passed on to COMMAND and end the launch.\n\n"
      "  dtrain launch --max-restarts 3 -- mpirun -np 4 dtrain train --distributed ring "
      "--resume-from auto ...\n");
  options.add_options()("max-restarts", "how many times to run COMMAND again (0-1000)",
                        cxxopts::value<std::string>()->default_value("3"))(
      "restart-backoff", "seconds to wait before each restart (0-3600)",
      cxxopts::value<std::string>()->default_value("5"))("h,help", "show this help");
  cxxopts::ParseResult r;
  if (!parse_or_help(options, split, argv, r)) return 0;
  const int64_t max_restarts = int_flag(r, "max-restarts");
  const double backoff = double_flag(r, "restart-backoff");
  if (max_restarts < 0 || max_restarts > 1000) {
    throw ConfigError("--max-restarts: expected 0 to 1000, got " + std::to_string(max_restarts));
  }
  if (!(backoff >= 0 && backoff <= 3600)) {
    throw ConfigError("--restart-backoff: expected 0 to 3600 seconds, got " +
                      r["restart-backoff"].as<std::string>());
  }
  if (split + 1 >= argc) {
    throw ConfigError(
        "dtrain launch: no command given; put it after '--' (dtrain launch --max-restarts 3 -- "
        "dtrain train --resume-from auto ...)");
  }
  std::vector<std::string> command(argv + split + 1, argv + argc);

  install_stop_signals();
  for (int64_t restart = 0;; ++restart) {
    ProcessOptions p;
    p.argv = command;
    p.env["DTRAIN_RESTART_COUNT"] = std::to_string(restart);
    p.output = ProcessOptions::Output::kInherit;
    const auto start = std::chrono::steady_clock::now();
    std::unique_ptr<Subprocess> started;
    try {
      started = std::make_unique<Subprocess>(std::move(p));
    } catch (const IoError& e) {
      throw ConfigError(std::string("dtrain launch: ") + e.what());
    }
    Subprocess& child = *started;
    std::optional<int> code;
    int forwarded = 0;
    while (!(code = child.wait_for(std::chrono::milliseconds(100)))) {
      const int sig = stop_signal();
      if (sig != 0 && sig != forwarded) {
        spdlog::warn("launch: {} received; passing it on to the command and not restarting",
                     signal_name(sig));
        child.signal_group(sig);
        forwarded = sig;
      }
    }
    const double took =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (*code == 0) {
      if (restart > 0) {
        spdlog::info("launch: the command succeeded after {} restart{}", restart,
                     restart == 1 ? "" : "s");
      }
      return 0;
    }
    if (stop_signal() != 0) return *code;
    if (*code == 2) {
      spdlog::error(
          "launch: the command failed with a usage or configuration error (exit 2) "
          "after {:.1f} s; not retried",
          took);
      return 2;
    }
    if (*code == 126 || *code == 127) {
      spdlog::error("launch: '{}' could not be run ({}); not retried", command.front(),
                    describe_exit(*code));
      return 2;
    }
    if (restart >= max_restarts) {
      spdlog::error("launch: the command failed ({}) after {:.1f} s; no restarts left ({} used)",
                    describe_exit(*code), took, restart);
      return *code;
    }
    spdlog::warn("launch: the command failed ({}) after {:.1f} s; restart {} of {} in {:.0f} s",
                 describe_exit(*code), took, restart + 1, max_restarts, backoff);
    if (sleep_unless_stopped(backoff)) return *code;
  }
}

}  // namespace dtrain::cli
