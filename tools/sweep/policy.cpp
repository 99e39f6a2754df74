#include "tools/sweep/policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

namespace dtrain::sweep {

Decision TerminationPolicy::evaluate(int64_t trial, int64_t epoch,
                                     const MetricStreams& streams) const {
  Decision d;
  if (c_.policy == "none" || epoch % c_.evaluation_interval != 0 || epoch < c_.delay_evaluation) {
    return d;
  }
  auto mine_it = streams.find(trial);
  if (mine_it == streams.end() || !mine_it->second.count(epoch)) return d;
  const auto& mine = mine_it->second;
  const double value = mine.at(epoch);
  // Every trial's value at this epoch (those that reached it).
  std::vector<std::pair<double, int64_t>> at_epoch;
  for (const auto& [t, s] : streams) {
    if (auto it = s.find(epoch); it != s.end()) at_epoch.emplace_back(it->second, t);
  }

  if (c_.policy == "bandit") {
    double best = value;
    for (const auto& [v, t] : at_epoch) {
      if (better(v, best)) best = v;
    }
    double limit;
    std::string how;
    if (c_.slack_amount > 0) {
      limit = maximize_ ? best - c_.slack_amount : best + c_.slack_amount;
      how = fmt::format("best {:.4g} {} slack_amount {:.4g}", best, maximize_ ? "-" : "+",
                        c_.slack_amount);
    } else {
      limit = maximize_ ? best / (1 + c_.slack_factor) : best * (1 + c_.slack_factor);
      how = fmt::format("best {:.4g} {} (1 + slack_factor {:.4g})", best, maximize_ ? "/" : "*",
                        c_.slack_factor);
    }
    if (better(limit, value)) {
      d.cancel = true;
      d.reason = fmt::format("bandit at epoch {}: {} {:.4g} is outside the slack ({} = {:.4g})",
                             epoch, metric_, value, how, limit);
    }
  } else if (c_.policy == "median_stopping") {
    std::vector<double> averages;
    for (const auto& [t, s] : streams) {
      if (t == trial || !s.count(epoch)) continue;
      double sum = 0;
      int n = 0;
      for (const auto& [e, v] : s) {
        if (e <= epoch) sum += v, ++n;
      }
      averages.push_back(sum / n);
    }
    if (averages.empty()) return d;
    std::sort(averages.begin(), averages.end());
    const size_t m = averages.size();
    const double median =
        m % 2 == 1 ? averages[m / 2] : 0.5 * (averages[m / 2 - 1] + averages[m / 2]);
    double best_so_far = value;
    for (const auto& [e, v] : mine) {
      if (e <= epoch && better(v, best_so_far)) best_so_far = v;
    }
    if (better(median, best_so_far)) {
      d.cancel = true;
      d.reason = fmt::format(
          "median_stopping at epoch {}: best {} so far {:.4g} is worse than the median {:.4g} of "
          "{} other trials' running averages",
          epoch, metric_, best_so_far, median, m);
    }
  } else if (c_.policy == "truncation_selection") {
    const size_t n = at_epoch.size();
    const auto cut = static_cast<size_t>(static_cast<double>(n) * c_.truncation_percentage / 100);
    if (cut == 0) return d;
    // Worst first; ties broken by trial number so the decision is deterministic.
    std::sort(at_epoch.begin(), at_epoch.end(), [&](const auto& x, const auto& y) {
      if (x.first != y.first) return better(y.first, x.first);
      return x.second > y.second;
    });
    for (size_t i = 0; i < cut; ++i) {
      if (at_epoch[i].second == trial) {
        d.cancel = true;
        d.reason = fmt::format(
            "truncation_selection at epoch {}: {} {:.4g} is among the worst {:g}% ({} of {} "
            "trials)",
            epoch, metric_, value, c_.truncation_percentage, cut, n);
      }
    }
  }
  return d;
}

}  // namespace dtrain::sweep
