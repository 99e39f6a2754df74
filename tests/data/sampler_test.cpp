#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <set>

#include "data/sampler.h"

namespace dtrain::data {
namespace {

std::vector<int64_t> flatten(const std::vector<torch::Tensor>& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches)
    for (int64_t i = 0; i < b.numel(); ++i) out.push_back(b[i].item<int64_t>());
  return out;
}

TEST(ShuffleSampler, DeterministicPerSeedAndEpoch) {
  ShuffleSampler a({100, 10, 7, 0, 1, true}), b({100, 10, 7, 0, 1, true}),
      c({100, 10, 8, 0, 1, true});
  EXPECT_EQ(a.permutation(3), b.permutation(3));
  EXPECT_NE(a.permutation(3), a.permutation(4));
  EXPECT_NE(a.permutation(3), c.permutation(3));
  auto p = a.permutation(1);
  std::sort(p.begin(), p.end());
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(p[i], i);
}

TEST(ShuffleSampler, SingleRankKeepsPartialBatch) {
  ShuffleSampler s({23, 5, 1, 0, 1, true});
  auto batches = s.batches(1);
  ASSERT_EQ(batches.size(), 5u);
  EXPECT_EQ(batches.back().numel(), 3);
  EXPECT_EQ(flatten(batches), s.permutation(1));
}

TEST(ShuffleSampler, RanksGetDisjointShardsOfTheGlobalBatch) {
  const int64_t n = 1003, batch = 7;
  for (int world : {2, 3, 4}) {
    std::set<int64_t> seen;
    size_t steps = 0;
    for (int r = 0; r < world; ++r) {
      ShuffleSampler s({n, batch, 5, r, world, true});
      auto batches = s.batches(2);
      if (r == 0) steps = batches.size();
      EXPECT_EQ(batches.size(), steps) << "every rank must take the same number of steps";
      for (int64_t i : flatten(batches)) EXPECT_TRUE(seen.insert(i).second) << "seen twice: " << i;
    }
    EXPECT_LT(n - static_cast<int64_t>(seen.size()), batch * world);  // only a remainder skipped
  }
}

TEST(ShuffleSampler, TwoRanksAtBEqualOneRankAt2B) {
  ShuffleSampler one({1000, 20, 9, 0, 1, true});
  ShuffleSampler r0({1000, 10, 9, 0, 2, true}), r1({1000, 10, 9, 1, 2, true});
  auto b1 = one.batches(1), b0 = r0.batches(1), b2 = r1.batches(1);
  ASSERT_EQ(b1.size(), b0.size());
  for (size_t i = 0; i < b1.size(); ++i) {
    EXPECT_TRUE(torch::equal(b1[i], torch::cat({b0[i], b2[i]})));
  }
}

TEST(ShardSampler, CoversEverySampleOnce) {
  std::set<int64_t> seen;
  for (int r = 0; r < 3; ++r)
    for (int64_t i : flatten(ShardSampler(100, 7, r, 3).batches(0)))
      EXPECT_TRUE(seen.insert(i).second);
  EXPECT_EQ(seen.size(), 100u);
}

}  // namespace
}  // namespace dtrain::data
