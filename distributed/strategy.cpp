#include "distributed/strategy.h"

#include "core/errors.h"

namespace dtrain::distributed {

std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config) {
  if (config.distributed == "none") return std::make_unique<GradientSync>();
  throw ConfigError("--distributed: '" + config.distributed +
                    "' is not available in this build (expected: none)");
}

}  // namespace dtrain::distributed
