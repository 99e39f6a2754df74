// ONNX export: the model's layers as an ONNX graph, its weights as named initializers.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/model.h"
#include "core/run_config.h"

namespace dtrain::models {

/// The ONNX opset dtrain writes.
constexpr int kOnnxOpset = 13;

/// Builds the ONNX model of `model` (walking its children in forward order: Linear -> Gemm,
/// ReLU/Tanh/Sigmoid -> the same ops), checks it with onnx::checker and shape inference, and
/// writes it atomically to `path`. Input `input` float32 [batch, features]; outputs `logits`
/// [batch, classes] and `probabilities` (Softmax). Metadata: producer, dtrain version, training
/// config, final validation accuracy, SHA-256 of the weights. An unsupported layer throws
/// ConfigError naming it; nothing is written on any error.
void export_onnx(const Model& model, const RunConfig& config, const nlohmann::json& metrics,
                 const std::filesystem::path& path);

}  // namespace dtrain::models
