// Helpers for tests that run dtrain and inspect outputs/: synthetic MNIST files, the trained
// weights, the metrics lines.
#pragma once

#include <torch/nn/module.h>
#include <torch/utils.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "data/idx.h"
#include "models/model_io.h"
#include "test_util.h"

namespace dtrain::testing {

/// Random MNIST-shaped IDX files (28x28 uint8 images, labels 0-9) in `dir`.
inline void write_synthetic_mnist(const std::filesystem::path& dir, int64_t train, int64_t test,
                                  uint64_t seed) {
  torch::manual_seed(seed);
  for (auto [prefix, n] : {std::pair<std::string, int64_t>{"train", train}, {"t10k", test}}) {
    auto images = torch::randint(0, 256, {n, 28, 28}, torch::kLong).to(torch::kUInt8);
    auto labels = torch::randint(0, 10, {n}, torch::kLong).to(torch::kUInt8);
    write_bytes(dir / (prefix + "-images-idx3-ubyte"), data::encode_idx(images));
    write_bytes(dir / (prefix + "-labels-idx1-ubyte"), data::encode_idx(labels));
  }
}

/// All parameters of the model in `model_dir`, flattened and concatenated.
inline torch::Tensor model_weights(const std::filesystem::path& model_dir) {
  auto loaded = models::load_model(model_dir);
  std::vector<torch::Tensor> parts;
  for (auto& p : loaded.model.module->parameters()) parts.push_back(p.detach().flatten());
  return torch::cat(parts);
}

inline std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(path));
  for (std::string line; std::getline(in, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

/// The last epoch's line of <out>/metrics.jsonl.
inline nlohmann::json last_metrics(const std::filesystem::path& out) {
  return read_jsonl(out / "metrics.jsonl").back();
}

}  // namespace dtrain::testing
