// Picks the GradientSync for a run from --distributed and the launcher's environment.
#pragma once

#include <memory>

#include "core/gradient_sync.h"
#include "core/run_config.h"

namespace dtrain::distributed {

/// "none": a single process. Throws ConfigError for a strategy this build does not provide.
std::unique_ptr<GradientSync> make_gradient_sync(const RunConfig& config);

}  // namespace dtrain::distributed
