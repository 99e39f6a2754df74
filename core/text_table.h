// Plain-text output helpers shared by the listing commands: aligned tables and local times.
#pragma once

#include <string>
#include <vector>

namespace dtrain {

/// Rows as left-aligned columns two spaces apart, one line each (the first row is the header).
std::string format_table(const std::vector<std::vector<std::string>>& rows);

/// "YYYY-MM-DD HH:MM:SS" in local time for seconds since the epoch; "-" for 0 or less.
std::string format_local_time(double seconds);

}  // namespace dtrain
