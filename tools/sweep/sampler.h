// Samplers: grid (every combination of choices), random (seeded), and bayesian (TPE, the
// tree-structured Parzen estimator of Bergstra et al. 2011, as Optuna and Hyperopt use it).
// Each draw is a pure function of (seed, trial index, results so far), so a resumed sweep
// continues the same sequence.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/sweep/spec.h"

namespace dtrain::sweep {

/// flag -> sampled value (number or string).
using Assignment = std::map<std::string, nlohmann::json>;

/// A finished (or cancelled) trial as the sampler learns from it.
struct Observation {
  Assignment params;
  double score = 0;  ///< the primary metric, sign-adjusted so that larger is better
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  /// The parameters of trial `index` (0-based); nullopt when the space is exhausted (grid).
  virtual std::optional<Assignment> sample(int64_t index,
                                           const std::vector<Observation>& history) = 0;
};

std::unique_ptr<Sampler> make_sampler(const SweepSpec& spec);

/// One draw of `p`'s distribution with `rng` (quantized, rounded for integer flags).
nlohmann::json draw(const Parameter& p, std::mt19937_64& rng);

}  // namespace dtrain::sweep
