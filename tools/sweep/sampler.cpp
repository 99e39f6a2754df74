#include "tools/sweep/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace dtrain::sweep {

namespace {

using Kind = Distribution::Kind;
constexpr double kPi = 3.14159265358979323846;

/// A value without float noise (0.30000000000000004 -> 0.3).
double tidy(double v) { return std::stod(fmt::format("{:.12g}", v)); }

nlohmann::json finish(const Parameter& p, double v) {
  if (p.dist.q > 0) v = std::round(v / p.dist.q) * p.dist.q;
  if (p.integer) return static_cast<int64_t>(std::llround(v));
  return tidy(v);
}

std::mt19937_64 rng_for(uint64_t seed, int64_t index, uint64_t salt = 0) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(index), static_cast<uint32_t>(salt)};
  return std::mt19937_64(seq);
}

class GridSampler : public Sampler {
 public:
  explicit GridSampler(const SweepSpec& spec) : spec_(spec) {}
  std::optional<Assignment> sample(int64_t index, const std::vector<Observation>&) override {
    Assignment a;
    int64_t rest = index;
    for (const auto& p : spec_.parameters) {
      const auto n = static_cast<int64_t>(p.dist.choices.size());
      a[p.flag] = p.dist.choices[static_cast<size_t>(rest % n)];
      rest /= n;
    }
    if (rest > 0) return std::nullopt;  // every combination was drawn
    return a;
  }

 private:
  const SweepSpec& spec_;
};

class RandomSampler : public Sampler {
 public:
  explicit RandomSampler(const SweepSpec& spec) : spec_(spec) {}
  std::optional<Assignment> sample(int64_t index, const std::vector<Observation>&) override {
    auto rng = rng_for(spec_.seed, index);
    Assignment a;
    for (const auto& p : spec_.parameters) a[p.flag] = draw(p, rng);
    return a;
  }

 private:
  const SweepSpec& spec_;
};

/// Tree-structured Parzen estimator, one parameter at a time (independent TPE): the trials so
/// far are split into the best quarter and the rest; each gets a Parzen density (Gaussian
/// kernels in the parameter's sampling space plus a prior component); of 24 candidates drawn
/// from the good density, the one with the highest good/bad density ratio is taken.
class TpeSampler : public Sampler {
 public:
  explicit TpeSampler(const SweepSpec& spec) : spec_(spec) {}

  std::optional<Assignment> sample(int64_t index,
                                   const std::vector<Observation>& history) override {
    auto rng = rng_for(spec_.seed, index);
    Assignment a;
    if (static_cast<int64_t>(history.size()) < kStartup) {
      for (const auto& p : spec_.parameters) a[p.flag] = draw(p, rng);
      return a;
    }
    std::vector<const Observation*> sorted;
    for (const auto& o : history) sorted.push_back(&o);
    std::stable_sort(sorted.begin(), sorted.end(), [](const Observation* x, const Observation* y) {
      return x->score > y->score;
    });
    const size_t n_good = std::min<size_t>(
        25, std::max<size_t>(1, static_cast<size_t>(std::ceil(0.25 * sorted.size()))));
    const std::vector<const Observation*> good(sorted.begin(), sorted.begin() + n_good);
    const std::vector<const Observation*> bad(sorted.begin() + n_good, sorted.end());
    for (const auto& p : spec_.parameters) {
      a[p.flag] = p.dist.kind == Kind::kChoice ? categorical(p, good, bad, rng)
                                               : numeric(p, good, bad, rng);
    }
    return a;
  }

 private:
  static constexpr int64_t kStartup = 8;
  static constexpr int kCandidates = 24;

  nlohmann::json categorical(const Parameter& p, const std::vector<const Observation*>& good,
                             const std::vector<const Observation*>& bad, std::mt19937_64& rng) {
    const size_t k = p.dist.choices.size();
    auto weights = [&](const std::vector<const Observation*>& obs) {
      std::vector<double> w(k, 1.0);  // a prior count of one per choice
      for (const auto* o : obs) {
        auto it = o->params.find(p.flag);
        if (it == o->params.end()) continue;
        for (size_t i = 0; i < k; ++i) {
          if (p.dist.choices[i] == it->second) w[i] += 1;
        }
      }
      double sum = 0;
      for (double x : w) sum += x;
      for (double& x : w) x /= sum;
      return w;
    };
    const auto wg = weights(good), wb = weights(bad);
    std::discrete_distribution<size_t> pick(wg.begin(), wg.end());
    size_t best = pick(rng);
    double best_ratio = -1;
    for (int c = 0; c < kCandidates; ++c) {
      const size_t i = pick(rng);
      const double ratio = wg[i] / wb[i];
      if (ratio > best_ratio) best_ratio = ratio, best = i;
    }
    return p.dist.choices[best];
  }

  /// The parameter in the space it is sampled in (log for log-scale distributions).
  static double to_space(const Parameter& p, double v) {
    return p.dist.log_scale() ? std::log(std::max(v, 1e-300)) : v;
  }

  struct Parzen {
    std::vector<double> mu, sigma;  // the last component is the prior
    double lo, hi;
    double pdf(double x) const {
      double sum = 0;
      for (size_t i = 0; i < mu.size(); ++i) {
        const double z = (x - mu[i]) / sigma[i];
        sum += std::exp(-0.5 * z * z) / (sigma[i] * std::sqrt(2 * kPi));
      }
      return sum / static_cast<double>(mu.size()) + 1e-300;
    }
    double draw(std::mt19937_64& rng) const {
      std::uniform_int_distribution<size_t> which(0, mu.size() - 1);
      const size_t i = which(rng);
      std::normal_distribution<double> n(mu[i], sigma[i]);
      for (int tries = 0; tries < 20; ++tries) {
        const double x = n(rng);
        if (x >= lo && x <= hi) return x;
      }
      return std::clamp(mu[i], lo, hi);
    }
  };

  Parzen parzen(const Parameter& p, const std::vector<const Observation*>& obs) const {
    Parzen z;
    double prior_mu, prior_sigma;
    if (p.dist.is_normal()) {
      prior_mu = p.dist.a;  // lognormal: mu and sigma are of log(x) already
      prior_sigma = p.dist.b;
      z.lo = prior_mu - 4 * prior_sigma;
      z.hi = prior_mu + 4 * prior_sigma;
    } else {
      z.lo = to_space(p, p.dist.a);
      z.hi = to_space(p, p.dist.b);
      prior_mu = 0.5 * (z.lo + z.hi);
      prior_sigma = z.hi - z.lo;
    }
    const double range = z.hi - z.lo;
    const double n = static_cast<double>(obs.size()) + 1;
    const double bw = std::clamp(range * std::pow(n, -0.2) / 2, range / 100, range);
    for (const auto* o : obs) {
      auto it = o->params.find(p.flag);
      if (it == o->params.end() || !it->second.is_number()) continue;
      z.mu.push_back(std::clamp(to_space(p, it->second.get<double>()), z.lo, z.hi));
      z.sigma.push_back(bw);
    }
    z.mu.push_back(prior_mu);
    z.sigma.push_back(prior_sigma);
    return z;
  }

  nlohmann::json numeric(const Parameter& p, const std::vector<const Observation*>& good,
                         const std::vector<const Observation*>& bad, std::mt19937_64& rng) {
    const Parzen l = parzen(p, good), g = parzen(p, bad);
    double best = l.draw(rng), best_score = -INFINITY;
    for (int c = 0; c < kCandidates; ++c) {
      const double x = l.draw(rng);
      const double score = std::log(l.pdf(x)) - std::log(g.pdf(x));
      if (score > best_score) best_score = score, best = x;
    }
    return finish(p, p.dist.log_scale() ? std::exp(best) : best);
  }

  const SweepSpec& spec_;
};

}  // namespace

nlohmann::json draw(const Parameter& p, std::mt19937_64& rng) {
  const Distribution& d = p.dist;
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  switch (d.kind) {
    case Kind::kChoice: {
      std::uniform_int_distribution<size_t> i(0, d.choices.size() - 1);
      return d.choices[i(rng)];
    }
    case Kind::kUniform:
    case Kind::kQUniform:
      return finish(p, d.a + (d.b - d.a) * unit(rng));
    case Kind::kLogUniform:
    case Kind::kQLogUniform:
      return finish(p, std::exp(std::log(d.a) + (std::log(d.b) - std::log(d.a)) * unit(rng)));
    case Kind::kNormal:
    case Kind::kQNormal:
      return finish(p, std::normal_distribution<double>(d.a, d.b)(rng));
    case Kind::kLogNormal:
    case Kind::kQLogNormal:
      return finish(p, std::exp(std::normal_distribution<double>(d.a, d.b)(rng)));
  }
  return nullptr;
}

std::unique_ptr<Sampler> make_sampler(const SweepSpec& spec) {
  if (spec.sampling == "grid") return std::make_unique<GridSampler>(spec);
  if (spec.sampling == "bayesian") return std::make_unique<TpeSampler>(spec);
  return std::make_unique<RandomSampler>(spec);
}

}  // namespace dtrain::sweep
