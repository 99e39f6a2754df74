#include "tools/cli_util.h"

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <thread>

#include "core/errors.h"
#include "core/thread_team.h"

namespace dtrain::cli {

bool parse_or_help(cxxopts::Options& options, int argc, char** argv, cxxopts::ParseResult& out) {
  try {
    out = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw ConfigError(std::string(e.what()) + " (see: " + options.program() + " --help)");
  }
  if (out.count("help")) {
    std::cout << options.help() << std::endl;
    return false;
  }
  if (!out.unmatched().empty()) {
    throw ConfigError("unexpected argument '" + out.unmatched().front() +
                      "' (see: " + options.program() + " --help)");
  }
  return true;
}

void add_option_flags(cxxopts::Options& options, const std::vector<ConfigOption>& table) {
  auto add = options.add_options();
  for (const auto& row : table) {
    auto value = cxxopts::value<std::string>();
    if (!row.default_text.empty()) value->default_value(row.default_text);
    if (row.boolean) value->implicit_value("true");
    std::string help = row.help;
    if (!row.env.empty()) help += " (env " + row.env + ")";
    add(row.flag, help, value);
    for (const auto& alias : row.aliases)
      add(alias, "alias of --" + row.flag, cxxopts::value<std::string>());
  }
}

namespace {

/// The value given for `row` under its name or an alias; nullopt if none. Aliases must agree.
std::optional<std::string> given_value(const cxxopts::ParseResult& r, const ConfigOption& row) {
  std::optional<std::string> value;
  std::string from;
  std::vector<std::string> names = {row.flag};
  names.insert(names.end(), row.aliases.begin(), row.aliases.end());
  for (const auto& name : names) {
    if (!r.count(name)) continue;
    const std::string v = r[name].as<std::string>();
    if (value && *value != v) {
      throw ConfigError("--" + from + " '" + *value + "' and --" + name + " '" + v +
                        "' disagree (they are aliases; give one)");
    }
    value = v;
    from = name;
  }
  return value;
}

}  // namespace

std::string data_dir_flag(const cxxopts::ParseResult& result) {
  return given_value(result, *find_run_option("data-dir")).value_or("");
}

int64_t int_flag(const cxxopts::ParseResult& result, const std::string& name) {
  int64_t v = 0;
  detail::parse_value(name, result[name].as<std::string>(), v);
  return v;
}

double double_flag(const cxxopts::ParseResult& result, const std::string& name) {
  double v = 0;
  detail::parse_value(name, result[name].as<std::string>(), v);
  return v;
}

RunConfig run_config_from_flags(const cxxopts::ParseResult& r) {
  RunConfig config;
  for (const auto& row : run_options()) {
    if (row.repeatable) {
      // Every occurrence, in order (cxxopts keeps only the last as the option's value).
      for (const auto& kv : r.arguments()) {
        if (kv.key() == row.flag ||
            std::find(row.aliases.begin(), row.aliases.end(), kv.key()) != row.aliases.end()) {
          row.parse(config, kv.value());
        }
      }
      continue;
    }
    auto value = given_value(r, row);
    if (!value && !row.env.empty()) {
      if (const char* env = std::getenv(row.env.c_str()); env != nullptr && *env != '\0') {
        value = env;
      }
    }
    if (!value || (row.required && value->empty())) {
      if (row.required) {
        std::string names = "--" + row.flag;
        for (const auto& a : row.aliases) names += " (or --" + a + ")";
        throw ConfigError(names + " is required");
      }
      continue;
    }
    for (const auto& other : row.conflicts) {
      if (r.count(other)) {
        throw ConfigError("--" + row.flag + " replaces --" + other + "; give one or the other");
      }
    }
    row.parse(config, *value);
  }
  config.validate();
  return config;
}

int dispatch_subcommand(
    const std::string& program, const std::string& usage,
    const std::vector<std::pair<std::string, std::function<int(int, char**)>>>& table, int argc,
    char** argv) {
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string sub = argv[1];
  if (sub == "-h" || sub == "--help" || sub == "help") {
    std::cout << usage;
    return 0;
  }
  for (const auto& [name, run] : table) {
    if (name == sub) return run(argc - 1, argv + 1);
  }
  std::cerr << program << ": unknown subcommand '" << sub << "'\n\n" << usage;
  return 2;
}

int configure_threads(int threads, int local_ranks) {
  if (threads <= 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, cores / std::max(1, local_ranks));
  }
  // OpenBLAS's pool is sized too (at::set_num_threads does not): without it, two ranks on two
  // cores ran four BLAS threads and a step took 2.5x longer.
  set_compute_threads(threads);
  return threads;
}

}  // namespace dtrain::cli
