// Helpers shared by the subcommands: cxxopts parsing with dtrain's error conventions.
#pragma once

#include <cstdint>
#include <string>

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

/// Configures torch's thread pool: `threads` if > 0, else all cores divided by `local_ranks`.
int configure_threads(int threads, int local_ranks = 1);

}  // namespace dtrain::cli
