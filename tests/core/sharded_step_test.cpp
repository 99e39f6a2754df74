#include <gtest/gtest.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <pthread.h>

#include <atomic>
#include <cmath>
#include <csignal>
#include <stdexcept>

#include "core/blas.h"
#include "core/optimizers.h"
#include "core/sharded_step.h"
#include "core/thread_team.h"
#include "models/registry.h"

namespace dtrain {
namespace {

TEST(ThreadTeam, RunsEveryMemberEachTimeAndRethrows) {
  ThreadTeam team(3);
  ASSERT_EQ(team.size(), 3);
  for (int round = 0; round < 500; ++round) {
    std::vector<int> hits(3, 0);
    team.run([&](int k) { hits[static_cast<size_t>(k)] += 1; });
    ASSERT_EQ(hits, (std::vector<int>{1, 1, 1})) << "round " << round;
  }
  EXPECT_THROW(team.run([](int k) {
    if (k == 2) throw std::runtime_error("member 2 failed");
  }),
               std::runtime_error);
  std::atomic<int> after{0};
  team.run([&](int) { after.fetch_add(1); });  // still usable after an error
  EXPECT_EQ(after.load(), 3);
  ThreadTeam alone(1);
  int calls = 0;
  alone.run([&](int k) { calls += k + 1; });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadTeam, AMemberFailingBeforeABarrierDoesNotHangTheOthers) {
  for (int failing = 0; failing < 3; ++failing) {
    ThreadTeam team(3);
    try {
      team.run([&](int k) {
        if (k == failing) throw std::invalid_argument("member failed before the barrier");
        team.barrier();
        team.barrier();
      });
      ADD_FAILURE() << "no exception, failing member " << failing;
    } catch (const std::invalid_argument& e) {  // the member's own error, not TeamAborted
      EXPECT_STREQ(e.what(), "member failed before the barrier");
    }
    std::atomic<int> passed{0};
    team.run([&](int) {  // barriers work again in the next run
      team.barrier();
      passed.fetch_add(1);
    });
    EXPECT_EQ(passed.load(), 3);
  }
}

bool blocked_here(int sig) {
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, nullptr, &mask);
  return sigismember(&mask, sig) == 1;
}

// The members' GEMMs may be oneDNN's, which must not take a signal (core/blas.h): every member,
// teams of one included, runs with SIGTERM and the like blocked, the faults a thread raises itself
// left alone, and the caller gets its own mask back.
TEST(ThreadTeam, MembersRunWithAsynchronousSignalsBlocked) {
  ASSERT_FALSE(blocked_here(SIGTERM));
  for (int size : {1, 3}) {
    ThreadTeam team(size);
    std::vector<int> term(static_cast<size_t>(size), 0), segv(static_cast<size_t>(size), 1);
    team.run([&](int k) {
      term[static_cast<size_t>(k)] = blocked_here(SIGTERM) && blocked_here(SIGINT);
      segv[static_cast<size_t>(k)] = blocked_here(SIGSEGV);
    });
    EXPECT_EQ(term, std::vector<int>(static_cast<size_t>(size), 1)) << "team of " << size;
    EXPECT_EQ(segv, std::vector<int>(static_cast<size_t>(size), 0)) << "team of " << size;
    EXPECT_FALSE(blocked_here(SIGTERM)) << "team of " << size;
  }
  {
    const AsyncSignalsBlocked outer;
    { const AsyncSignalsBlocked inner; }
    EXPECT_TRUE(blocked_here(SIGTERM)) << "an inner guard unblocked the outer one's signals";
  }
  EXPECT_FALSE(blocked_here(SIGTERM));
}

Model small_model(const std::string& activation = "relu") {
  RunConfig c;
  c.hidden_sizes = {9, 7};
  c.activation = activation;
  torch::manual_seed(5);
  return models::build_model(c, {12, 4});
}

std::vector<torch::Tensor> grads_of(const Model& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.module->parameters()) out.push_back(p.grad().clone());
  return out;
}

// Both ways of splitting a step: the MLP's layers by output rows (Model::team_step) and, for
// models without one, the batch by rows.
class ShardedStepSplits : public ::testing::TestWithParam<std::tuple<std::string, bool>> {};

TEST_P(ShardedStepSplits, GiveTheWholeBatchGradient) {
  const auto [activation, split_layers] = GetParam();
  const auto x = torch::rand({7, 12});
  const auto y = torch::randint(0, 4, {7}, torch::kLong);
  const auto x2 = torch::rand({1, 12});  // fewer rows than shards
  const auto y2 = torch::randint(0, 4, {1}, torch::kLong);
  Model one = small_model(activation);
  one.team_step = nullptr;  // the reference: train_step, LibTorch ops on one thread
  ShardedStep single(one, 1);
  const auto [loss1, correct1] = single.run({x, y}, 0.5, false);
  single.run({x2, y2}, 0.5, true);
  const auto expected = grads_of(one);
  const auto logits = single.forward(x);
  for (int shards : {1, 2, 3, 5}) {
    Model m = small_model(activation);
    if (!split_layers) m.team_step = nullptr;
    ShardedStep sharded(m, shards);
    ASSERT_EQ(sharded.shards(), shards);
    for (int repeat = 0; repeat < 2; ++repeat) {  // gradients are overwritten at a group's start
      const auto [loss, correct] = sharded.run({x, y}, 0.5, false);
      sharded.run({x2, y2}, 0.5, true);
      EXPECT_NEAR(loss.item<double>(), loss1.item<double>(), 1e-6);
      EXPECT_EQ(correct.item<int64_t>(), correct1.item<int64_t>());
      const auto got = grads_of(m);
      for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_TRUE(torch::allclose(got[i], expected[i], 1e-5, 1e-7))
            << shards << " shards, parameter " << i;
      }
    }
    EXPECT_TRUE(torch::allclose(sharded.forward(x), logits, 1e-5, 1e-6));
    EXPECT_FALSE(sharded.forward(x).requires_grad());
  }
}

INSTANTIATE_TEST_SUITE_P(ActivationsAndSplits, ShardedStepSplits,
                         ::testing::Combine(::testing::Values("relu", "tanh", "sigmoid"),
                                            ::testing::Bool()));

Model mlp_of(const std::vector<int64_t>& hidden, const std::string& activation = "relu") {
  RunConfig c;
  c.hidden_sizes = hidden;
  c.activation = activation;
  torch::manual_seed(11);
  return models::build_model(c, {12, 4});
}

// The MLP's team step (a team of one too) at depths the default model does not have: no hidden
// layer (only the last layer, which every member computes whole), a hidden layer narrower than the
// team (members with no rows), three hidden layers; batches that grow and shrink between steps (its
// buffers are kept), and accumulation.
TEST(ShardedStep, TeamStepMatchesOneThreadAtEveryDepthAndBatch) {
  for (const std::vector<int64_t>& hidden : {std::vector<int64_t>{}, {2}, {9, 7, 5}, {1, 6}}) {
    for (const std::string activation : {"relu", "sigmoid"}) {
      for (int members : {1, 2, 3, 5}) {
        Model one = mlp_of(hidden, activation);
        one.team_step = nullptr;  // the reference: train_step
        Model team = mlp_of(hidden, activation);
        ShardedStep single(one, 1);
        ShardedStep split(team, members);
        for (int64_t rows : {33, 3, 2, 40}) {
          const auto x = torch::rand({rows, 12});
          const auto y = torch::randint(0, 4, {rows}, torch::kLong);
          const auto [loss1, correct1] = single.run({x, y}, 0.25, false);
          single.run({x.flip(0), y.flip(0)}, 0.25, true);
          const auto [loss, correct] = split.run({x, y}, 0.25, false);
          split.run({x.flip(0), y.flip(0)}, 0.25, true);
          const std::string where = "hidden " + std::to_string(hidden.size()) + " " + activation +
                                    ", " + std::to_string(members) + " members, batch " +
                                    std::to_string(rows);
          EXPECT_NEAR(loss.item<double>(), loss1.item<double>(), 1e-5) << where;
          EXPECT_EQ(correct.item<int64_t>(), correct1.item<int64_t>()) << where;
          const auto expected = grads_of(one), got = grads_of(team);
          for (size_t i = 0; i < got.size(); ++i) {
            EXPECT_TRUE(torch::allclose(got[i], expected[i], 1e-4, 1e-6))
                << where << ", parameter " << i;
          }
        }
      }
    }
  }
}

// Stored inputs (uint8 pixels and their scale, converted by each member) train exactly as the
// float inputs made from them do.
TEST(ShardedStep, TeamStepOnStoredPixelsEqualsTheFloatBatch) {
  const auto pixels = torch::randint(0, 256, {21, 12}, torch::kLong).to(torch::kUInt8);
  const auto y = torch::randint(0, 4, {21}, torch::kLong);
  const Batch stored{pixels, y, 1.0 / 255.0};
  const Batch scaled{stored.float_inputs(), y};
  const Batch halved{scaled.inputs * 2.0, y, 0.5};  // float inputs with a scale
  for (int members : {1, 2, 3}) {
    std::vector<std::vector<torch::Tensor>> grads;
    for (const Batch* b : {&stored, &scaled, &halved}) {
      Model m = mlp_of({9, 7});
      ShardedStep step(m, members);
      const auto [loss, correct] = step.run(*b, 1.0, false);
      step.run(*b, 1.0, true);
      grads.push_back(grads_of(m));
    }
    for (size_t i = 0; i < grads[0].size(); ++i) {
      EXPECT_TRUE(torch::equal(grads[0][i], grads[1][i])) << members << " members, parameter " << i;
      EXPECT_TRUE(torch::allclose(grads[2][i], grads[1][i], 1e-5, 1e-7))
          << members << " members, parameter " << i;
    }
  }
}

// A batch left ungathered (Batch::rows, as MnistDataset::get_stored gives it) trains bit for bit
// as the gathered batch: in the team step, whose members gather the rows as they convert them
// (pixels and floats; other types are gathered before), and on the other paths.
TEST(ShardedStep, RowsLeftUngatheredTrainAsTheGatheredBatch) {
  const auto pixels = torch::randint(0, 256, {40, 12}, torch::kLong).to(torch::kUInt8);
  const auto rows = torch::tensor({39, 0, 7, 7, 12, 3, 25, 25, 1, 30, 18}, torch::kLong);
  const auto y = torch::randint(0, 4, {rows.size(0)}, torch::kLong);
  const auto floats = pixels.to(torch::kFloat32) / 7.0;
  for (bool team : {true, false}) {
    for (int members : {1, 2, 3}) {
      for (const torch::Tensor& source : {pixels, floats, floats.to(torch::kDouble)}) {
        for (double scale : {1.0, 1.0 / 255.0}) {
          const Batch lazy{source, y, scale, rows};
          const Batch gathered{source.index_select(0, rows), y, scale};
          ASSERT_EQ(lazy.size(), rows.size(0));
          std::vector<std::vector<torch::Tensor>> grads;
          std::vector<std::pair<torch::Tensor, torch::Tensor>> results;
          for (const Batch* b : {&lazy, &gathered}) {
            Model m = mlp_of({9, 7});
            if (!team) m.team_step = nullptr;
            ShardedStep step(m, members);
            results.push_back(step.run(*b, 1.0, false));
            step.run(*b, 1.0, true);
            grads.push_back(grads_of(m));
          }
          const std::string where = std::string(team ? "team step" : "batch split") + ", " +
                                    std::to_string(members) + " members, " +
                                    std::string(c10::toString(source.scalar_type())) +
                                    " inputs, scale " + std::to_string(scale);
          EXPECT_TRUE(torch::equal(results[0].first, results[1].first)) << where;
          EXPECT_EQ(results[0].second.item<int64_t>(), results[1].second.item<int64_t>()) << where;
          for (size_t i = 0; i < grads[0].size(); ++i) {
            EXPECT_TRUE(torch::equal(grads[0][i], grads[1][i])) << where << ", parameter " << i;
          }
        }
      }
    }
  }
  // A row outside the inputs is refused before any member starts, and the team goes on.
  Model m = mlp_of({9, 7});
  ShardedStep step(m, 2);
  EXPECT_THROW(
      step.run({pixels, y.narrow(0, 0, 2), 1.0, torch::tensor({3, 40}, torch::kLong)}, 1.0, false),
      c10::Error);
  EXPECT_THROW(
      step.run({pixels, y.narrow(0, 0, 2), 1.0, torch::tensor({-1, 3}, torch::kLong)}, 1.0, false),
      c10::Error);
  const auto [loss, correct] = step.run({pixels, y, 1.0 / 255.0, rows}, 1.0, false);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
}

// The team step counts correct predictions as logits.argmax(1) does: ties go to the first of the
// largest logits, and a NaN logit wins.
TEST(ShardedStep, TeamStepCountsCorrectAsArgmaxDoes) {
  Model m = mlp_of({});  // the last layer alone: logits = x W^T + b, set by hand below
  auto x = torch::zeros({5, 12});
  x[0].narrow(0, 0, 4).copy_(torch::tensor({1.0f, 3.0f, 3.0f, 0.0f}));  // tie: class 1
  x[1].narrow(0, 0, 4).copy_(torch::tensor({0.0f, 0.0f, 0.0f, 0.0f}));  // all equal: class 0
  x[2].narrow(0, 0, 4).copy_(torch::tensor({0.0f, 1.0f, 2.0f, 7.0f}));  // class 3
  x[3].narrow(0, 0, 4).copy_(torch::tensor({5.0f, 1.0f, 2.0f, 5.0f}));  // tie: class 0
  x[4].narrow(0, 0, 4).copy_(torch::tensor({0.0f, 1.0f, 9.0f, 7.0f}));  // class 2
  // Weights: the identity on the first 4 inputs, then a NaN in class 1's row (every sample's
  // logit 1 is NaN: a NaN input would make all four NaN).
  for (const auto& [nan_class, predicted] :
       {std::pair<int, std::vector<int64_t>>{-1, {1, 0, 3, 0, 2}}, {1, {1, 1, 1, 1, 1}}}) {
    {
      torch::NoGradGuard no_grad;
      auto params = m.module->parameters();
      params[0].copy_(torch::eye(4, 12));
      if (nan_class >= 0) params[0][nan_class][7] = std::nanf("");
      params[1].zero_();
    }
    const auto expected = m.forward(x).argmax(1);
    ASSERT_TRUE(torch::equal(expected, torch::tensor(predicted, torch::kLong))) << expected;
    for (int members : {1, 2}) {
      ShardedStep step(m, members);
      for (int shift = 0; shift < 4; ++shift) {  // targets agreeing with argmax on some rows
        const auto y = (torch::arange(5) + shift) % 4;
        const auto [loss, correct] = step.run({x, y}, 1.0, false);
        EXPECT_EQ(correct.item<int64_t>(), expected.eq(y).sum().item<int64_t>())
            << members << " members, shift " << shift << ", NaN in class " << nan_class;
      }
    }
  }
}

TEST(ShardedStep, TeamStepCarriesANanWeightIntoLossAndGradients) {
  Model m = mlp_of({9, 7});
  {
    torch::NoGradGuard no_grad;
    m.module->parameters()[0][3][5] = std::nanf("");
  }
  for (int members : {1, 2}) {
    ShardedStep step(m, members);
    const auto [loss, correct] =
        step.run({torch::rand({8, 12}), torch::randint(0, 4, {8}, torch::kLong)}, 1.0, false);
    EXPECT_TRUE(std::isnan(loss.item<double>()));
    for (const auto& g : grads_of(m)) EXPECT_TRUE(g.isnan().any().item<bool>()) << members;
  }
}

TEST(ShardedStep, BadTargetFailsOnEveryMemberWithoutHanging) {
  Model m = small_model();
  ShardedStep step(m, 3);
  const auto x = torch::rand({4, 12});
  EXPECT_ANY_THROW(step.run({x, torch::full({4}, 9, torch::kLong)}, 1.0, false));
  const auto [loss, correct] = step.run({x, torch::zeros({4}, torch::kLong)}, 1.0, false);
  EXPECT_TRUE(std::isfinite(loss.item<double>()));
}

TEST(ShardedStep, SameShardCountIsBitIdenticalRunToRun) {
  const auto x = torch::rand({50, 12});
  const auto y = torch::randint(0, 4, {50}, torch::kLong);
  std::vector<torch::Tensor> first;
  for (int run = 0; run < 3; ++run) {
    Model m = small_model();
    ShardedStep step(m, 2);
    for (int s = 0; s < 20; ++s) step.run({x, y}, 1.0, s % 2 == 1);
    const auto got = grads_of(m);
    if (run == 0) first = got;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(torch::equal(got[i], first[i]));
  }
}

TEST(Optimizers, TeamSplitStepsAreBitIdenticalToOneThread) {
  for (const std::string kind : {"sgd", "adam"}) {
    torch::manual_seed(3);
    const auto start = torch::randn({1001, 7});
    auto a = start.clone().set_requires_grad(true);
    auto b = start.clone().set_requires_grad(true);
    auto alone = make_optimizer({kind, 0.05, 0.9, 1e-3}, {a});
    auto split = make_optimizer({kind, 0.05, 0.9, 1e-3}, {b});
    ThreadTeam team(3);
    split->set_team(&team);
    for (int s = 0; s < 5; ++s) {
      const auto g = torch::randn({1001, 7});
      a.mutable_grad() = g.clone();
      b.mutable_grad() = g.clone();
      alone->step();
      split->step();
      ASSERT_TRUE(torch::equal(a, b)) << kind << " step " << s + 1;
    }
  }
}

// The Trainer's single-process step: the optimizer's update, run by each member inside the step
// (Optimizer::begin_member_step as ShardedStep::run's `then`), leaves the same bits as the step
// run after it. On the MLP's team step at every depth (with fewer than two hidden layers the
// members wait for each other before updating), on the batch split (also with fewer rows than
// members), on one thread, and at the end of an accumulated step.
TEST(ShardedStep, OptimizerStepWithinTheStepEqualsTheStepAfterIt) {
  for (const std::vector<int64_t>& hidden : {std::vector<int64_t>{}, {2}, {9, 5}, {9, 7, 5}}) {
    for (const std::string kind : {"sgd", "adam"}) {
      for (int members : {1, 2, 3}) {
        for (bool split_layers : {true, false}) {
          Model after = mlp_of(hidden), within = mlp_of(hidden);
          if (!split_layers) after.team_step = within.team_step = nullptr;
          ShardedStep step_after(after, members), step_within(within, members);
          const OptimizerSettings settings{kind, 0.05, 0.9, 1e-3};
          auto opt_after = make_optimizer(settings, after.module->parameters());
          auto opt_within = make_optimizer(settings, within.module->parameters());
          opt_after->set_team(step_after.team());
          opt_within->set_team(step_within.team());
          for (int s = 0; s < 6; ++s) {
            const int64_t rows = s == 3 ? 1 : 17;
            const auto x = torch::rand({rows, 12});
            const auto y = torch::randint(0, 4, {rows}, torch::kLong);
            const bool two_passes = s % 2 == 1;  // the update follows the second
            const double scale = two_passes ? 0.5 : 1.0;
            if (two_passes) {
              step_after.run({x.flip(0), y.flip(0)}, scale, false);
              step_within.run({x.flip(0), y.flip(0)}, scale, false);
            }
            step_after.run({x, y}, scale, two_passes);
            opt_after->step();
            step_within.run({x, y}, scale, two_passes, opt_within->begin_member_step());
            const std::string where = kind + ", hidden " + std::to_string(hidden.size()) + ", " +
                                      std::to_string(members) + " members, " +
                                      (split_layers ? "team step" : "batch split") + ", step " +
                                      std::to_string(s + 1);
            const auto a = after.module->parameters(), b = within.module->parameters();
            for (size_t i = 0; i < a.size(); ++i) {
              ASSERT_TRUE(torch::equal(a[i], b[i])) << where << ", parameter " << i;
            }
            ASSERT_EQ(opt_after->steps(), opt_within->steps()) << where;
            const FlatOptimizerState sa = opt_after->flatten(), sb = opt_within->flatten();
            for (const auto& [slot, t] : sa.slots) {
              ASSERT_TRUE(torch::equal(t, sb.slots.at(slot))) << where << ", " << slot;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace dtrain
