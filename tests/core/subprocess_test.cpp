#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/subprocess.h"

namespace dtrain {
namespace {

using namespace std::chrono_literals;

// True once `pid` no longer exists (or is a zombie nobody reaps here), within `limit`.
bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!stat || !std::getline(stat, line)) return true;
    const auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z')
      return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

ProcessOptions sh(const std::string& script) {
  ProcessOptions p;
  p.argv = {"sh", "-c", script};
  return p;
}

struct Lines {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& l) {
      std::lock_guard<std::mutex> lock(mu);
      lines.push_back(l);
    };
  }
};

TEST(Subprocess, ExitCodeArgvEnvAndWorkingDirectory) {
  const ScopedTempDir dir(std::filesystem::temp_directory_path(), "dtrain-sub-");
  const auto before = std::filesystem::current_path();
  Lines out;
  ProcessOptions p =
      sh("echo \"$0|$1|$GREETING|${HOME:-unset}|$(pwd)\"; echo partial >&2; printf tail; exit 7");
  p.argv.push_back("one two");
  p.argv.insert(p.argv.begin() + 3, "zero");
  p.env["GREETING"] = "hi there";
  p.unset_env = {"HOME"};
  p.cwd = dir.path();
  p.output = ProcessOptions::Output::kLines;
  p.on_line = out.sink();
  Subprocess child(p);
  EXPECT_EQ(child.wait(), 7);
  EXPECT_EQ(std::filesystem::current_path(), before) << "the parent's working directory changed";
  ASSERT_EQ(out.lines.size(), 3u);
  EXPECT_EQ(out.lines[0],
            "zero|one two|hi there|unset|" + std::filesystem::canonical(dir.path()).string());
  EXPECT_EQ(out.lines[1], "partial");
  EXPECT_EQ(out.lines[2], "tail");
}

TEST(Subprocess, MissingProgramOrFolderIsANamedError) {
  ProcessOptions p;
  p.argv = {"dtrain-no-such-program"};
  try {
    Subprocess child(p);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("dtrain-no-such-program"), std::string::npos) << e.what();
  }
  ProcessOptions q = sh("true");
  q.cwd = "/nonexistent/folder";
  try {
    Subprocess child(q);
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/folder"), std::string::npos) << e.what();
  }
}

TEST(Subprocess, SignalsAreReportedAs128PlusSignal) {
  Subprocess child(sh("kill -TERM $$"));
  EXPECT_EQ(child.wait(), 128 + SIGTERM);
}

TEST(Subprocess, TimeoutStopsTheWholeGroup) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(run_with_timeout(sh("sleep 60"), std::chrono::seconds(1)).has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
  EXPECT_EQ(run_with_timeout(sh("exit 3"), std::chrono::seconds(10)), 3);
}

// Destroying a running Subprocess (as an exception unwinding would) ends grandchildren too.
TEST(Subprocess, DestructorEndsTheProcessGroup) {
  Lines out;
  pid_t grandchild = 0;
  {
    ProcessOptions p = sh("sleep 60 & echo $!; wait");
    p.output = ProcessOptions::Output::kLines;
    p.on_line = out.sink();
    Subprocess child(p);
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(out.mu);
        if (!out.lines.empty()) break;
      }
      std::this_thread::sleep_for(10ms);
    }
    std::lock_guard<std::mutex> lock(out.mu);
    ASSERT_FALSE(out.lines.empty());
    grandchild = std::stoi(out.lines[0]);
  }
  EXPECT_TRUE(gone_within(grandchild, 5s)) << "grandchild " << grandchild << " outlived its group";
}

// A child whose parent dies without cleaning up (kill -9) gets SIGKILL from the kernel.
TEST(Subprocess, ChildDiesWithItsParent) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t parent = fork();
  ASSERT_GE(parent, 0);
  if (parent == 0) {
    close(fds[0]);
    Subprocess child(sh("exec sleep 60"));
    const pid_t pid = child.pid();
    (void)!write(fds[1], &pid, sizeof(pid));
    pause();  // killed by the test below
    _exit(0);
  }
  close(fds[1]);
  pid_t child = 0;
  ASSERT_EQ(read(fds[0], &child, sizeof(child)), static_cast<ssize_t>(sizeof(child)));
  close(fds[0]);
  kill(parent, SIGKILL);
  waitpid(parent, nullptr, 0);
  EXPECT_TRUE(gone_within(child, 5s)) << "child " << child << " outlived its parent";
}

}  // namespace
}  // namespace dtrain
