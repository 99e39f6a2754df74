#include "distributed/fault_injection.h"

#include <cstdlib>
#include <regex>

#include "core/errors.h"

namespace dtrain::distributed {

FaultInjection FaultInjection::from_environment() {
  FaultInjection f;
  const char* value = std::getenv("DTRAIN_FAULT_INJECT");
  if (value == nullptr || *value == '\0') return f;
  static const std::regex pattern(R"((kill|stall|nan):(\d{1,6}):(\d{1,12}))");
  std::cmatch m;
  if (!std::regex_match(value, m, pattern)) {
    throw ConfigError(std::string("DTRAIN_FAULT_INJECT: expected kind:rank:step with kind kill, "
                                  "stall or nan (e.g. kill:1:5), got '") +
                      value + "'");
  }
  f.kind = m[1] == "kill" ? Kind::kKill : m[1] == "stall" ? Kind::kStall : Kind::kNan;
  f.rank = std::stoi(m[2]);
  f.step = std::stoll(m[3]);
  return f;
}

}  // namespace dtrain::distributed
