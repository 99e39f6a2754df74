#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "core/errors.h"
#include "core/option_table.h"
#include "core/run_config.h"

namespace dtrain {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

// A valid non-default value per JSON-backed option, so the round trip sees every field change.
RunConfig everything_changed() {
  RunConfig c;
  const std::map<std::string, std::string> values = {{"data-dir", "/d"},
                                                     {"output-dir", "/o"},
                                                     {"model", "mlp2"},
                                                     {"hidden-sizes", "7,6,5"},
                                                     {"activation", "tanh"},
                                                     {"epochs", "3"},
                                                     {"batch-size", "17"},
                                                     {"learning-rate", "0.25"},
                                                     {"optimizer", "adam"},
                                                     {"momentum", "0.5"},
                                                     {"weight-decay", "0.001"},
                                                     {"seed", "9"},
                                                     {"lr-scaling", "sqrt"},
                                                     {"warmup-epochs", "1.5"},
                                                     {"target-accuracy", "0.97"},
                                                     {"device", "cpu"},
                                                     {"threads", "3"},
                                                     {"checkpoint-every", "5"},
                                                     {"checkpoint-every-steps", "100"},
                                                     {"checkpoint-every-minutes", "2.5"},
                                                     {"resume-from", "/r"},
                                                     {"distributed", "ring"},
                                                     {"allreduce", "mpi"},
                                                     {"fusion-threshold-mb", "4.5"},
                                                     {"compression", "fp16"},
                                                     {"backward-passes-per-step", "2"},
                                                     {"stall-warning-seconds", "7"},
                                                     {"stall-abort-seconds", "70"},
                                                     {"ps-mode", "async"},
                                                     {"connect-timeout", "11"},
                                                     {"peer-timeout", "12"},
                                                     {"insecure", "true"},
                                                     {"tls-cert", "/c.pem"},
                                                     {"tls-key", "/k.pem"},
                                                     {"tls-ca", "/ca.pem"},
                                                     {"workspace", "/w"},
                                                     {"experiment", "e"},
                                                     {"run-name", "n"},
                                                     {"tag", "k=v"},
                                                     {"log-every-steps", "7"},
                                                     {"track-checkpoints", "true"},
                                                     {"progress", "never"},
                                                     {"register-model", "m"}};
  for (const auto& row : run_options()) {
    if (row.json_key.empty()) continue;
    auto it = values.find(row.flag);
    EXPECT_NE(it, values.end()) << "give the round-trip test a value for --" << row.flag;
    if (it != values.end()) row.parse(c, it->second);
  }
  return c;
}

TEST(OptionTable, JsonRoundTripCoversEveryField) {
  const RunConfig c = everything_changed();
  const nlohmann::json j = c.to_json();
  const RunConfig d;
  for (const auto& row : run_options()) {
    if (row.json_key.empty()) continue;
    EXPECT_NE(j.at(row.json_key), d.to_json().at(row.json_key)) << row.flag << " did not change";
  }
  EXPECT_EQ(RunConfig::from_json(j).to_json(), j);
  EXPECT_EQ(j.at("hidden_sizes"), nlohmann::json({7, 6, 5}));
  EXPECT_EQ(j.at("connect_timeout_seconds"), 11.0);
}

TEST(OptionTable, SharedFieldsExcludeWhatDiffersPerHost) {
  const nlohmann::json shared = RunConfig().shared_json();
  for (const char* local :
       {"data_dir", "output_dir", "resume_from", "threads", "device", "connect_timeout_seconds"}) {
    EXPECT_FALSE(shared.contains(local)) << local;
  }
  for (const char* key : {"batch_size", "learning_rate", "optimizer", "hidden_sizes",
                          "peer_timeout_seconds", "ps_mode", "compression"}) {
    EXPECT_TRUE(shared.contains(key)) << key;
  }
  EXPECT_EQ(
      RunConfig().model_json(),
      nlohmann::json({{"model", "mlp"}, {"hidden_sizes", {300, 100}}, {"activation", "relu"}}));
}

TEST(OptionTable, ValidationNamesTheFlagExpectedAndFound) {
  RunConfig c;
  c.batch_size = 0;
  const std::string batch = error_of([&] { c.validate(); });
  EXPECT_NE(batch.find("--batch-size: expected a positive integer, got 0"), std::string::npos)
      << batch;
  c = RunConfig();
  c.optimizer = "rmsprop";
  EXPECT_NE(error_of([&] { c.validate(); }).find("--optimizer: expected sgd or adam, got rmsprop"),
            std::string::npos);
  c = RunConfig();
  c.stall_warning_seconds = 20;
  c.stall_abort_seconds = 10;
  EXPECT_NE(error_of([&] { c.validate(); }).find("--stall-abort-seconds"), std::string::npos);
  c = RunConfig();
  c.hidden_sizes = {};
  EXPECT_NE(error_of([&] { c.validate(); }).find("--hidden-sizes"), std::string::npos);
  EXPECT_NE(error_of([&] {
              find_run_option("first-layer-neurons")->parse(c, "0");
            }).find("--first-layer-neurons: expected a layer width"),
            std::string::npos);
  EXPECT_NE(error_of([&] { find_run_option("seed")->parse(c, "-1"); }).find("--seed"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { find_run_option("threads")->parse(c, "99999999999"); }).find("--threads"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              RunConfig::from_json({{"batch_size", "many"}});
            }).find("batch_size"),
            std::string::npos);
  EXPECT_NE(error_of([] { RunConfig::from_json(nlohmann::json::array()); }), "");
}

TEST(OptionTable, FlagsAreUniqueAndLookUpByAlias) {
  std::set<std::string> names, keys;
  for (const auto& row : run_options()) {
    EXPECT_TRUE(names.insert(row.flag).second) << row.flag;
    for (const auto& a : row.aliases) EXPECT_TRUE(names.insert(a).second) << a;
    if (!row.json_key.empty()) {
      EXPECT_TRUE(keys.insert(row.json_key).second) << row.json_key;
    }
    EXPECT_FALSE(row.help.empty()) << row.flag;
  }
  ASSERT_NE(find_run_option("data-folder"), nullptr);
  EXPECT_EQ(find_run_option("data-folder")->flag, "data-dir");
  EXPECT_EQ(find_run_option("no-such-flag"), nullptr);
  EXPECT_EQ(find_run_option("learning-rate")->default_text, "0.01");
  EXPECT_TRUE(find_run_option("learning-rate")->numeric);
  EXPECT_FALSE(find_run_option("optimizer")->numeric);
}

// README.md's flag table is exactly what the option table generates.
TEST(OptionTable, ReadmeFlagTableIsGenerated) {
  std::ifstream in(std::string(DTRAIN_SOURCE_DIR) + "/README.md");
  ASSERT_TRUE(in) << "README.md not found";
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str();
  const std::string begin =
      "<!-- train-flags:begin (generated: dtrain train --flags-markdown) -->\n";
  const std::string end = "<!-- train-flags:end -->";
  const auto b = readme.find(begin), e = readme.find(end);
  ASSERT_NE(b, std::string::npos) << "README.md lacks the marker " << begin;
  ASSERT_NE(e, std::string::npos);
  EXPECT_EQ(readme.substr(b + begin.size(), e - b - begin.size()), options_markdown(run_options()))
      << "README.md's flag table is out of date: regenerate it with dtrain train --flags-markdown";
}

}  // namespace
}  // namespace dtrain
