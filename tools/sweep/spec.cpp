#include "tools/sweep/spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "core/errors.h"
#include "core/run_config.h"

namespace dtrain::sweep {

namespace {

using Kind = Distribution::Kind;

const std::vector<std::pair<std::string, Kind>> kKinds = {
    {"choice", Kind::kChoice},           {"uniform", Kind::kUniform},
    {"quniform", Kind::kQUniform},       {"loguniform", Kind::kLogUniform},
    {"qloguniform", Kind::kQLogUniform}, {"normal", Kind::kNormal},
    {"qnormal", Kind::kQNormal},         {"lognormal", Kind::kLogNormal},
    {"qlognormal", Kind::kQLogNormal}};

/// Flags the sweep sets for every trial itself.
const std::set<std::string> kControlled = {"workspace", "experiment",    "output-dir",
                                           "run-name",  "tag",           "resume-from",
                                           "progress",  "register-model"};

class SpecError {
 public:
  explicit SpecError(std::string source) : source_(std::move(source)) {}
  [[noreturn]] void operator()(const std::string& where, const std::string& what) const {
    throw ConfigError(source_ + ": " + where + ": " + what);
  }

 private:
  std::string source_;
};

std::string describe(const nlohmann::json& v) {
  const std::string s = v.dump();
  return s.size() > 80 ? s.substr(0, 77) + "..." : s;
}

/// Parses `--flag value` / `--flag=value` / `--switch` tokens into `config` (as `dtrain train`
/// would), rejecting unknown flags, flags the sweep controls and positional leftovers.
void apply_train_args(const std::vector<std::string>& args, RunConfig& config,
                      const SpecError& fail) {
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& tok = args[i];
    if (tok.rfind("--", 0) != 0 || tok.size() < 3) {
      fail("train_args", "expected --flag [value] items, got '" + tok + "'");
    }
    std::string name = tok.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const ConfigOption* row = find_run_option(name);
    if (row == nullptr) fail("train_args", "unknown dtrain train flag --" + name);
    if (kControlled.count(row->flag)) {
      fail("train_args", "--" + name + " is set by the sweep for each trial; leave it out");
    }
    if (!has_value) {
      if (row->boolean && (i + 1 == args.size() || args[i + 1].rfind("--", 0) == 0)) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        fail("train_args", "--" + name + " needs a value");
      }
    }
    try {
      row->parse(config, value);
    } catch (const ConfigError& e) {
      fail("train_args", e.what());
    }
  }
}

double number_at(const nlohmann::json& arr, size_t i, const std::string& where,
                 const SpecError& fail) {
  if (!arr.at(i).is_number() || !std::isfinite(arr.at(i).get<double>())) {
    fail(where, "expected numbers, got " + describe(arr));
  }
  return arr.at(i).get<double>();
}

/// Checks that `value` is accepted by the flag, given the rest of the base configuration.
void check_value(const Parameter& p, const nlohmann::json& value, const RunConfig& base,
                 const std::string& where, const SpecError& fail) {
  RunConfig c = base;
  try {
    p.row->parse(c, value_text(value));
    c.validate();
  } catch (const ConfigError& e) {
    fail(where, "value " + value_text(value) + " is refused: " + e.what());
  }
}

Distribution parse_distribution(const nlohmann::json& j, const std::string& where,
                                const SpecError& fail) {
  if (!j.is_object() || j.size() != 1) {
    fail(where,
         "expected one distribution, e.g. {\"choice\": [25, 50]} or "
         "{\"loguniform\": [0.0001, 0.3]}, got " +
             describe(j));
  }
  const std::string name = j.begin().key();
  const nlohmann::json& args = j.begin().value();
  auto it =
      std::find_if(kKinds.begin(), kKinds.end(), [&](const auto& k) { return k.first == name; });
  if (it == kKinds.end()) {
    std::string names;
    for (const auto& k : kKinds) names += (names.empty() ? "" : ", ") + k.first;
    fail(where, "unknown distribution '" + name + "' (known: " + names + ")");
  }
  Distribution d;
  d.kind = it->second;
  if (!args.is_array()) fail(where + "." + name, "expected an array, got " + describe(args));
  if (d.kind == Kind::kChoice) {
    if (args.empty()) fail(where + ".choice", "expected at least one value");
    for (const auto& v : args) {
      if (!v.is_number() && !v.is_string() && !v.is_boolean()) {
        fail(where + ".choice", "expected numbers or strings, got " + describe(v));
      }
      d.choices.push_back(v);
    }
    return d;
  }
  const bool quantized = d.kind == Kind::kQUniform || d.kind == Kind::kQLogUniform ||
                         d.kind == Kind::kQNormal || d.kind == Kind::kQLogNormal;
  const size_t n = quantized ? 3 : 2;
  const std::string form = d.is_normal() ? (quantized ? "[mu, sigma, q]" : "[mu, sigma]")
                                         : (quantized ? "[low, high, q]" : "[low, high]");
  if (args.size() != n) fail(where + "." + name, "expected " + form + ", got " + describe(args));
  d.a = number_at(args, 0, where + "." + name, fail);
  d.b = number_at(args, 1, where + "." + name, fail);
  if (quantized) d.q = number_at(args, 2, where + "." + name, fail);
  if (quantized && d.q <= 0) fail(where + "." + name, "q must be > 0, got " + describe(args));
  if (d.is_normal()) {
    if (d.b <= 0) fail(where + "." + name, "sigma must be > 0, got " + describe(args));
  } else {
    if (!(d.a < d.b)) fail(where + "." + name, "low must be < high, got " + describe(args));
    if (d.log_scale() && d.a <= 0) {
      fail(where + "." + name, "log-scale bounds must be > 0, got " + describe(args));
    }
  }
  return d;
}

int64_t integer_field(const nlohmann::json& j, const char* key, int64_t def, int64_t lo, int64_t hi,
                      const std::string& where, const SpecError& fail) {
  if (!j.contains(key)) return def;
  const auto& v = j.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
    fail(where + key, fmt::format("expected an integer in [{}, {}], got {}", lo, hi, describe(v)));
  }
  return v.get<int64_t>();
}

double number_field(const nlohmann::json& j, const char* key, double def, double lo, double hi,
                    const std::string& where, const SpecError& fail) {
  if (!j.contains(key)) return def;
  const auto& v = j.at(key);
  if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < lo ||
      v.get<double>() > hi) {
    fail(where + key, fmt::format("expected a number in [{}, {}], got {}", lo, hi, describe(v)));
  }
  return v.get<double>();
}

std::string text_field(const nlohmann::json& j, const char* key, const std::string& def,
                       const std::vector<std::string>& allowed, const SpecError& fail) {
  if (!j.contains(key)) return def;
  const auto& v = j.at(key);
  if (!v.is_string() || (!allowed.empty() && std::find(allowed.begin(), allowed.end(),
                                                       v.get<std::string>()) == allowed.end())) {
    fail(key, "expected " + (allowed.empty() ? std::string("text") : join_alternatives(allowed)) +
                  ", got " + describe(v));
  }
  return v.get<std::string>();
}

std::vector<std::string> string_list(const nlohmann::json& j, const char* key,
                                     const SpecError& fail) {
  std::vector<std::string> out;
  if (!j.contains(key)) return out;
  if (!j.at(key).is_array()) fail(key, "expected an array of strings");
  for (const auto& v : j.at(key)) {
    if (!v.is_string()) fail(key, "expected strings, got " + describe(v));
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

bool Distribution::log_scale() const {
  return kind == Kind::kLogUniform || kind == Kind::kQLogUniform || kind == Kind::kLogNormal ||
         kind == Kind::kQLogNormal;
}

bool Distribution::is_normal() const {
  return kind == Kind::kNormal || kind == Kind::kQNormal || kind == Kind::kLogNormal ||
         kind == Kind::kQLogNormal;
}

const char* kind_name(Distribution::Kind kind) {
  for (const auto& [name, k] : kKinds) {
    if (k == kind) return name.c_str();
  }
  return "?";
}

const std::vector<std::string>& epoch_metric_keys() {
  static const std::vector<std::string> keys = {
      "validation_acc", "validation_loss",    "train_acc",   "train_loss",
      "epoch_seconds",  "samples_per_second", "sync_seconds"};
  return keys;
}

std::string value_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  return fmt::format("{}", value.get<double>());
}

SweepSpec SweepSpec::parse(const nlohmann::json& j, const std::string& source) {
  const SpecError fail(source);
  if (!j.is_object()) fail("spec", "expected a JSON object, got " + describe(j));
  static const std::set<std::string> known = {"experiment",
                                              "parameters",
                                              "sampling",
                                              "seed",
                                              "primary_metric",
                                              "goal",
                                              "max_total_runs",
                                              "max_concurrent_runs",
                                              "max_duration_minutes",
                                              "early_termination",
                                              "train_args",
                                              "launcher"};
  for (const auto& [key, value] : j.items()) {
    if (!known.count(key))
      fail(key, "unknown key (known: " + join_alternatives({known.begin(), known.end()}) + ")");
  }
  SweepSpec s;
  s.experiment = text_field(j, "experiment", "default", {}, fail);
  if (s.experiment.empty() || s.experiment.size() > 256)
    fail("experiment", "expected 1 to 256 characters");
  s.sampling = text_field(j, "sampling", "random", {"grid", "random", "bayesian"}, fail);
  s.seed = static_cast<uint64_t>(integer_field(j, "seed", 0, 0, int64_t{1} << 62, "", fail));
  s.primary_metric = text_field(j, "primary_metric", "validation_acc", epoch_metric_keys(), fail);
  s.goal = text_field(j, "goal", "maximize", {"maximize", "minimize"}, fail);
  s.max_total_runs = integer_field(j, "max_total_runs", 10, 1, 100000, "", fail);
  s.max_concurrent_runs = integer_field(j, "max_concurrent_runs", 1, 1, 1024, "", fail);
  s.max_duration_minutes = number_field(j, "max_duration_minutes", 10080, 0.01, 525600, "", fail);
  s.train_args = string_list(j, "train_args", fail);
  s.launcher = string_list(j, "launcher", fail);

  RunConfig base;
  apply_train_args(s.train_args, base, fail);

  if (!j.contains("parameters") || !j.at("parameters").is_object() || j.at("parameters").empty()) {
    fail("parameters", "expected an object of flag -> distribution with at least one flag");
  }
  for (const auto& [flag, dist] : j.at("parameters").items()) {
    const std::string where = "parameters." + flag;
    Parameter p;
    p.flag = flag;
    p.row = find_run_option(flag);
    if (p.row == nullptr) fail(where, "unknown dtrain train flag --" + flag);
    if (kControlled.count(p.row->flag)) fail(where, "--" + flag + " is set by the sweep itself");
    for (const auto& t : s.train_args) {
      if (t == "--" + flag || t.rfind("--" + flag + "=", 0) == 0) {
        fail(where, "--" + flag + " is also in train_args; give it in one place");
      }
    }
    for (const auto& other : s.parameters) {
      if (other.row == p.row) fail(where, "the same option as parameters." + other.flag);
    }
    p.dist = parse_distribution(dist, where, fail);
    p.integer = p.row->type_name == "integer";
    if (p.dist.kind == Kind::kChoice) {
      for (const auto& v : p.dist.choices) check_value(p, v, base, where, fail);
    } else {
      if (!p.row->numeric) {
        fail(where, std::string(kind_name(p.dist.kind)) + " needs a numeric flag; --" + flag +
                        " takes " + p.row->type_name + " (use choice)");
      }
      // The ends of the range (the mean for normals) must be values the flag accepts.
      std::vector<double> probes =
          p.dist.is_normal()
              ? std::vector<double>{p.dist.log_scale() ? std::exp(p.dist.a) : p.dist.a}
              : std::vector<double>{p.dist.a, p.dist.b};
      for (double v : probes) {
        const nlohmann::json value =
            p.integer ? nlohmann::json(static_cast<int64_t>(std::llround(std::max(v, p.dist.q))))
                      : nlohmann::json(v);
        check_value(p, value, base, where, fail);
      }
    }
    s.parameters.push_back(std::move(p));
  }
  if (s.sampling == "grid") {
    for (const auto& p : s.parameters) {
      if (p.dist.kind != Kind::kChoice) {
        fail("sampling", "grid needs only choice parameters; parameters." + p.flag + " is " +
                             kind_name(p.dist.kind));
      }
    }
  }
  const bool data_sampled =
      std::any_of(s.parameters.begin(), s.parameters.end(),
                  [](const Parameter& p) { return p.row == find_run_option("data-dir"); });
  if (base.data_dir.empty() && !data_sampled) {
    fail("train_args", "--data-dir is required (dtrain train needs it)");
  }

  if (j.contains("early_termination")) {
    const auto& e = j.at("early_termination");
    const std::string w = "early_termination.";
    if (!e.is_object()) fail("early_termination", "expected an object");
    EarlyTermination& t = s.early_termination;
    static const std::set<std::string> et_known = {"policy",           "slack_factor",
                                                   "slack_amount",     "evaluation_interval",
                                                   "delay_evaluation", "truncation_percentage"};
    for (const auto& [key, value] : e.items()) {
      if (!et_known.count(key)) fail(w + key, "unknown key");
    }
    if (!e.contains("policy") || !e.at("policy").is_string())
      fail(w + "policy", "expected bandit, median_stopping, truncation_selection or none");
    t.policy = e.at("policy").get<std::string>();
    if (t.policy != "none" && t.policy != "bandit" && t.policy != "median_stopping" &&
        t.policy != "truncation_selection") {
      fail(w + "policy", "expected bandit, median_stopping, truncation_selection or none, got '" +
                             t.policy + "'");
    }
    t.evaluation_interval = integer_field(e, "evaluation_interval", 1, 1, 1000000, w, fail);
    t.delay_evaluation = integer_field(e, "delay_evaluation", 0, 0, 1000000, w, fail);
    t.slack_factor = number_field(e, "slack_factor", 0, 0, 1e6, w, fail);
    t.slack_amount = number_field(e, "slack_amount", 0, 0, 1e12, w, fail);
    t.truncation_percentage = number_field(e, "truncation_percentage", 0, 0, 99, w, fail);
    const bool factor = e.contains("slack_factor"), amount = e.contains("slack_amount");
    if (t.policy == "bandit" && factor == amount) {
      fail(w + "slack_factor", "bandit needs exactly one of slack_factor and slack_amount");
    }
    if (t.policy != "bandit" && (factor || amount))
      fail(w + "policy", "slack_* apply to bandit only");
    if (t.policy == "truncation_selection" && !(t.truncation_percentage >= 1)) {
      fail(w + "truncation_percentage", "truncation_selection needs a percentage in [1, 99]");
    }
    if (t.policy != "truncation_selection" && e.contains("truncation_percentage")) {
      fail(w + "policy", "truncation_percentage applies to truncation_selection only");
    }
  }
  return s;
}

nlohmann::json SweepSpec::to_json() const {
  nlohmann::json params = nlohmann::json::object();
  for (const auto& p : parameters) {
    nlohmann::json args = nlohmann::json::array();
    if (p.dist.kind == Kind::kChoice) {
      args = p.dist.choices;
    } else {
      args = {p.dist.a, p.dist.b};
      if (p.dist.q > 0) args.push_back(p.dist.q);
    }
    params[p.flag] = {{kind_name(p.dist.kind), args}};
  }
  nlohmann::json et = {{"policy", early_termination.policy},
                       {"evaluation_interval", early_termination.evaluation_interval},
                       {"delay_evaluation", early_termination.delay_evaluation}};
  if (early_termination.policy == "bandit") {
    if (early_termination.slack_amount > 0) {
      et["slack_amount"] = early_termination.slack_amount;
    } else {
      et["slack_factor"] = early_termination.slack_factor;
    }
  }
  if (early_termination.policy == "truncation_selection") {
    et["truncation_percentage"] = early_termination.truncation_percentage;
  }
  return {{"experiment", experiment},
          {"parameters", params},
          {"sampling", sampling},
          {"seed", seed},
          {"primary_metric", primary_metric},
          {"goal", goal},
          {"max_total_runs", max_total_runs},
          {"max_concurrent_runs", max_concurrent_runs},
          {"max_duration_minutes", max_duration_minutes},
          {"early_termination", et},
          {"train_args", train_args},
          {"launcher", launcher}};
}

}  // namespace dtrain::sweep
