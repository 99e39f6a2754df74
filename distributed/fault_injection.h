// Fault injection for multi-process tests: DTRAIN_FAULT_INJECT=kind:rank:step makes one rank
// misbehave at one gradient synchronisation, so tests can prove the others notice.
//   kill   the rank SIGKILLs itself (a crashed peer)
//   stall  the rank sleeps instead of arriving (a hung peer)
//   nan    the rank's first gradient becomes NaN (a numerically broken peer)
#pragma once

#include <cstdint>
#include <string>

namespace dtrain::distributed {

struct FaultInjection {
  enum class Kind { kNone, kKill, kStall, kNan };
  Kind kind = Kind::kNone;
  int rank = -1;
  int64_t step = -1;

  /// Parses DTRAIN_FAULT_INJECT; unset means none. Throws ConfigError on a malformed value.
  static FaultInjection from_environment();
  bool fires(int rank_now, int64_t step_now) const {
    return kind != Kind::kNone && rank == rank_now && step == step_now;
  }
};

}  // namespace dtrain::distributed
