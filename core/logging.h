// Log set-up: one pattern for every process, with the rank when there are several.
#pragma once

#include <string>

namespace dtrain {

/// Sets spdlog's pattern; `tag` (e.g. "rank 1/4", "worker:0") is shown on every line if not empty.
void setup_logging(const std::string& tag = "");

}  // namespace dtrain
