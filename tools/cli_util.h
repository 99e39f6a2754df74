// Helpers shared by the subcommands: cxxopts parsing with dtrain's error conventions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <cxxopts.hpp>

#include "core/option_table.h"
#include "core/run_config.h"

namespace dtrain::cli {

/// Parses, rejecting positional leftovers. Returns false if --help was printed.
bool parse_or_help(cxxopts::Options& options, int argc, char** argv, cxxopts::ParseResult& out);

/// --data-dir or its alias --data-folder (they must not disagree). Empty if neither is given.
std::string data_dir_flag(const cxxopts::ParseResult& result);

/// The value of a numeric flag (declared as a string option), with an error naming the flag
/// if it is not a whole number / finite number.
int64_t int_flag(const cxxopts::ParseResult& result, const std::string& name);
double double_flag(const cxxopts::ParseResult& result, const std::string& name);

/// Declares one string-valued flag per row of `table` (and its aliases), with its help text and
/// default; values are parsed by the rows themselves so errors follow dtrain's conventions.
void add_option_flags(cxxopts::Options& options, const std::vector<ConfigOption>& table);

/// RunConfig from parsed flags: rows given on the command line (or by an alias) are parsed in
/// table order, the rest keep RunConfig's defaults; then validate(). Throws ConfigError for a
/// missing required flag, aliases that disagree, conflicting flags and invalid values.
RunConfig run_config_from_flags(const cxxopts::ParseResult& result);

/// Runs the subcommand named by argv[1] from `table` with (argc - 1, argv + 1); prints `usage`
/// for help (exit 0), a missing (exit 2) or an unknown subcommand (exit 2).
int dispatch_subcommand(
    const std::string& program, const std::string& usage,
    const std::vector<std::pair<std::string, std::function<int(int, char**)>>>& table, int argc,
    char** argv);

/// Configures torch's thread pool: `threads` if > 0, else all cores divided by `local_ranks`.
int configure_threads(int threads, int local_ranks = 1);

}  // namespace dtrain::cli
