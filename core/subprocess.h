// The one way dtrain starts child processes (data fetch helpers, PS clusters, sweeps, launch).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace dtrain {

/// What to start and how.
struct ProcessOptions {
  /// argv[0] is looked up on PATH unless it contains a '/'.
  std::vector<std::string> argv;
  /// Set (or replace) in the child's environment, on top of the parent's.
  std::map<std::string, std::string> env;
  /// Removed from the child's environment.
  std::vector<std::string> unset_env;
  /// The child's working directory (the parent's stays as it is). Empty: the parent's.
  std::filesystem::path cwd;

  enum class Output {
    kInherit,   ///< the parent's stdout and stderr
    kToStderr,  ///< both go to the parent's stderr (helpers whose chatter is not our output)
    kLines,     ///< each line of stdout+stderr goes to `on_line` (from a reader thread)
  };
  Output output = Output::kInherit;
  /// For kLines; called from the reader thread, one call per line (without the newline).
  std::function<void(const std::string& line)> on_line;
  /// Name used in error messages and logs; default argv[0].
  std::string name;
};

/// A running child in its own process group, with stdin from /dev/null and a parent-death
/// signal (SIGKILL), so that no child outlives a dtrain that dies. Destroying a Subprocess that
/// is still running kills its whole group and reaps it: an exception can never orphan children.
/// Linux delivers the parent-death signal when the *thread* that started the child ends, so start
/// children from a thread that lives as long as they should (the main thread, or a scheduler
/// thread that owns them). Being in their own group, children do not get the terminal's Ctrl-C:
/// the parent decides (and if it dies of it, the parent-death signal ends them).
class Subprocess {
 public:
  /// Starts the child; throws IoError naming the program if it cannot be found or started.
  explicit Subprocess(ProcessOptions options);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  const std::string& name() const { return options_.name; }
  pid_t pid() const { return pid_; }
  bool running();

  /// Exit code if the child has ended (128 + signal for a signal), without blocking. When it
  /// has, whatever is left of its process group is ended too.
  std::optional<int> poll();
  /// Waits up to `timeout`; nullopt if it is still running then.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  /// Waits until the child ends.
  int wait();

  /// Sends `signal` to the child's whole process group (nothing if it has ended).
  void signal_group(int signal);
  /// SIGTERM to the group, then SIGKILL after `grace` if it is still running; returns the exit
  /// code.
  int stop(std::chrono::milliseconds grace);

 private:
  void finish_output();

  ProcessOptions options_;
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::thread reader_;
};

/// Runs a child to completion with a time limit (stopping its group when it passes); returns its
/// exit code, or nullopt if it could not start or ran out of time (logged with the reason).
std::optional<int> run_with_timeout(ProcessOptions options, std::chrono::seconds timeout);

}  // namespace dtrain
