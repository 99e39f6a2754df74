// The transport's floor under a parameter-server step on one host: W client processes each send
// --push-bytes to one server process over TCP on 127.0.0.1 and wait for --reply-bytes back; the
// server reads every client's push, then replies to each. That is the byte pattern of one sync
// step of 1 ps x W workers, with nothing else: no gRPC, HTTP/2 or protobuf, no gradient sum or
// optimizer, no training. ps_throughput.sh adds it to the workers' compute time to show the
// fastest a ps over TCP could go here. Prints the median microseconds per round over --repeats
// runs of --rounds rounds (after --rounds / 10 untimed ones).
//   loopback_floor [--workers 2] [--push-bytes 1066440] [--reply-bytes 1066440] [--rounds 600]
//                  [--repeats 3] [--json FILE]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <cxxopts.hpp>

#include "benchmarks/bench_info.h"

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

void read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r == 0) throw std::runtime_error("a peer closed its socket mid-round");
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("read");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t r = write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) fail("write");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

/// TCP_NODELAY, and a bound on every wait (accept, read, write): a peer that died mid-run ends
/// the run with an error instead of a hang.
void prepare(int fd, bool tcp = true) {
  const int one = 1;
  if (tcp && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) fail("TCP_NODELAY");
  const timeval limit{60, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit) != 0) {
    fail("socket timeouts");
  }
}

/// A client's life: connect, then `rounds` pushes each answered by a reply.
int client(const sockaddr_in& server, size_t push, size_t reply, long rounds) {
  try {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) fail("socket");
    if (connect(fd, reinterpret_cast<const sockaddr*>(&server), sizeof server) != 0)
      fail("connect");
    prepare(fd);
    std::vector<char> out(push, 1), in(reply);
    for (long i = 0; i < rounds; ++i) {
      write_all(fd, out.data(), out.size());
      read_all(fd, in.data(), in.size());
    }
    close(fd);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loopback_floor client: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("loopback_floor",
                           "TCP loopback floor of a parameter-server step (1 server, W clients)");
  options.add_options()("workers", "client processes", cxxopts::value<int>()->default_value("2"))(
      "push-bytes", "bytes each client sends a round",
      cxxopts::value<int64_t>()->default_value("1066440"))(
      "reply-bytes", "bytes the server sends each client a round",
      cxxopts::value<int64_t>()->default_value("1066440"))(
      "rounds", "timed rounds per repeat", cxxopts::value<int64_t>()->default_value("600"))(
      "repeats", "timed repeats (the median is shown)", cxxopts::value<int>()->default_value("3"))(
      "json", "also write the results to this file",
      cxxopts::value<std::string>()->default_value(""))("h,help", "show this help");
  int workers = 0, repeats = 0;
  int64_t push = 0, reply = 0, rounds = 0;
  std::string json_path;
  try {
    const auto r = dtrain::bench::parse_command_line(options, argc, argv);
    workers = r["workers"].as<int>();
    push = r["push-bytes"].as<int64_t>();
    reply = r["reply-bytes"].as<int64_t>();
    rounds = r["rounds"].as<int64_t>();
    repeats = r["repeats"].as<int>();
    json_path = r["json"].as<std::string>();
    if (workers < 1 || workers > 64 || push < 1 || push > (int64_t{1} << 30) || reply < 1 ||
        reply > (int64_t{1} << 30) || rounds < 1 || rounds > 1000000 || repeats < 1 ||
        repeats > 1000) {
      throw std::invalid_argument(
          "expected --workers 1..64, --push-bytes and --reply-bytes 1..1G, --rounds 1..1000000, "
          "--repeats 1..1000");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loopback_floor: %s (see --help)\n", e.what());
    return 2;
  }

  const int64_t warmup = std::max<int64_t>(1, rounds / 10);
  std::vector<double> us_per_round;
  std::vector<pid_t> children;
  int status = 0;
  try {
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0) fail("socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;  // any free port
    socklen_t length = sizeof address;
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        listen(listener, workers) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      fail("listening on 127.0.0.1");
    }
    prepare(listener, /*tcp=*/false);
    for (int w = 0; w < workers; ++w) {
      const pid_t pid = fork();
      if (pid < 0) fail("fork");
      if (pid == 0) {
        close(listener);
        _exit(client(address, static_cast<size_t>(push), static_cast<size_t>(reply),
                     warmup + rounds * repeats));
      }
      children.push_back(pid);
    }
    std::vector<int> peers;
    for (int w = 0; w < workers; ++w) {
      const int fd = accept(listener, nullptr, nullptr);
      if (fd < 0) fail("accept");
      prepare(fd);
      peers.push_back(fd);
    }
    close(listener);
    std::vector<std::vector<char>> in(static_cast<size_t>(workers),
                                      std::vector<char>(static_cast<size_t>(push)));
    const std::vector<char> out(static_cast<size_t>(reply), 2);
    auto serve = [&](int64_t n) {
      for (int64_t i = 0; i < n; ++i) {
        for (size_t w = 0; w < peers.size(); ++w) read_all(peers[w], in[w].data(), in[w].size());
        for (const int fd : peers) write_all(fd, out.data(), out.size());
      }
    };
    serve(warmup);
    for (int rep = 0; rep < repeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      serve(rounds);
      const auto t1 = std::chrono::steady_clock::now();
      us_per_round.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() /
                             static_cast<double>(rounds));
    }
    for (const int fd : peers) close(fd);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "loopback_floor: %s\n", e.what());
    status = 1;
  }
  for (const pid_t pid : children) {
    int child = 0;
    if (status != 0) kill(pid, SIGKILL);
    if (waitpid(pid, &child, 0) != pid || !WIFEXITED(child) || WEXITSTATUS(child) != 0) status = 1;
  }
  if (status != 0) return status;

  std::vector<double> sorted = us_per_round;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  std::printf(
      "# loopback_floor: 1 server, %d client(s), %lld bytes pushed and %lld replied per "
      "client a round, TCP on 127.0.0.1\n",
      workers, static_cast<long long>(push), static_cast<long long>(reply));
  std::printf("  us_per_round %.1f (median of %d x %lld rounds)\n", median, repeats,
              static_cast<long long>(rounds));
  if (!json_path.empty()) {
    const nlohmann::json results = {
        {"workers", workers}, {"push_bytes", push},     {"reply_bytes", reply},
        {"rounds", rounds},   {"us_per_round", median}, {"us_per_round_samples", us_per_round}};
    std::ofstream(json_path) << dtrain::bench::report("loopback_floor", argc, argv, results).dump(2)
                             << "\n";
  }
  return 0;
}
