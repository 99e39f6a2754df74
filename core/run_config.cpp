#include "core/run_config.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/errors.h"
#include "core/optimizers.h"
#include "core/option_table.h"

namespace dtrain {

namespace {

constexpr int64_t kMaxLayerWidth = 1 << 20;

bool finite_at_least(double v, double lo) { return std::isfinite(v) && v >= lo; }

/// Flag-only rows for one hidden layer's width: they write element `i` of hidden_sizes.
void set_width(RunConfig& c, size_t i, int64_t v) {
  if (c.hidden_sizes.size() <= i)
    c.hidden_sizes.resize(i + 1, default_run_config().hidden_sizes.at(i));
  c.hidden_sizes[i] = v;
}
int64_t get_width(const RunConfig& c, size_t i) {
  return i < c.hidden_sizes.size() ? c.hidden_sizes[i] : 0;
}

bool valid_widths(const std::vector<int64_t>& sizes) {
  if (sizes.empty()) return false;
  for (int64_t h : sizes) {
    if (h <= 0 || h > kMaxLayerWidth) return false;
  }
  return true;
}

bool printable_name(const std::string& v) {
  if (v.empty() || v.size() > 256) return false;
  for (unsigned char ch : v) {
    if (ch < 0x20 || ch == 0x7f) return false;
  }
  return true;
}

bool valid_tags(const std::vector<std::string>& tags) {
  std::vector<std::string> keys;
  for (const auto& t : tags) {
    const size_t eq = t.find('=');
    if (eq == 0 || eq == std::string::npos || eq > 250 || t.size() - eq > 5000) return false;
    const std::string key = t.substr(0, eq);
    for (unsigned char ch : key) {
      if (!std::isalnum(ch) &&
          std::string("_.-/:").find(static_cast<char>(ch)) == std::string::npos)
        return false;
    }
    if (std::find(keys.begin(), keys.end(), key) != keys.end()) return false;
    keys.push_back(key);
  }
  return true;
}

std::vector<ConfigOption> make_table() {
  using C = RunConfig;
  const auto positive = [](const int64_t& v) { return v > 0; };
  const auto width_ok = [](const int64_t& v) { return v > 0 && v <= kMaxLayerWidth; };
  const std::string width_expected =
      "a layer width between 1 and " + std::to_string(kMaxLayerWidth);
  return {
      // Data and outputs.
      option("data-dir", &C::data_dir,
             "folder with the MNIST IDX files (raw or .gz, searched recursively)")
          .alias("data-folder")
          .required()
          .local(),
      option("output-dir", &C::output_dir, "where checkpoints, metrics and the model go").local(),
      // Model.
      option("model", &C::model, "model name from the registry").defines_model(),
      flag_only<int64_t>("first-layer-neurons", "width of the first hidden layer")
          .writes([](C& c, const int64_t& v) { set_width(c, 0, v); },
                  [](const C& c) { return get_width(c, 0); })
          .check(width_ok, width_expected),
      flag_only<int64_t>("second-layer-neurons", "width of the second hidden layer")
          .writes([](C& c, const int64_t& v) { set_width(c, 1, v); },
                  [](const C& c) { return get_width(c, 1); })
          .check(width_ok, width_expected),
      option("hidden-sizes", &C::hidden_sizes,
             "all hidden widths, e.g. 512,256,128 (instead of the two flags above)")
          .no_default()
          .defines_model()
          .conflicts_with("first-layer-neurons")
          .conflicts_with("second-layer-neurons")
          .check(valid_widths,
                 "one or more layer widths between 1 and " + std::to_string(kMaxLayerWidth)),
      option("activation", &C::activation, "relu, tanh or sigmoid")
          .defines_model()
          .choices({"relu", "tanh", "sigmoid"}),
      // Optimisation.
      option("epochs", &C::epochs, "epochs to train").check(positive, "a positive integer"),
      option("batch-size", &C::batch_size, "mini-batch size (per process)")
          .check(positive, "a positive integer"),
      option("learning-rate", &C::learning_rate, "learning rate")
          .check([](const double& v) { return std::isfinite(v) && v > 0; }, "a finite number > 0"),
      option("optimizer", &C::optimizer, "sgd (with --momentum) or adam")
          .choices(optimizer_names()),
      option("momentum", &C::momentum, "SGD momentum")
          .check([](const double& v) { return std::isfinite(v) && v >= 0 && v < 1; },
                 "a number in [0, 1)"),
      option("weight-decay", &C::weight_decay, "L2 weight decay")
          .check([](const double& v) { return finite_at_least(v, 0); }, "a finite number >= 0"),
      option("seed", &C::seed, "seed for initialisation and shuffling"),
      option("lr-scaling", &C::lr_scaling,
             "scale --learning-rate for data-parallel runs by k = processes x backward passes "
             "per step (global batch / --batch-size): none, linear (x k) or sqrt (x sqrt k)")
          .choices({"none", "linear", "sqrt"})
          .check(
              [](const std::string& v, const C& c) { return v == "none" || c.distributed != "ps"; },
              "none with --distributed ps (the parameter servers' optimizer is not scaled)"),
      option("warmup-epochs", &C::warmup_epochs,
             "ramp the rate linearly, step by step, from --learning-rate to the scaled rate over "
             "this many epochs (fractions allowed)")
          .check([](const double& v) { return std::isfinite(v) && v >= 0 && v <= 1e6; },
                 "0 to 1000000 epochs")
          .check([](const double& v, const C& c) { return v == 0 || c.distributed != "ps"; },
                 "0 with --distributed ps (the parameter servers' optimizer is not scheduled)"),
      option("target-accuracy", &C::target_accuracy,
             "stop after the first epoch whose validation accuracy reaches this (0: off); run.json "
             "records time_to_target_seconds and epochs_to_target")
          .check([](const double& v) { return std::isfinite(v) && v >= 0 && v <= 1; },
                 "an accuracy in (0, 1], or 0 (off)"),
      // Execution.
      option("device", &C::device, "auto, cpu or cuda").choices({"auto", "cpu", "cuda"}).local(),
      option("threads", &C::threads, "CPU threads per process (0: cores / local processes)")
          .check([](const int& v) { return v >= 0 && v <= 4096; }, "0 (all cores) to 4096")
          .local(),
      option("checkpoint-every", &C::checkpoint_every,
             "write a checkpoint every N epochs (0: never)")
          .check([](const int64_t& v) { return v >= 0; }, "0 (never) or a positive integer"),
      option("checkpoint-every-steps", &C::checkpoint_every_steps,
             "also write a mid-epoch checkpoint every N optimizer steps (0: never); the two "
             "newest are kept")
          .check([](const int64_t& v) { return v >= 0 && v <= 1'000'000'000; },
                 "0 (never) or a positive integer"),
      option("checkpoint-every-minutes", &C::checkpoint_every_minutes,
             "also write a mid-epoch checkpoint when this many minutes passed since the last one "
             "(0: never)")
          .check([](const double& v) { return std::isfinite(v) && v >= 0 && v <= 525600; },
                 "0 (never) or minutes up to 525600"),
      option("resume-from", &C::resume_from,
             "checkpoint file, or folder (newest inside), to continue from; auto: the newest "
             "valid one in <output-dir>/checkpoints if any, else start fresh")
          .no_default()
          .local(),
      // Distribution.
      option("distributed", &C::distributed,
             "none; ring (data parallel under mpirun: Horovod-style allreduce); ps (parameter "
             "servers and workers from TF_CONFIG)")
          .choices({"none", "ring", "ps"}),
      option("allreduce", &C::allreduce,
             "ring (ours: through shared memory when every rank is on one host, else a message "
             "ring; halving-doubling under 512 KiB at 4, 8, 16... ranks) or mpi (the MPI "
             "library's MPI_Allreduce)")
          .choices({"ring", "mpi"}),
      option("fusion-threshold-mb", &C::fusion_threshold_mb,
             "gradient fusion buffer size in MiB (0: one buffer per tensor)")
          .check([](const double& v) { return finite_at_least(v, 0) && v <= 65536; },
                 "0 to 65536 (0: one buffer per tensor)"),
      option("compression", &C::compression,
             "none or fp16 (gradients allreduced, or pushed to the parameter servers, in half "
             "precision)")
          .choices({"none", "fp16"}),
      option("backward-passes-per-step", &C::backward_passes_per_step,
             "local batches accumulated per allreduce and step")
          .check([](const int64_t& v) { return v >= 1 && v <= 1000000; }, "1 to 1000000"),
      option("stall-warning-seconds", &C::stall_warning_seconds,
             "report ranks that have not reached a collective after this long")
          .check([](const double& v) { return std::isfinite(v) && v > 0; }, "seconds > 0"),
      option("stall-abort-seconds", &C::stall_abort_seconds,
             "abort the job when a collective stalls this long")
          .check([](const double& v,
                    const C& c) { return finite_at_least(v, c.stall_warning_seconds); },
                 "seconds >= --stall-warning-seconds"),
      option("ps-mode", &C::ps_mode,
             "sync (average one gradient per worker per step) or async (apply on arrival)")
          .choices({"sync", "async"}),
      option("connect-timeout", &C::connect_timeout_seconds,
             "seconds a worker waits for the parameter servers")
          .json_key("connect_timeout_seconds")
          .local()
          .check([](const double& v) { return v > 0 && v <= 86400; }, "seconds in (0, 86400]"),
      option("peer-timeout", &C::peer_timeout_seconds,
             "seconds after which a silent ps or worker is declared dead")
          .json_key("peer_timeout_seconds")
          .check([](const double& v) { return v >= 1 && v <= 86400; }, "seconds in [1, 86400]"),
      option("tls-cert", &C::tls_cert,
             "PEM certificate of this task: a ps serves TLS with it, a worker presents it")
          .no_default()
          .local(),
      option("tls-key", &C::tls_key, "PEM private key of --tls-cert").no_default().local(),
      option("tls-ca", &C::tls_ca,
             "PEM CA certificate(s): workers verify the ps with it; a ps given it requires "
             "client certificates signed by it (mutual TLS)")
          .no_default()
          .local(),
      option("insecure", &C::insecure,
             "run a parameter-server task without DTRAIN_CLUSTER_TOKEN: any local process can "
             "then pull the model and stop the cluster (cluster run makes a token itself)")
          .local(),
      // Tracking (rank 0 / the PS chief records the run in the workspace).
      option("workspace", &C::workspace,
             "folder of the run history and artifact store; none: no tracking")
          .env("DTRAIN_WORKSPACE")
          .local()
          .check([](const std::string& v) { return !v.empty(); }, "a folder or none"),
      option("experiment", &C::experiment, "experiment the run belongs to")
          .local()
          .check(printable_name, "1 to 256 printable characters"),
      option("run-name", &C::run_name, "name shown for the run (generated if not given)")
          .no_default()
          .local()
          .check([](const std::string& v) { return v.empty() || printable_name(v); },
                 "1 to 256 printable characters"),
      option("tag", &C::tags, "key=value tag of the run (repeatable)")
          .no_default()
          .local()
          .check(valid_tags, "key=value pairs with distinct keys of letters, digits and _.-/:"),
      option("log-every-steps", &C::log_every_steps,
             "record the training loss every N steps (0: only per epoch)")
          .local()
          .check([](const int64_t& v) { return v >= 0 && v <= 1000000000; },
                 "0 (off) to 1000000000"),
      option("track-checkpoints", &C::track_checkpoints,
             "also copy the checkpoints into the workspace at the end")
          .local(),
      option("progress", &C::progress, "live progress line: auto (on a terminal), always or never")
          .choices({"auto", "always", "never"})
          .local(),
      option("register-model", &C::register_model,
             "register the final model under this name in the workspace's model registry")
          .no_default()
          .local()
          .check([](const std::string& v) { return v.empty() || valid_model_name(v); },
                 "a model name of letters, digits, '.', '_' or '-'")
          .check(
              [](const std::string& v, const C& c) { return v.empty() || c.workspace != "none"; },
              "a workspace to register into (not --workspace none)"),
  };
}

}  // namespace

bool valid_model_name(const std::string& name) {
  return !name.empty() && name.size() <= 128 && std::isalnum(static_cast<unsigned char>(name[0])) &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
         });
}

const RunConfig& default_run_config() {
  static const RunConfig defaults;
  return defaults;
}

const std::vector<ConfigOption>& run_options() {
  static const std::vector<ConfigOption> table = make_table();
  return table;
}

const ConfigOption* find_run_option(const std::string& flag) {
  for (const auto& row : run_options()) {
    if (row.flag == flag) return &row;
    for (const auto& a : row.aliases) {
      if (a == flag) return &row;
    }
  }
  return nullptr;
}

std::string options_markdown(const std::vector<ConfigOption>& table) {
  std::string md = "| flag | default | same on every rank | meaning |\n| --- | --- | --- | --- |\n";
  for (const auto& row : table) {
    std::string names = "`--" + row.flag + "`";
    for (const auto& a : row.aliases) names += ", `--" + a + "`";
    const std::string def = row.required ? "(required)" : row.default_text;
    std::string help = row.help;
    if (!row.env.empty()) help += " (env `" + row.env + "`)";
    md += fmt::format("| {} | {} | {} | {} |\n", names, def, row.shared ? "yes" : "no", help);
  }
  return md;
}

std::string join_alternatives(const std::vector<std::string>& values) {
  if (values.size() <= 1) return values.empty() ? "" : values[0];
  return fmt::format("{} or {}", fmt::join(values.begin(), values.end() - 1, ", "), values.back());
}

namespace detail {

namespace {

[[noreturn]] void bad_value(const std::string& flag, const std::string& expected,
                            const std::string& text) {
  throw ConfigError("--" + flag + ": expected " + expected + ", got '" + text + "'");
}

bool parse_integer(const std::string& text, long long& out) {
  try {
    size_t used = 0;
    out = std::stoll(text, &used, 10);
    return used == text.size() && !text.empty();
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace

void parse_value(const std::string&, const std::string& text, std::string& out) { out = text; }

void parse_value(const std::string& flag, const std::string& text, int64_t& out) {
  long long v = 0;
  if (!parse_integer(text, v)) bad_value(flag, "a whole number", text);
  out = v;
}

void parse_value(const std::string& flag, const std::string& text, int& out) {
  long long v = 0;
  if (!parse_integer(text, v) || v < std::numeric_limits<int>::min() ||
      v > std::numeric_limits<int>::max()) {
    bad_value(flag, "a whole number", text);
  }
  out = static_cast<int>(v);
}

void parse_value(const std::string& flag, const std::string& text, uint64_t& out) {
  long long v = 0;
  if (!parse_integer(text, v) || v < 0) bad_value(flag, "a non-negative integer", text);
  out = static_cast<uint64_t>(v);
}

void parse_value(const std::string& flag, const std::string& text, double& out) {
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) {
      out = v;
      return;
    }
  } catch (const std::exception&) {
  }
  bad_value(flag, "a finite number", text);
}

void parse_value(const std::string& flag, const std::string& text, std::vector<int64_t>& out) {
  out.clear();
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    long long v = 0;
    if (!parse_integer(item, v)) {
      bad_value(flag, "comma-separated positive integers like 300,100", text);
    }
    out.push_back(v);
  }
}

void parse_value(const std::string& flag, const std::string& text, bool& out) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") {
    out = true;
  } else if (text == "false" || text == "0" || text == "no" || text == "off") {
    out = false;
  } else {
    bad_value(flag, "true or false", text);
  }
}

void parse_value(const std::string&, const std::string& text, std::vector<std::string>& out) {
  out.push_back(text);
}

std::string format_value(const std::string& value) { return value; }
std::string format_value(bool value) { return value ? "true" : "false"; }
std::string format_value(const std::vector<std::string>& value) {
  return fmt::format("{}", fmt::join(value, " "));
}
std::string format_value(int64_t value) { return std::to_string(value); }
std::string format_value(int value) { return std::to_string(value); }
std::string format_value(uint64_t value) { return std::to_string(value); }
std::string format_value(double value) { return fmt::format("{}", value); }
std::string format_value(const std::vector<int64_t>& value) {
  return fmt::format("{}", fmt::join(value, ","));
}

void wrong_json_type(const std::string& key, const std::exception& e) {
  throw ConfigError("run configuration: field '" + key + "' has the wrong type: " + e.what());
}

}  // namespace detail

namespace {

/// The JSON-backed rows of `c` that `keep` selects, as one object.
nlohmann::json rows_json(const RunConfig& c, bool (*keep)(const ConfigOption&)) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& row : run_options()) {
    if (row.to_json && keep(row)) j[row.json_key] = row.to_json(c);
  }
  return j;
}

}  // namespace

nlohmann::json RunConfig::model_json() const {
  return rows_json(*this, [](const ConfigOption& row) { return row.defines_model; });
}

nlohmann::json RunConfig::to_json() const {
  return rows_json(*this, [](const ConfigOption&) { return true; });
}

nlohmann::json RunConfig::shared_json() const {
  return rows_json(*this, [](const ConfigOption& row) { return row.shared; });
}

RunConfig RunConfig::from_json(const nlohmann::json& j) {
  if (!j.is_object()) throw ConfigError("run configuration: expected a JSON object");
  RunConfig c;
  for (const auto& row : run_options()) {
    if (!row.from_json) continue;
    auto it = j.find(row.json_key);
    if (it != j.end()) row.from_json(c, *it);
  }
  return c;
}

void RunConfig::validate() const {
  for (const auto& row : run_options()) {
    if (auto problem = row.check(*this))
      throw ConfigError("--" + row.flag + ": expected " + *problem);
  }
}

}  // namespace dtrain
