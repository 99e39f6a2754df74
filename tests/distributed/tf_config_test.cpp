#include <gtest/gtest.h>

#include "core/errors.h"
#include "distributed/tf_config.h"
#include "test_util.h"

namespace dtrain::distributed {
namespace {

void expect_error(const std::string& text, const std::string& fragment) {
  try {
    TfConfig::parse(text);
    FAIL() << "expected ConfigError for " << text;
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
        << "message should mention '" << fragment << "': " << e.what();
  }
}

// From TensorFlow's MultiWorkerMirroredStrategy tutorial.
TEST(TfConfig, MultiWorkerExample) {
  auto c = TfConfig::parse(R"({"cluster": {"worker": ["localhost:12345", "localhost:23456"]},
                               "task": {"type": "worker", "index": 0}})");
  EXPECT_EQ(c.num_tasks("worker"), 2);
  EXPECT_TRUE(c.is_chief()) << "worker 0 is the chief when there is no chief job";
  EXPECT_EQ(c.address(), "localhost:12345");
}

// The parameter-server layout of TensorFlow's ParameterServerStrategy/Estimator docs.
TEST(TfConfig, ParameterServerExampleWithChiefAndEvaluator) {
  const std::string cluster = R"("cluster": {"chief": ["host0:2222"],
      "worker": ["host1:2222", "host2:2222", "host3:2222"], "ps": ["host4:2222", "host5:2222"]})";
  auto w = TfConfig::parse("{" + cluster + R"(, "task": {"type": "worker", "index": 1}})");
  EXPECT_FALSE(w.is_chief());
  EXPECT_EQ(w.address(), "host2:2222");
  auto chief = TfConfig::parse("{" + cluster + R"(, "task": {"type": "chief", "index": 0}})");
  EXPECT_TRUE(chief.is_chief());
  auto eval = TfConfig::parse("{" + cluster + R"(, "task": {"type": "evaluator", "index": 0}})");
  EXPECT_FALSE(eval.is_chief());
  EXPECT_EQ(eval.address(), "") << "the evaluator may be absent from the cluster";
  chief.require_parameter_server_cluster();
  EXPECT_EQ(chief.to_json()["num_ps"], 2);
}

TEST(TfConfig, LegacyMasterSparseJobsStringIndexAndIgnoredKeys) {
  auto c = TfConfig::parse(R"({"cluster": {"master": ["m:1"], "worker": {"1": "w1:2", "3": "w3:2"}},
                               "task": {"type": "worker", "index": "3"},
                               "environment": "cloud", "rpc_layer": "grpc", "whatever": 1})");
  EXPECT_EQ(c.task_index, 3);
  EXPECT_EQ(c.num_tasks("chief"), 1) << "master is the legacy name of chief";
  EXPECT_FALSE(c.is_chief());
  auto m = TfConfig::parse(R"({"cluster": {"master": ["m:1"]}, "task": {"type": "master"}})");
  EXPECT_EQ(m.task_type, "chief");
  EXPECT_TRUE(m.is_chief());
  auto v6 =
      TfConfig::parse(R"({"cluster": {"ps": ["[::1]:2222"]}, "task": {"type": "ps", "index": 0}})");
  EXPECT_EQ(v6.address(), "[::1]:2222");
}

TEST(TfConfig, EveryViolationNamesTheField) {
  expect_error("", "empty");
  expect_error("   ", "empty");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0})",
               "invalid JSON at byte");
  expect_error(R"({"cluster": {"worker": ["a:1",]}})", "near '");
  expect_error(R"([1, 2])", "expected a JSON object");
  expect_error(R"({"task": {"type": "worker"}})", "cluster");
  expect_error(R"({"cluster": {}, "task": {"type": "worker"}})", "cluster");
  expect_error(R"({"cluster": {"worker": ["a:1"]}})", "task");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"index": 0}})", "task.type");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "boss", "index": 0}})",
               "unknown type 'boss'");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}})",
               "out of range");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": -1}})",
               "negative");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": "x"}})",
               "task.index");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}})",
               "'ps' is not a job in cluster");
  expect_error(R"({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker"}})",
               "duplicate address a:1");
  expect_error(R"({"cluster": {"worker": ["a"]}, "task": {"type": "worker"}})",
               "cluster.worker[0]");
  expect_error(R"({"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker"}})", "valid port");
  expect_error(R"({"cluster": {"worker": [":80"]}, "task": {"type": "worker"}})", "no host");
  expect_error(R"({"cluster": {"worker": [5]}, "task": {"type": "worker"}})", "host:port");
  expect_error(R"({"cluster": {"chief": ["c:1"], "master": ["m:1"]}, "task": {"type": "chief"}})",
               "master");
  expect_error(R"({"cluster": {"chief": ["c:1", "d:1"]}, "task": {"type": "chief"}})",
               "at most one");
  expect_error(R"({"cluster": {"evaluator": ["e:1", "f:1"]}, "task": {"type": "evaluator"}})",
               "at most one");
  expect_error(R"({"cluster": {"worker": ["a:1"], "gpu": ["b:1"]}, "task": {"type": "worker"}})",
               "cluster.gpu");
  expect_error(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 2}})",
               "index 0");
}

TEST(TfConfig, PsTrainingNeedsPsAndWorkers) {
  EXPECT_THROW(TfConfig::parse(R"({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}})")
                   .require_parameter_server_cluster(),
               ConfigError);
  EXPECT_THROW(TfConfig::parse(R"({"cluster": {"ps": ["a:1"]}, "task": {"type": "ps"}})")
                   .require_parameter_server_cluster(),
               ConfigError);
}

TEST(TfConfig, ClusterCheckCommand) {
  const std::string bin = testing::dtrain_binary();
  auto ok = testing::run_command(
      "env TF_CONFIG='{\"cluster\": {\"ps\": [\"127.0.0.1:2222\"], \"worker\": "
      "[\"127.0.0.1:2223\"]}, "
      "\"task\": {\"type\": \"worker\", \"index\": 0}}' " +
          bin + " cluster check --for-ps-training",
      60);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_NE(ok.output.find("\"role\": \"chief\""), std::string::npos) << ok.output;
  auto bad = testing::run_command("env TF_CONFIG='{\"cluster\": 3}' " + bin + " cluster check", 60);
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("cluster"), std::string::npos) << bad.output;
  auto unset = testing::run_command("env -u TF_CONFIG " + bin + " cluster check", 60);
  EXPECT_EQ(unset.exit_code, 2) << unset.output;
  EXPECT_NE(unset.output.find("TF_CONFIG is not set"), std::string::npos) << unset.output;
}

TEST(TfConfig, NumbersJsonCannotHoldAreAConfigError) {
  // Found by fuzz_tf_config: nlohmann throws out_of_range, not parse_error, for these.
  EXPECT_THROW(TfConfig::parse("33333333333333E3333333333333333333"), ConfigError);
  EXPECT_THROW(TfConfig::parse(R"({"cluster": {"ps": ["a:1"]}, "task": {"index": 1E400}})"),
               ConfigError);
  // Also found by it: a sparse-job index of "-" (or "" or "--1") was an uncaught std::stoll error.
  for (const char* index : {"-", "", "--1", "1-", "-12345678901"}) {
    EXPECT_THROW(TfConfig::parse(std::string(R"({"cluster": {"ps": {")") + index +
                                 R"(": "a:1"}, "worker": ["b:2"]}})"),
                 ConfigError)
        << index;
  }
}

}  // namespace
}  // namespace dtrain::distributed
