// ONNX export: structure checks of the written protobuf, and ONNX Runtime (an independent
// implementation) against LibTorch on the MNIST test set.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <map>

#include "core/errors.h"
#include "data/mnist.h"
#include "models/model_io.h"
#include "models/onnx_export.h"
#include "models/registry.h"
#include "test_util.h"

namespace dtrain::models {
namespace {

using testing::CommandResult;
using testing::TempDir;

onnx::ModelProto read_onnx(const std::filesystem::path& path) {
  onnx::ModelProto m;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(m.ParseFromIstream(&in)) << path;
  return m;
}

TEST(OnnxExport, GraphStructureInitializersAndMetadata) {
  TempDir dir;
  RunConfig c;
  c.hidden_sizes = {20, 10, 5};
  Model m = build_model(c);
  export_onnx(m, c, {{"final_acc", 0.97}}, dir / "m.onnx");
  const onnx::ModelProto p = read_onnx(dir / "m.onnx");
  EXPECT_EQ(p.opset_import(0).version(), kOnnxOpset);
  EXPECT_EQ(p.ir_version(), onnx::IR_VERSION);
  EXPECT_EQ(p.producer_name(), "dtrain");
  const auto& g = p.graph();
  ASSERT_EQ(g.input_size(), 1);
  EXPECT_EQ(g.input(0).name(), "input");
  EXPECT_EQ(g.input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  EXPECT_EQ(g.input(0).type().tensor_type().shape().dim(1).dim_value(), 784);
  ASSERT_EQ(g.output_size(), 2);
  EXPECT_EQ(g.output(0).name(), "logits");
  EXPECT_EQ(g.output(1).name(), "probabilities");
  std::vector<std::string> inits, params;
  for (const auto& t : g.initializer()) inits.push_back(t.name());
  for (const auto& named : m.module->named_parameters()) params.push_back(named.key());
  EXPECT_EQ(inits, params) << "initializers are the module's parameter names";
  std::map<std::string, std::string> meta;
  for (const auto& kv : p.metadata_props()) meta[kv.key()] = kv.value();
  EXPECT_EQ(meta["producer"], "dtrain");
  EXPECT_EQ(meta["final_validation_accuracy"], "0.97");
  EXPECT_EQ(meta["weights_sha256"].size(), 64u);
  EXPECT_EQ(nlohmann::json::parse(meta["training_config"])["hidden_sizes"],
            nlohmann::json({20, 10, 5}));
  int gemms = 0;
  for (const auto& n : g.node()) gemms += n.op_type() == "Gemm";
  EXPECT_EQ(gemms, 4);
}

struct WithDropoutImpl : torch::nn::Module {
  WithDropoutImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(784, 10));
    drop = register_module("drop", torch::nn::Dropout(0.5));
  }
  torch::nn::Linear fc1{nullptr};
  torch::nn::Dropout drop{nullptr};
};

TEST(OnnxExport, UnsupportedLayerIsNamedAndNothingWritten) {
  TempDir dir;
  auto module = std::make_shared<WithDropoutImpl>();
  Model m;
  m.module = module;
  m.spec = {{"model", "with_dropout"}, {"in_features", 784}, {"classes", 10}};
  try {
    export_onnx(m, RunConfig{}, {}, dir / "x.onnx");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'drop'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "x.onnx"));
}

TEST(OnnxExport, CliRefusesMissingOrCorruptCheckpoints) {
  TempDir dir;
  testing::write_bytes(dir / "bad.pt", "DTRAIN-CKPT\n garbage");
  for (const std::string& ckpt : {(dir / "none").string(), (dir / "bad.pt").string()}) {
    CommandResult r = testing::run_command(testing::dtrain_binary() + " export --checkpoint " +
                                               ckpt + " --onnx " + (dir / "out.onnx").string(),
                                           60);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    EXPECT_FALSE(std::filesystem::exists(dir / "out.onnx"));
  }
}

// --- ONNX Runtime against LibTorch -------------------------------------------------------------

std::string ort_dir() {
  const char* d = std::getenv("DTRAIN_ORT_DIR");
  return d != nullptr ? d : "";
}

torch::Tensor read_floats(const std::filesystem::path& path, int64_t rows, int64_t cols) {
  const std::string bytes = testing::read_text(path);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(rows * cols * 4)) << path;
  return torch::from_blob(const_cast<char*>(bytes.data()), {rows, cols}, torch::kFloat).clone();
}

double eval_accuracy(const std::string& model, const std::string& mnist) {
  CommandResult r = testing::run_command(
      testing::dtrain_binary() + " eval --model " + model + " --data-dir " + mnist, 300);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  const auto pos = r.output.find('{');
  return nlohmann::json::parse(r.output.substr(pos, r.output.find('\n', pos) - pos))["accuracy"];
}

void check_against_ort(const std::string& train_flags) {
  const std::string mnist = testing::mnist_dir();
  TempDir out;
  CommandResult t =
      testing::run_command(testing::dtrain_binary() + " train --epochs 1 --data-dir " + mnist +
                               " --output-dir " + out.path().string() + " " + train_flags,
                           600);
  ASSERT_EQ(t.exit_code, 0) << t.output;
  ASSERT_TRUE(std::filesystem::exists(out / "model" / "model.onnx"));
  // Export the checkpoint too: it must give the same file as the end-of-training export.
  CommandResult e = testing::run_command(testing::dtrain_binary() + " export --checkpoint " +
                                             (out / "model").string() + " --onnx " +
                                             (out / "exported.onnx").string(),
                                         120);
  ASSERT_EQ(e.exit_code, 0) << e.output;
  EXPECT_EQ(testing::read_text(out / "exported.onnx"),
            testing::read_text(out / "model" / "model.onnx"));

  // LibTorch's outputs on the whole test set.
  LoadedModel loaded = load_model(out / "model");
  data::MnistDataset test(mnist, data::Split::kTest);
  const int64_t n = test.size();
  Batch all = test.get(torch::arange(n, torch::kLong), torch::kCPU);
  torch::Tensor logits;
  {
    torch::NoGradGuard no_grad;
    loaded.model.module->eval();
    logits = loaded.model.forward(all.inputs);
  }
  testing::write_bytes(out / "inputs.bin",
                       std::string(static_cast<const char*>(all.inputs.data_ptr()), n * 784 * 4));

  CommandResult ort = testing::run_command("env NODE_PATH=" + ort_dir() + "/node_modules node " +
                                               DTRAIN_SOURCE_DIR + "/tests/onnx/ort_run.js " +
                                               (out / "model" / "model.onnx").string() + " " +
                                               (out / "inputs.bin").string() + " " +
                                               std::to_string(n) + " 784 " + (out / "ort").string(),
                                           300);
  ASSERT_EQ(ort.exit_code, 0) << ort.output;
  const torch::Tensor ort_logits = read_floats(out / "ort.logits.bin", n, 10);
  const torch::Tensor ort_probs = read_floats(out / "ort.probabilities.bin", n, 10);

  const auto first = torch::indexing::Slice(0, 1000);
  const double max_diff =
      (ort_logits.index({first}) - logits.index({first})).abs().max().item<double>();
  std::cout << "ONNX Runtime vs LibTorch (" << train_flags
            << "): max |logits diff| over 1000 images " << max_diff << ", over all "
            << (ort_logits - logits).abs().max().item<double>() << std::endl;
  EXPECT_LE(max_diff, 1e-4);
  EXPECT_LE((ort_probs.sum(1) - 1).abs().max().item<double>(), 1e-5);
  EXPECT_TRUE(torch::equal(ort_logits.argmax(1), logits.argmax(1))) << "argmax must agree on all";
  const double ort_acc =
      ort_logits.argmax(1).eq(all.targets).to(torch::kDouble).mean().item<double>();
  EXPECT_DOUBLE_EQ(ort_acc, eval_accuracy((out / "model").string(), mnist));
}

TEST(OnnxRuntime, DefaultModelMatchesLibTorch) {
  DTRAIN_REQUIRE_MNIST(mnist);
  if (ort_dir().empty()) GTEST_SKIP() << "DTRAIN_ORT_DIR not set (ctest sets it)";
  check_against_ort("");
}

TEST(OnnxRuntime, DeeperTanhModelMatchesLibTorch) {
  DTRAIN_REQUIRE_MNIST(mnist);
  if (ort_dir().empty()) GTEST_SKIP() << "DTRAIN_ORT_DIR not set (ctest sets it)";
  check_against_ort("--hidden-sizes 128,64,32 --activation tanh");
}

TEST(OnnxRuntime, DownloadedRegisteredModelReachesTheRecordedAccuracy) {
  DTRAIN_REQUIRE_MNIST(mnist);
  if (ort_dir().empty()) GTEST_SKIP() << "DTRAIN_ORT_DIR not set (ctest sets it)";
  TempDir dir;
  const std::string env = "env -C " + dir.path().string() + " DTRAIN_WORKSPACE=ws ";
  CommandResult t =
      testing::run_command(env + testing::dtrain_binary() + " train --epochs 1 --data-dir " +
                               mnist + " --register-model tf-dnn-mnist",
                           600);
  ASSERT_EQ(t.exit_code, 0) << t.output;
  CommandResult d = testing::run_command(
      env + testing::dtrain_binary() + " model download tf-dnn-mnist --to model", 120);
  ASSERT_EQ(d.exit_code, 0) << d.output;
  CommandResult s =
      testing::run_command(env + testing::dtrain_binary() + " model show tf-dnn-mnist:1 --json");
  ASSERT_EQ(s.exit_code, 0) << s.output;
  const double recorded = nlohmann::json::parse(s.output.substr(s.output.find("\n{") + 1))
                              .at("metrics")
                              .at("validation_acc");

  data::MnistDataset test(mnist, data::Split::kTest);
  const int64_t n = test.size();
  Batch all = test.get(torch::arange(n, torch::kLong), torch::kCPU);
  testing::write_bytes(dir / "inputs.bin",
                       std::string(static_cast<const char*>(all.inputs.data_ptr()), n * 784 * 4));
  CommandResult ort = testing::run_command("env NODE_PATH=" + ort_dir() + "/node_modules node " +
                                               DTRAIN_SOURCE_DIR + "/tests/onnx/ort_run.js " +
                                               (dir / "model" / "model.onnx").string() + " " +
                                               (dir / "inputs.bin").string() + " " +
                                               std::to_string(n) + " 784 " + (dir / "ort").string(),
                                           300);
  ASSERT_EQ(ort.exit_code, 0) << ort.output;
  const double ort_acc = read_floats(dir / "ort.logits.bin", n, 10)
                             .argmax(1)
                             .eq(all.targets)
                             .to(torch::kDouble)
                             .mean()
                             .item<double>();
  std::cout << "ONNX Runtime on the downloaded model: accuracy " << ort_acc << ", registry says "
            << recorded << std::endl;
  EXPECT_NEAR(ort_acc, recorded, 1e-9);
}

}  // namespace
}  // namespace dtrain::models
