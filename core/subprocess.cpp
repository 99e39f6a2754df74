#include "core/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/errors.h"

extern char** environ;

namespace dtrain {
namespace fs = std::filesystem;

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(20);

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

/// argv[0] as an executable path: as given if it has a '/', else the first match on PATH.
std::string resolve_program(const std::string& program) {
  if (program.find('/') != std::string::npos) return program;
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    const size_t end = std::min(dirs.find(':', start), dirs.size());
    const std::string dir = end > start ? dirs.substr(start, end - start) : ".";
    const std::string candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return {};
}

std::vector<std::string> child_environment(const ProcessOptions& o) {
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const std::string key = entry.substr(0, entry.find('='));
    if (o.env.count(key)) continue;
    bool removed = false;
    for (const auto& u : o.unset_env) removed = removed || u == key;
    if (!removed) env.push_back(entry);
  }
  for (const auto& [k, v] : o.env) env.push_back(k + "=" + v);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& items) {
  std::vector<char*> out;
  for (auto& s : items) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

/// Reads `fd` to its end, calling `on_line` per line (a last unterminated line included).
void read_lines(int fd, const std::function<void(const std::string&)>& on_line) {
  std::string pending;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      on_line(pending.substr(0, nl));
      pending.erase(0, nl + 1);
    }
  }
  if (!pending.empty()) on_line(pending);
  ::close(fd);
}

}  // namespace

Subprocess::Subprocess(ProcessOptions options) : options_(std::move(options)) {
  if (options_.argv.empty()) throw IoError("subprocess: empty command line");
  if (options_.name.empty()) options_.name = options_.argv[0];
  const std::string program = resolve_program(options_.argv[0]);
  if (program.empty()) {
    throw IoError(options_.name + ": program '" + options_.argv[0] + "' not found on PATH");
  }
  // Everything the child needs is prepared here: after fork only async-signal-safe calls.
  std::vector<std::string> args = options_.argv, env = child_environment(options_);
  std::vector<char*> argv = c_strings(args), envp = c_strings(env);
  const std::string cwd = options_.cwd.string();
  const bool lines = options_.output == ProcessOptions::Output::kLines;

  int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  if ((lines && ::pipe2(out_pipe, O_CLOEXEC) != 0) || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw IoError(options_.name + ": cannot create a pipe: " + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) {
    const int e = errno;
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]})
      if (fd >= 0) ::close(fd);
    throw IoError(options_.name + ": cannot start: " + std::strerror(e));
  }
  if (pid_ == 0) {
    // Child. Report an exec failure's errno through err_pipe (closed on a successful exec).
    auto fail = [&](int e) {
      (void)!::write(err_pipe[1], &e, sizeof(e));
      ::_exit(127);
    };
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl took effect
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, STDIN_FILENO) < 0) fail(errno);
    if (lines) {
      if (::dup2(out_pipe[1], STDOUT_FILENO) < 0 || ::dup2(out_pipe[1], STDERR_FILENO) < 0)
        fail(errno);
    } else if (options_.output == ProcessOptions::Output::kToStderr) {
      if (::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) fail(errno);
    }
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) fail(errno);
    // Signals the parent ignores or blocks must not leak into the child.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(program.c_str(), argv.data(), envp.data());
    fail(errno);
  }
  ::setpgid(pid_, pid_);  // also here, so the group exists before we might signal it
  ::close(err_pipe[1]);
  if (lines) ::close(out_pipe[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(err_pipe[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  ::close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    if (lines) ::close(out_pipe[0]);
    pid_ = -1;
    throw IoError(options_.name + ": cannot run " + program + (cwd.empty() ? "" : " in " + cwd) +
                  ": " + std::strerror(child_errno));
  }
  if (lines) {
    auto on_line = options_.on_line ? options_.on_line : [](const std::string&) {};
    reader_ = std::thread(read_lines, out_pipe[0], on_line);
  }
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_code_) {
    signal_group(SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exit_code_ = exit_code_of(status);
  }
  finish_output();
}

void Subprocess::finish_output() {
  if (reader_.joinable()) reader_.join();
}

bool Subprocess::running() { return !poll().has_value(); }

std::optional<int> Subprocess::poll() {
  if (exit_code_ || pid_ <= 0) return exit_code_;
  // Look without reaping first: while the child is a zombie its pid (the group id) cannot be
  // reused, so ending what is left of its group cannot hit another process.
  siginfo_t info{};
  const int r = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
  if (r == 0 && info.si_pid == pid_) {
    ::kill(-pid_, SIGKILL);  // grandchildren still holding the output pipe go with it
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exit_code_ = exit_code_of(status);
    finish_output();
  } else if (r < 0 && errno != EINTR) {
    exit_code_ = 1;
    finish_output();
  }
  return exit_code_;
}

std::optional<int> Subprocess::wait_for(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (auto code = poll()) return code;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPollInterval);
  }
}

int Subprocess::wait() {
  while (true) {
    if (auto code = wait_for(std::chrono::hours(24))) return *code;
  }
}

void Subprocess::signal_group(int signal) {
  if (pid_ > 0 && !exit_code_) ::kill(-pid_, signal);
}

int Subprocess::stop(std::chrono::milliseconds grace) {
  signal_group(SIGTERM);
  if (auto code = wait_for(grace)) return *code;
  signal_group(SIGKILL);
  return wait();
}

std::optional<int> run_with_timeout(ProcessOptions options, std::chrono::seconds timeout) {
  std::unique_ptr<Subprocess> child;
  try {
    child = std::make_unique<Subprocess>(std::move(options));
  } catch (const IoError& e) {
    spdlog::warn("{}", e.what());
    return std::nullopt;
  }
  if (auto code = child->wait_for(timeout)) return code;
  spdlog::warn("{}: no answer after {} s, stopping it", child->name(), timeout.count());
  child->stop(std::chrono::seconds(2));
  return std::nullopt;
}

}  // namespace dtrain
