// Parameter-server clusters started with `dtrain cluster run` (or by hand from TF_CONFIG), each
// run under a hard timeout.
#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <sstream>
#include <thread>

#include <fmt/ranges.h>

#include "distributed/ports.h"
#include "run_outputs.h"

namespace dtrain {
namespace {

using testing::CommandResult;
using testing::TempDir;

CommandResult dtrain_cmd(const std::string& args, int timeout = 300, const std::string& env = "") {
  return testing::run_command("env " + env + " " + testing::dtrain_binary() + " " + args, timeout);
}

using testing::last_metrics;

torch::Tensor weights(const std::filesystem::path& model_dir) {
  return testing::model_weights(model_dir);
}

class PsCluster : public ::testing::Test {
 protected:
  void SetUp() override { testing::write_synthetic_mnist(data_.path(), 400, 100, 321); }
  std::string train_flags(const std::filesystem::path& out) const {
    return " --data-dir " + data_.path().string() + " --output-dir " + out.string() +
           " --first-layer-neurons 32 --second-layer-neurons 16 --threads 1 --seed 3 --batch-size "
           "25";
  }
  TempDir data_;
};

TEST_F(PsCluster, SyncModeEqualsAllreduceAtTheSameGlobalBatch) {
  TempDir ring, one_ps, two_ps;
  CommandResult r = testing::run_command(
      "env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe -np "
      "2 " +
          testing::dtrain_binary() + " train --distributed ring --epochs 2" + train_flags(ring),
      300);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  CommandResult a =
      dtrain_cmd("cluster run --ps 1 --workers 2 -- --epochs 2" + train_flags(one_ps));
  ASSERT_EQ(a.exit_code, 0) << a.output;
  CommandResult b =
      dtrain_cmd("cluster run --ps 2 --workers 1 --chief -- --epochs 2" + train_flags(two_ps));
  ASSERT_EQ(b.exit_code, 0) << b.output;
  const auto w = weights(ring / "model");
  EXPECT_TRUE(torch::allclose(w, weights(one_ps / "model"), 1e-4, 1e-5))
      << "max diff " << (w - weights(one_ps / "model")).abs().max().item<double>();
  EXPECT_TRUE(torch::allclose(w, weights(two_ps / "model"), 1e-4, 1e-5))
      << "max diff " << (w - weights(two_ps / "model")).abs().max().item<double>();
  EXPECT_NE(a.output.find("[ps:0]"), std::string::npos) << "log lines carry the task's role";
  auto run = nlohmann::json::parse(testing::read_text(two_ps / "run.json"));
  EXPECT_EQ(run["distribution"]["num_ps"], 2);
  EXPECT_EQ(run["distribution"]["mode"], "sync");
}

// --compression fp16 pushes gradients in half precision (the ps averages and applies them in
// float32): the weights stay near those of float32 pushes but not equal, over two ps tasks.
TEST_F(PsCluster, Fp16CompressionPushesHalfPrecisionGradients) {
  TempDir full, half;
  const std::string cluster = "cluster run --ps 2 --workers 2 -- --epochs 2";
  ASSERT_EQ(dtrain_cmd(cluster + train_flags(full)).exit_code, 0);
  CommandResult r = dtrain_cmd(cluster + " --compression fp16" + train_flags(half));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(
      nlohmann::json::parse(testing::read_text(half / "run.json"))["distribution"]["compression"],
      "fp16");
  const auto a = weights(full / "model"), b = weights(half / "model");
  EXPECT_FALSE(torch::equal(a, b)) << "the gradients were not compressed";
  EXPECT_TRUE(torch::allclose(a, b, 0, 1e-2)) << "max diff " << (a - b).abs().max().item<double>();
}

TEST_F(PsCluster, AsyncModeRecordsStaleness) {
  TempDir out;
  CommandResult r =
      dtrain_cmd("cluster run --ps 1 --workers 2 -- --ps-mode async --epochs 1" + train_flags(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto run = nlohmann::json::parse(testing::read_text(out / "run.json"));
  EXPECT_EQ(run["distribution"]["mode"], "async");
  int64_t pushes = 0;
  for (auto& [k, v] : run["distribution"]["staleness_histogram"].items())
    pushes += v.get<int64_t>();
  EXPECT_EQ(pushes, 16) << "2 workers x 8 steps, each push counted once: "
                        << run["distribution"].dump();
}

TEST_F(PsCluster, ResumeFromCheckpointInPsMode) {
  TempDir out;
  ASSERT_EQ(dtrain_cmd("cluster run --ps 1 --workers 2 -- --epochs 1 --checkpoint-every 1" +
                       train_flags(out))
                .exit_code,
            0);
  CommandResult r = dtrain_cmd("cluster run --ps 2 --workers 2 -- --epochs 2 --resume-from " +
                               (out / "checkpoints").string() + train_flags(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_EQ(last_metrics(out)["epoch"], 2);
}

TEST_F(PsCluster, KilledWorkerEndsTheClusterWithAClearError) {
  TempDir out;
  const auto start = std::chrono::steady_clock::now();
  CommandResult r = dtrain_cmd(
      "cluster run --ps 1 --workers 2 -- --epochs 50 --peer-timeout 5" + train_flags(out), 120,
      "DTRAIN_FAULT_INJECT=kill:1:5");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("worker:1 exited with"), std::string::npos) << r.output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

TEST_F(PsCluster, WorkerWhosePsVanishedFailsNamingIt) {
  // A worker whose TF_CONFIG names a ps nobody serves: it retries, then gives up naming it.
  TempDir out;
  const std::string tf =
      R"('{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}')";
  const auto start = std::chrono::steady_clock::now();
  CommandResult r =
      dtrain_cmd("train --distributed ps --epochs 1 --connect-timeout 4" + train_flags(out), 60,
                 "TF_CONFIG=" + tf + " DTRAIN_CLUSTER_TOKEN=by-hand-token-0123456789");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ps:0 at 127.0.0.1:1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--connect-timeout"), std::string::npos) << r.output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
}

TEST_F(PsCluster, WrongTokenIsRejectedAndLogged) {
  TempDir out;
  const std::string bin = testing::dtrain_binary();
  const std::string cluster = R"({"ps": ["127.0.0.1:PORT"], "worker": ["127.0.0.1:1"]})";
  // Pick a port, start the ps with token "right", then a worker (the chief) with token "wrong".
  const std::string script = "port=" + std::to_string(distributed::free_loopback_ports(1)[0]) +
                             "; "
                             "cluster=$(echo '" +
                             cluster +
                             "' | sed \"s/PORT/$port/\"); "
                             "TF_CONFIG=\"{\\\"cluster\\\": $cluster, \\\"task\\\": {\\\"type\\\": "
                             "\\\"ps\\\", \\\"index\\\": 0}}\" "
                             "DTRAIN_CLUSTER_TOKEN=right-token-0123456789 " +
                             bin + " train --distributed ps --connect-timeout 3" +
                             train_flags(out) + " > " + (out / "ps.log").string() +
                             " 2>&1 & "
                             "TF_CONFIG=\"{\\\"cluster\\\": $cluster, \\\"task\\\": {\\\"type\\\": "
                             "\\\"worker\\\", \\\"index\\\": 0}}\" "
                             "DTRAIN_CLUSTER_TOKEN=wrong-token-0123456789 " +
                             bin + " train --distributed ps --epochs 1" + train_flags(out) +
                             "; echo worker-exit=$?; wait; cat " + (out / "ps.log").string();
  CommandResult r = testing::run_command(
      "bash -c '" +
          [&] {
            std::string s;
            for (char c : script) s += c == '\'' ? std::string("'\\''") : std::string(1, c);
            return s;
          }() +
          "'",
      90);
  EXPECT_NE(r.output.find("worker-exit=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("DTRAIN_CLUSTER_TOKEN"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rejected a call from"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(out / "model"));
}

TEST_F(PsCluster, MutualTlsClusterTrainsAndAPlainClientIsRefused) {
  TempDir out, pki;
  const std::string d = pki.path().string();
  CommandResult certs = testing::run_command(
      "bash -c 'set -e; cd " + d +
          "; openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
          "-subj /CN=dtrain-test-ca; "
          "openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj /CN=127.0.0.1; "
          "echo subjectAltName=IP:127.0.0.1 > ext; "
          "openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem "
          "-days 2 -extfile ext' 2>&1",
      60);
  ASSERT_EQ(certs.exit_code, 0) << certs.output;
  const std::string tls =
      " --tls-cert " + d + "/node.pem --tls-key " + d + "/node.key --tls-ca " + d + "/ca.pem";
  CommandResult r =
      dtrain_cmd("cluster run --ps 1 --workers 1 -- --epochs 1" + tls + train_flags(out));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("over mutual TLS"), std::string::npos) << r.output;

  // A ps serving mutual TLS; a worker without TLS (right token) never gets through.
  const int port = distributed::free_loopback_ports(1)[0];
  const std::string cluster = "{\"cluster\": {\"ps\": [\"127.0.0.1:" + std::to_string(port) +
                              "\"], \"worker\": [\"127.0.0.1:1\"]}, \"task\": {\"type\": ";
  const std::string env = "DTRAIN_CLUSTER_TOKEN=tls-test-token-0123456789 ";
  std::thread ps([&] {
    testing::run_command("env " + env + "TF_CONFIG='" + cluster + "\"ps\", \"index\": 0}}' " +
                             testing::dtrain_binary() + " train --distributed ps --peer-timeout 5" +
                             tls + train_flags(out) + " > " + (out / "ps.log").string() + " 2>&1",
                         60);
  });
  CommandResult plain =
      dtrain_cmd("train --distributed ps --epochs 1 --connect-timeout 4" + train_flags(out), 60,
                 env + "TF_CONFIG='" + cluster + "\"worker\", \"index\": 0}}'");
  EXPECT_EQ(plain.exit_code, 1) << plain.output;
  EXPECT_NE(plain.output.find("--connect-timeout"), std::string::npos) << plain.output;
  // Then one with TLS trains against it and shuts it down.
  CommandResult good = dtrain_cmd("train --distributed ps --epochs 1" + tls + train_flags(out), 60,
                                  env + "TF_CONFIG='" + cluster + "\"worker\", \"index\": 0}}'");
  ps.join();
  EXPECT_EQ(good.exit_code, 0) << good.output << testing::read_text(out / "ps.log");
}

TEST_F(PsCluster, DeadWorkerIsNamedAndEveryoneExitsNonZeroWithoutALauncher) {
  // ps and two workers started by hand (no cluster run to stop them): worker:1 dies at step 5;
  // the ps notices after --peer-timeout, fails the pending calls naming it, and exits 1.
  TempDir out;
  const std::string bin = testing::dtrain_binary();
  const std::string flags = " --epochs 50 --peer-timeout 5" + train_flags(out);
  const std::string script =
      "export DTRAIN_CLUSTER_TOKEN=by-hand-token-0123456789; ports='" +
      fmt::format("{}", fmt::join(distributed::free_loopback_ports(3), " ")) +
      "'; "
      "set -- $ports; "
      "cluster=\"{\\\"ps\\\": [\\\"127.0.0.1:$1\\\"], \\\"worker\\\": [\\\"127.0.0.1:$2\\\", "
      "\\\"127.0.0.1:$3\\\"]}\"; "
      "task() { echo \"{\\\"cluster\\\": $cluster, \\\"task\\\": {\\\"type\\\": \\\"$1\\\", "
      "\\\"index\\\": $2}}\"; }; "
      "TF_CONFIG=$(task ps 0) " +
      bin + " train --distributed ps" + flags + " > " + (out / "ps.log").string() +
      " 2>&1 & ps_pid=$!; "
      "TF_CONFIG=$(task worker 1) DTRAIN_FAULT_INJECT=kill:1:5 " +
      bin + " train --distributed ps" + flags + " > " + (out / "w1.log").string() +
      " 2>&1 & "
      "TF_CONFIG=$(task worker 0) " +
      bin + " train --distributed ps" + flags + " > " + (out / "w0.log").string() +
      " 2>&1; "
      "echo worker0-exit=$?; wait $ps_pid; echo ps-exit=$?; cat " +
      (out / "w0.log").string() + " " + (out / "ps.log").string();
  testing::write_bytes(out / "run.sh", script);
  const auto start = std::chrono::steady_clock::now();
  CommandResult r = testing::run_command("bash " + (out / "run.sh").string(), 120);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60)) << r.output;
  EXPECT_NE(r.output.find("worker0-exit=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("ps-exit=1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("worker:1 has not been heard from"), std::string::npos) << r.output;
}

TEST(PsConfig, MissingOrBadTfConfigExitsTwo) {
  TempDir data;
  CommandResult unset =
      dtrain_cmd("train --distributed ps --data-dir " + data.path().string(), 60, "-u TF_CONFIG");
  EXPECT_EQ(unset.exit_code, 2) << unset.output;
  EXPECT_NE(unset.output.find("TF_CONFIG"), std::string::npos) << unset.output;
  CommandResult no_ps =
      dtrain_cmd("train --distributed ps --data-dir " + data.path().string(), 60,
                 R"(TF_CONFIG='{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}')");
  EXPECT_EQ(no_ps.exit_code, 2) << no_ps.output;
  EXPECT_NE(no_ps.output.find("\"ps\""), std::string::npos) << no_ps.output;
}

TEST(PsMnist, OneAndTwoParameterServersReach90Percent) {
  DTRAIN_REQUIRE_MNIST(mnist);
  for (int ps : {1, 2}) {
    TempDir out;
    CommandResult r = dtrain_cmd("cluster run --ps " + std::to_string(ps) +
                                     " --workers 2 -- --epochs 1 --data-dir " + mnist +
                                     " --output-dir " + out.path().string(),
                                 600);
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_GE(last_metrics(out)["validation_acc"].get<double>(), 0.90) << ps << " ps";
    EXPECT_TRUE(std::filesystem::exists(out / "model" / "model.onnx"));
  }
}

}  // namespace
}  // namespace dtrain
