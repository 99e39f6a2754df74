#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "core/errors.h"
#include "models/mlp.h"
#include "models/model_io.h"
#include "models/registry.h"
#include "test_util.h"

namespace dtrain::models {
namespace {

TEST(Mlp, DefaultShapesAndParameterNames) {
  RunConfig c;
  Model m = build_model(c);
  auto y = m.forward(torch::rand({5, 784}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{5, 10}));
  std::vector<std::string> names;
  for (auto& p : m.module->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                             "fc3.weight", "fc3.bias"}));
  EXPECT_EQ(m.module->named_parameters()["fc1.weight"].sizes(), (std::vector<int64_t>{300, 784}));
  EXPECT_EQ(m.module->named_parameters()["fc2.weight"].sizes(), (std::vector<int64_t>{100, 300}));
}

TEST(Mlp, ChildrenAreInForwardOrder) {
  Mlp mlp(MlpOptions(4, {3, 2, 5}, 2).activation("tanh"));
  std::vector<std::string> names;
  for (auto& c : mlp->named_children()) names.push_back(c.key());
  EXPECT_EQ(names, (std::vector<std::string>{"fc1", "act1", "fc2", "act2", "fc3", "act3", "fc4"}));
  // Applying the children in order reproduces forward().
  auto x = torch::randn({3, 4});
  auto y = x;
  for (auto& c : mlp->named_children()) {
    if (auto* lin = c.value()->as<torch::nn::Linear>())
      y = lin->forward(y);
    else
      y = torch::tanh(y);
  }
  EXPECT_TRUE(torch::allclose(y, mlp->forward(x)));
}

class HandWrittenBackward : public ::testing::TestWithParam<std::string> {};

TEST_P(HandWrittenBackward, MatchesAutograd) {
  torch::manual_seed(4);
  Mlp mlp(MlpOptions(12, {9, 7, 5}, 4).activation(GetParam()));
  auto x = torch::rand({6, 12});
  auto y = torch::randint(0, 4, {6}, torch::kLong);
  auto loss = torch::nn::functional::cross_entropy(mlp->forward(x), y) * 0.5;
  loss.backward();
  std::vector<torch::Tensor> expected;
  for (auto& p : mlp->parameters()) expected.push_back(p.grad().clone() * 2);  // scale 0.5 twice
  // Overwrite (accumulate=false) with scale 0.5, then accumulate another 0.5.
  auto [hand_loss, logits] = mlp->train_step(x, y, 0.5, false);
  mlp->train_step(x, y, 0.5, true);
  EXPECT_NEAR(hand_loss.item<double>(), loss.item<double>() * 2, 1e-6);
  EXPECT_TRUE(torch::allclose(logits, mlp->forward(x)));
  auto params = mlp->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(params[i].grad(), expected[i], 1e-5, 1e-6))
        << mlp->named_parameters().keys()[i];
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, HandWrittenBackward,
                         ::testing::Values("relu", "tanh", "sigmoid"));

TEST(Registry, UnknownModelAndActivationAreConfigErrors) {
  RunConfig c;
  c.model = "resnet";
  EXPECT_THROW(build_model(c), ConfigError);
  c.model = "mlp";
  c.activation = "gelu2";
  EXPECT_THROW(build_model(c), ConfigError);
}

TEST(ModelIo, SaveAndLoadModelFolder) {
  testing::TempDir dir;
  RunConfig c;
  c.hidden_sizes = {12, 7, 5};
  Model m = build_model(c);
  save_model_dir(dir.path(), m, c, {{"final_acc", 0.5}});
  LoadedModel back = load_model(dir.path());
  EXPECT_EQ(back.config.hidden_sizes, c.hidden_sizes);
  EXPECT_EQ(back.metrics["final_acc"], 0.5);
  auto x = torch::rand({2, 784});
  EXPECT_TRUE(torch::equal(m.forward(x), back.model.forward(x)));
  EXPECT_TRUE(std::filesystem::exists(dir / "model.json"));
}

}  // namespace
}  // namespace dtrain::models
