// Sweep specs, samplers and early-termination policies, without running trials.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/errors.h"
#include "tools/sweep/policy.h"
#include "tools/sweep/sampler.h"
#include "tools/sweep/spec.h"

namespace dtrain::sweep {
namespace {

using Json = nlohmann::json;

Json base_spec() {
  return Json::parse(R"({"experiment": "mnist-lr",
    "parameters": {"learning-rate": {"loguniform": [0.0001, 0.3]},
                   "batch-size": {"choice": [25, 50, 100]},
                   "first-layer-neurons": {"quniform": [64, 512, 64]}},
    "sampling": "random", "seed": 1,
    "primary_metric": "validation_acc", "goal": "maximize",
    "max_total_runs": 16, "max_concurrent_runs": 2, "max_duration_minutes": 60,
    "early_termination": {"policy": "bandit", "slack_factor": 0.1,
                          "evaluation_interval": 1, "delay_evaluation": 1},
    "train_args": ["--data-dir", "build/mnist", "--epochs", "4"],
    "launcher": []})");
}

std::string spec_error(const Json& j) {
  try {
    SweepSpec::parse(j, "sweep.json");
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted: " << j.dump();
  return "";
}

TEST(SweepSpec, TheIssueExampleParses) {
  const SweepSpec s = SweepSpec::parse(base_spec(), "sweep.json");
  EXPECT_EQ(s.parameters.size(), 3u);
  EXPECT_EQ(s.early_termination.policy, "bandit");
  EXPECT_TRUE(s.maximize());
  // The stored form parses back to the same spec (what --resume relies on).
  EXPECT_EQ(SweepSpec::parse(s.to_json(), "stored").to_json(), s.to_json());
}

TEST(SweepSpec, BadSpecsAreRefusedNamingTheKey) {
  struct Case {
    std::function<void(Json&)> change;
    std::string says;
  };
  const std::vector<Case> cases = {
      {[](Json& j) {
         j["parameters"]["no-such-flag"] = {{"choice", {1}}};
       },
       "no-such-flag"},
      {[](Json& j) {
         j["parameters"]["learning-rate"] = {{"gaussian", {0, 1}}};
       },
       "gaussian"},
      {[](Json& j) {
         j["parameters"]["learning-rate"] = {{"uniform", {0.3, 0.1}}};
       },
       "low must be < high"},
      {[](Json& j) {
         j["parameters"]["learning-rate"] = {{"loguniform", {0, 0.1}}};
       },
       "> 0"},
      {[](Json& j) {
         j["parameters"]["learning-rate"] = {{"quniform", {0.1, 0.3}}};
       },
       "[low, high, q]"},
      {[](Json& j) {
         j["parameters"]["learning-rate"] = {{"normal", {0.1, -1}}};
       },
       "sigma"},
      {[](Json& j) {
         j["parameters"]["batch-size"] = {{"choice", {25, -5}}};
       },
       "-5"},
      {[](Json& j) {
         j["parameters"]["batch-size"] = {{"choice", Json::array()}};
       },
       "at least one"},
      {[](Json& j) {
         j["parameters"]["optimizer"] = {{"uniform", {0, 1}}};
       },
       "numeric"},
      {[](Json& j) {
         j["parameters"]["optimizer"] = {{"choice", {"sgd", "lbfgs"}}};
       },
       "lbfgs"},
      {[](Json& j) {
         j["parameters"]["workspace"] = {{"choice", {"a"}}};
       },
       "set by the sweep"},
      {[](Json& j) {
         j["parameters"]["epochs"] = {{"choice", {1}}};
       },
       "also in train_args"},
      {[](Json& j) { j["sampling"] = "grid"; }, "grid needs only choice"},
      {[](Json& j) { j["sampling"] = "clever"; }, "sampling"},
      {[](Json& j) { j["primary_metric"] = "f1"; }, "primary_metric"},
      {[](Json& j) { j["goal"] = "up"; }, "goal"},
      {[](Json& j) { j["max_total_runs"] = 0; }, "max_total_runs"},
      {[](Json& j) { j["max_concurrent_runs"] = 1.5; }, "max_concurrent_runs"},
      {[](Json& j) {
         j["train_args"] = {"--data-dir", "d", "--epochs", "0"};
       },
       "--epochs"},
      {[](Json& j) {
         j["train_args"] = {"--data-dir", "d", "--bogus", "1"};
       },
       "--bogus"},
      {[](Json& j) {
         j["train_args"] = {"--epochs", "2"};
       },
       "--data-dir is required"},
      {[](Json& j) {
         j["train_args"] = {"--data-dir", "d", "--output-dir", "x"};
       },
       "set by the sweep"},
      {[](Json& j) {
         j["early_termination"] = {{"policy", "bandit"}};
       },
       "slack"},
      {[](Json& j) {
         j["early_termination"] = {{"policy", "truncation_selection"}};
       },
       "truncation_percentage"},
      {[](Json& j) { j["early_termination"]["policy"] = "hopeful"; }, "hopeful"},
      {[](Json& j) { j["early_termination"]["evaluation_interval"] = 0; }, "evaluation_interval"},
      {[](Json& j) { j["typo_key"] = 1; }, "typo_key"},
      {[](Json& j) { j["launcher"] = "mpirun"; }, "launcher"},
      {[](Json& j) { j = Json::array(); }, "JSON object"},
  };
  for (const auto& c : cases) {
    Json j = base_spec();
    c.change(j);
    const std::string e = spec_error(j);
    EXPECT_NE(e.find("sweep.json"), std::string::npos) << e;
    EXPECT_NE(e.find(c.says), std::string::npos) << "wanted '" << c.says << "' in: " << e;
  }
}

TEST(Samplers, GridEnumeratesEveryCombinationOnce) {
  Json j = base_spec();
  j["sampling"] = "grid";
  j["parameters"] = {{"batch-size", {{"choice", {25, 50, 100}}}},
                     {"optimizer", {{"choice", {"sgd", "adam"}}}}};
  const SweepSpec s = SweepSpec::parse(j, "grid");
  auto sampler = make_sampler(s);
  std::set<std::string> seen;
  int64_t i = 0;
  while (auto a = sampler->sample(i, {})) {
    seen.insert(Json(*a).dump());
    ++i;
  }
  EXPECT_EQ(i, 6);
  EXPECT_EQ(seen.size(), 6u);
}

TEST(Samplers, RandomIsSeededAndRespectsTheDistributions) {
  const SweepSpec s = SweepSpec::parse(base_spec(), "r");
  auto a = make_sampler(s), b = make_sampler(s);
  Json other_seed = base_spec();
  other_seed["seed"] = 2;
  const SweepSpec s2 = SweepSpec::parse(other_seed, "r2");
  auto c = make_sampler(s2);
  bool differs = false;
  for (int64_t i = 0; i < 200; ++i) {
    const Assignment x = *a->sample(i, {});
    EXPECT_EQ(Json(x), Json(*b->sample(i, {}))) << "same seed, same trial: same values";
    differs |= Json(x) != Json(*c->sample(i, {}));
    const double lr = x.at("learning-rate").get<double>();
    EXPECT_GE(lr, 0.0001);
    EXPECT_LE(lr, 0.3);
    const int64_t width = x.at("first-layer-neurons").get<int64_t>();
    EXPECT_EQ(width % 64, 0) << width;
    EXPECT_GE(width, 64);
    EXPECT_LE(width, 512);
    EXPECT_TRUE(x.at("batch-size") == 25 || x.at("batch-size") == 50 || x.at("batch-size") == 100);
  }
  EXPECT_TRUE(differs) << "another seed gives other values";
}

TEST(Samplers, LogUniformSpreadsOverDecades) {
  const SweepSpec s = SweepSpec::parse(base_spec(), "r");
  auto a = make_sampler(s);
  int below_1e3 = 0;
  for (int64_t i = 0; i < 1000; ++i) below_1e3 += a->sample(i, {})->at("learning-rate") < 0.001;
  // log-uniform on [1e-4, 0.3]: P(x < 1e-3) = 1 / log10(3000) = 0.29.
  EXPECT_NEAR(below_1e3 / 1000.0, 0.29, 0.05);
}

/// A synthetic objective with its optimum at lr = 0.01, width 256 (larger is better).
double objective(const Assignment& a) {
  const double lr = a.at("learning-rate").get<double>();
  const double w = a.at("first-layer-neurons").get<double>();
  return -std::pow(std::log10(lr) + 2, 2) - std::pow((w - 256) / 128, 2);
}

double best_after(const std::string& sampling, uint64_t seed, int budget) {
  Json j = base_spec();
  j["sampling"] = sampling;
  j["seed"] = seed;
  j["parameters"].erase("batch-size");
  const SweepSpec s = SweepSpec::parse(j, sampling);
  auto sampler = make_sampler(s);
  std::vector<Observation> history;
  double best = -INFINITY;
  for (int i = 0; i < budget; ++i) {
    const Assignment a = *sampler->sample(i, history);
    const double y = objective(a);
    history.push_back({a, y});
    best = std::max(best, y);
  }
  return best;
}

TEST(Samplers, TpeBeatsRandomSearchOnAverage) {
  double tpe = 0, random = 0;
  int tpe_wins = 0;
  constexpr int kSeeds = 30, kBudget = 30;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    const double t = best_after("bayesian", seed, kBudget), r = best_after("random", seed, kBudget);
    tpe += t / kSeeds;
    random += r / kSeeds;
    tpe_wins += t > r;
  }
  std::cout << "mean best objective over " << kSeeds << " seeds, " << kBudget << " trials: TPE "
            << tpe << ", random " << random << " (TPE better in " << tpe_wins << ")" << std::endl;
  EXPECT_GT(tpe, random);
  EXPECT_GT(tpe_wins, kSeeds / 2);
}

EarlyTermination policy(const std::string& name) {
  EarlyTermination e;
  e.policy = name;
  return e;
}

TEST(Policies, BanditCancelsOutsideTheSlack) {
  EarlyTermination e = policy("bandit");
  e.slack_factor = 0.2;
  TerminationPolicy p(e, /*maximize=*/true, "validation_acc");
  const MetricStreams s = {{0, {{1, 0.80}}}, {1, {{1, 0.70}}}, {2, {{1, 0.60}}}};
  EXPECT_FALSE(p.evaluate(0, 1, s).cancel);
  EXPECT_FALSE(p.evaluate(1, 1, s).cancel);  // 0.70 >= 0.80 / 1.2 = 0.667
  const Decision d = p.evaluate(2, 1, s);
  EXPECT_TRUE(d.cancel);
  EXPECT_NE(d.reason.find("bandit at epoch 1"), std::string::npos) << d.reason;

  e.slack_factor = 0;
  e.slack_amount = 0.05;
  TerminationPolicy amount(e, true, "validation_acc");
  EXPECT_TRUE(amount.evaluate(1, 1, s).cancel);  // 0.70 < 0.80 - 0.05

  // Minimizing a loss: larger is worse.
  e.slack_amount = 0;
  e.slack_factor = 0.5;
  TerminationPolicy loss(e, /*maximize=*/false, "validation_loss");
  const MetricStreams l = {{0, {{1, 0.2}}}, {1, {{1, 0.29}}}, {2, {{1, 0.31}}}};
  EXPECT_FALSE(loss.evaluate(1, 1, l).cancel);  // 0.29 <= 0.2 * 1.5
  EXPECT_TRUE(loss.evaluate(2, 1, l).cancel);

  // evaluation_interval and delay_evaluation.
  e = policy("bandit");
  e.slack_factor = 0.2;
  e.evaluation_interval = 2;
  e.delay_evaluation = 4;
  TerminationPolicy later(e, true, "validation_acc");
  MetricStreams m;
  for (int64_t ep = 1; ep <= 6; ++ep) {
    m[0][ep] = 0.9;
    m[1][ep] = 0.1;
  }
  EXPECT_FALSE(later.evaluate(1, 2, m).cancel) << "delayed";
  EXPECT_FALSE(later.evaluate(1, 5, m).cancel) << "not on the interval";
  EXPECT_TRUE(later.evaluate(1, 4, m).cancel);
  EXPECT_TRUE(later.evaluate(1, 6, m).cancel);
}

TEST(Policies, MedianStoppingComparesBestSoFarWithRunningAverages) {
  TerminationPolicy p(policy("median_stopping"), true, "validation_acc");
  // Running averages at epoch 2 of the others: 0.75, 0.85, 0.95 -> median 0.85.
  MetricStreams s = {{0, {{1, 0.7}, {2, 0.8}}},
                     {1, {{1, 0.8}, {2, 0.9}}},
                     {2, {{1, 0.9}, {2, 1.0}}},
                     {3, {{1, 0.84}, {2, 0.5}}}};
  const Decision d = p.evaluate(3, 2, s);
  EXPECT_TRUE(d.cancel) << "best so far 0.84 < median 0.85";
  EXPECT_NE(d.reason.find("median"), std::string::npos);
  s[3][1] = 0.86;
  EXPECT_FALSE(p.evaluate(3, 2, s).cancel) << "best so far 0.86 >= 0.85";
  EXPECT_FALSE(p.evaluate(2, 2, s).cancel);
  EXPECT_FALSE(p.evaluate(0, 5, s).cancel) << "no metric at that epoch";
}

TEST(Policies, TruncationCancelsTheWorstPercentage) {
  EarlyTermination e = policy("truncation_selection");
  e.truncation_percentage = 50;
  TerminationPolicy p(e, true, "validation_acc");
  const MetricStreams s = {{0, {{1, 0.9}}}, {1, {{1, 0.5}}}, {2, {{1, 0.7}}}, {3, {{1, 0.6}}}};
  EXPECT_TRUE(p.evaluate(1, 1, s).cancel);  // worst
  EXPECT_TRUE(p.evaluate(3, 1, s).cancel);  // second worst: 50% of 4 is 2
  EXPECT_FALSE(p.evaluate(2, 1, s).cancel);
  EXPECT_FALSE(p.evaluate(0, 1, s).cancel);
  e.truncation_percentage = 20;
  TerminationPolicy few(e, true, "validation_acc");
  EXPECT_FALSE(few.evaluate(1, 1, {{0, {{1, 0.9}}}, {1, {{1, 0.5}}}}).cancel)
      << "20% of 2 trials is none";
  TerminationPolicy none(policy("none"), true, "validation_acc");
  EXPECT_FALSE(none.evaluate(1, 1, s).cancel);
}

}  // namespace
}  // namespace dtrain::sweep
