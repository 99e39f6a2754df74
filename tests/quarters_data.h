// A small learnable data set for Trainer tests: 8x8 images whose class (0-3) is the quarter that
// is brightest.
#pragma once

#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <string>

#include "data/mnist.h"

namespace dtrain::testing {

inline data::MnistDataset quarters_dataset(int64_t n, uint64_t seed,
                                           const std::string& name = "quarters") {
  torch::manual_seed(seed);
  auto labels = torch::randint(0, 4, {n}, torch::kLong);
  auto images = torch::randint(0, 60, {n, 8, 8}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t q = labels[i].item<int64_t>();
    images[i].slice(0, (q / 2) * 4, (q / 2) * 4 + 4).slice(1, (q % 2) * 4, (q % 2) * 4 + 4) += 150;
  }
  return data::MnistDataset(images.to(torch::kUInt8), labels.to(torch::kUInt8), name);
}

}  // namespace dtrain::testing
