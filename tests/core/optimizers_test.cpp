#include <gtest/gtest.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <sstream>

#include "core/errors.h"
#include "core/optimizers.h"
#include "core/run_config.h"

namespace dtrain {
namespace {

// Runs `steps` identical steps on a torch::optim reference and on ours, from the same start.
template <class Reference>
void expect_same_trajectory(Reference& reference, torch::Tensor a, Optimizer& ours, torch::Tensor b,
                            int steps, const std::string& what) {
  for (int step = 0; step < steps; ++step) {
    auto g = torch::randn(a.sizes(), a.options().requires_grad(false));
    a.mutable_grad() = g.clone();
    b.mutable_grad() = g.clone();
    reference.step();
    ours.step();
    // float32 CPU takes SGD's fused loop, which rounds like torch's unfused ops up to
    // contraction; everything else is torch's own op sequence and must match bit for bit.
    const bool fused = a.scalar_type() == torch::kFloat && what.rfind("sgd", 0) == 0;
    if (fused) {
      ASSERT_TRUE(torch::allclose(a, b, 1e-6, 1e-7))
          << what << " differs from torch at step " << step + 1;
    } else {
      ASSERT_TRUE(torch::equal(a, b)) << what << " differs from torch at step " << step + 1;
    }
  }
}

TEST(Optimizers, SgdMatchesTorchSgdOnBothPaths) {
  // float32 CPU takes the fused one-pass loop; float64 takes the generic (tensor op) path.
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (double momentum : {0.0, 0.9}) {
      for (double wd : {0.0, 1e-3}) {
        torch::manual_seed(8);
        auto a = torch::randn({37, 5}, dtype).set_requires_grad(true);
        auto b = a.detach().clone().set_requires_grad(true);
        torch::optim::SGD reference(
            {a}, torch::optim::SGDOptions(0.1).momentum(momentum).weight_decay(wd));
        auto ours = make_optimizer({"sgd", 0.1, momentum, wd}, {b});
        expect_same_trajectory(
            reference, a, *ours, b, 5,
            "sgd momentum " + std::to_string(momentum) + " wd " + std::to_string(wd));
        EXPECT_EQ(ours->has_state(), momentum != 0);
      }
    }
  }
}

// SGD splits only contiguous float32 CPU tensors (its one-pass loop); elsewhere
// begin_member_step() prepares nothing and step() takes torch's ops.
TEST(Optimizers, SgdSplitsOnlyWhatItsOnePassLoopTakes) {
  auto d = torch::randn({9, 4}, torch::kDouble).set_requires_grad(true);
  d.mutable_grad() = torch::randn({9, 4}, torch::kDouble);
  auto sgd = make_optimizer({"sgd", 0.1, 0.9, 0.0}, {d});
  EXPECT_FALSE(sgd->begin_member_step());
  EXPECT_EQ(sgd->steps(), 0);
  EXPECT_FALSE(sgd->has_state());
  sgd->step();
  EXPECT_EQ(sgd->steps(), 1);
  EXPECT_TRUE(sgd->has_state());

  auto f = torch::randn({9, 4}).set_requires_grad(true);
  f.mutable_grad() = torch::randn({9, 4});
  auto split = make_optimizer({"sgd", 0.1, 0.9, 0.0}, {f});
  const MemberStep member = split->begin_member_step();
  ASSERT_TRUE(member);
  EXPECT_EQ(split->steps(), 1);
  const auto before = f.detach().clone();
  member(1, 2);  // rows 4..8 only
  EXPECT_TRUE(torch::equal(f.detach().narrow(0, 0, 4), before.narrow(0, 0, 4)));
  EXPECT_FALSE(torch::equal(f.detach().narrow(0, 4, 5), before.narrow(0, 4, 5)));
}

TEST(Optimizers, AdamMatchesTorchAdamBitForBit) {
  for (double wd : {0.0, 1e-2}) {
    torch::manual_seed(9);
    auto a = torch::randn({11, 3}).set_requires_grad(true);
    auto b = a.detach().clone().set_requires_grad(true);
    torch::optim::Adam reference({a}, torch::optim::AdamOptions(0.01).weight_decay(wd));
    auto ours = make_optimizer({"adam", 0.01, 0.9, wd}, {b});
    expect_same_trajectory(reference, a, *ours, b, 6, "adam wd " + std::to_string(wd));
    EXPECT_EQ(ours->steps(), 6);
  }
}

// State survives flatten/unflatten (the parameter servers' form) and save/load (checkpoints):
// a copy continues exactly like the original.
TEST(Optimizers, StateRoundTripsThroughFlatFormAndArchives) {
  for (const std::string& name : optimizer_names()) {
    torch::manual_seed(1);
    std::vector<torch::Tensor> p = {torch::randn({4, 3}), torch::randn({3})};
    std::vector<torch::Tensor> q = {p[0].clone(), p[1].clone()}, r = {p[0].clone(), p[1].clone()};
    auto orig = make_optimizer({name, 0.05, 0.9, 0.0}, p);
    auto via_flat = make_optimizer({name, 0.05, 0.9, 0.0}, q);
    auto via_archive = make_optimizer({name, 0.05, 0.9, 0.0}, r);
    auto step_all = [&](std::vector<Optimizer*> opts, std::vector<std::vector<torch::Tensor>*> ps) {
      std::vector<torch::Tensor> g = {torch::randn({4, 3}), torch::randn({3})};
      for (size_t k = 0; k < opts.size(); ++k) {
        for (size_t i = 0; i < g.size(); ++i) (*ps[k])[i].mutable_grad() = g[i].clone();
        opts[k]->step();
      }
    };
    step_all({orig.get()}, {&p});
    step_all({orig.get()}, {&p});
    const FlatOptimizerState flat = orig->flatten();
    EXPECT_EQ(flat.slots.size(), orig->slot_names().size()) << name;
    for (const auto& [slot, t] : flat.slots) EXPECT_EQ(t.numel(), 15) << name << " " << slot;
    for (size_t i = 0; i < p.size(); ++i) q[i].detach().copy_(p[i]), r[i].detach().copy_(p[i]);
    via_flat->unflatten(flat);
    torch::serialize::OutputArchive out;
    orig->save(out);
    std::ostringstream bytes;
    out.save_to(bytes);
    torch::serialize::InputArchive in;
    std::istringstream stream(bytes.str());
    in.load_from(stream);
    via_archive->load(in);
    EXPECT_EQ(via_archive->steps(), 2);
    step_all({orig.get(), via_flat.get(), via_archive.get()}, {&p, &q, &r});
    for (size_t i = 0; i < p.size(); ++i) {
      EXPECT_TRUE(torch::equal(p[i], q[i])) << name << ": flat state did not carry over";
      EXPECT_TRUE(torch::equal(p[i], r[i])) << name << ": archived state did not carry over";
    }
  }
}

TEST(Optimizers, UnknownOptimizerOrStateIsAnErrorEverywhere) {
  std::vector<torch::Tensor> p = {torch::zeros({3})};
  try {
    make_optimizer({"rmsprop", 0.1, 0.0, 0.0}, p);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("sgd or adam"), std::string::npos) << e.what();
  }
  RunConfig c;
  c.optimizer = "rmsprop";
  EXPECT_THROW(c.validate(), ConfigError);
  EXPECT_THROW(OptimizerSettings::from_json({{"optimizer", "sgd"}}), ConfigError);

  auto sgd = make_optimizer({"sgd", 0.1, 0.9, 0.0}, p);
  FlatOptimizerState foreign;
  foreign.slots["exp_avg"] = torch::zeros({3});
  foreign.slots["momentum_buffer"] = torch::zeros({3});
  EXPECT_THROW(sgd->unflatten(foreign), DataError)
      << "a slot sgd does not keep must not be dropped";
  FlatOptimizerState short_state;
  short_state.slots["momentum_buffer"] = torch::zeros({2});
  EXPECT_THROW(sgd->unflatten(short_state), DataError);
  // A refused state leaves the optimizer's own state as it was.
  p[0].mutable_grad() = torch::ones({3});
  sgd->step();
  const FlatOptimizerState before = sgd->flatten();
  EXPECT_THROW(sgd->unflatten(foreign), DataError);
  EXPECT_EQ(sgd->steps(), 1);
  ASSERT_TRUE(sgd->has_state());
  EXPECT_TRUE(
      torch::equal(sgd->flatten().slots.at("momentum_buffer"), before.slots.at("momentum_buffer")));
  auto adam = make_optimizer({"adam", 0.1, 0.9, 0.0}, p);
  FlatOptimizerState missing;
  missing.slots["exp_avg"] = torch::zeros({3});
  EXPECT_THROW(adam->unflatten(missing), DataError);
}

}  // namespace
}  // namespace dtrain
