#include "core/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

namespace dtrain {

void setup_logging(const std::string& tag) {
  // Progress and errors go to stderr so that stdout stays clean for results (eval, cluster check).
  static auto logger = spdlog::stderr_color_mt("dtrain");
  spdlog::set_default_logger(logger);
  const std::string prefix = tag.empty() ? "" : "[" + tag + "] ";
  spdlog::set_pattern("[%H:%M:%S.%e] [%^%l%$] " + prefix + "%v");
}

}  // namespace dtrain
