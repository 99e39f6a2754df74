#include "models/onnx_export.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/linear.h>

#include "core/errors.h"
#include "core/file_util.h"
#include "dtrain/config.h"

namespace dtrain::models {

namespace {

void add_initializer(onnx::GraphProto& graph, const std::string& name, const torch::Tensor& t,
                     std::string& all_weights) {
  torch::Tensor c = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  auto* init = graph.add_initializer();
  init->set_name(name);
  init->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : c.sizes()) init->add_dims(d);
  const std::string bytes(static_cast<const char*>(c.data_ptr()), c.numel() * sizeof(float));
  init->set_raw_data(bytes);  // little-endian float32, as ONNX specifies
  all_weights += bytes;
}

void set_tensor_type(onnx::ValueInfoProto* v, const std::string& name, int64_t features) {
  v->set_name(name);
  auto* tensor = v->mutable_type()->mutable_tensor_type();
  tensor->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  shape->add_dim()->set_dim_value(features);
}

onnx::NodeProto* add_node(onnx::GraphProto& graph, const std::string& op, const std::string& name,
                          std::vector<std::string> inputs, const std::string& output) {
  auto* node = graph.add_node();
  node->set_op_type(op);
  node->set_name(name);
  for (const auto& in : inputs) node->add_input(in);
  node->add_output(output);
  return node;
}

void add_metadata(onnx::ModelProto& m, const std::string& key, const std::string& value) {
  auto* p = m.add_metadata_props();
  p->set_key(key);
  p->set_value(value);
}

}  // namespace

void export_onnx(const Model& model, const RunConfig& config, const nlohmann::json& metrics,
                 const std::filesystem::path& path) {
  const int64_t features = model.spec.value("in_features", int64_t{784});
  const int64_t classes = model.spec.value("classes", int64_t{10});

  onnx::ModelProto proto;
  proto.set_ir_version(onnx::IR_VERSION);
  proto.set_producer_name("dtrain");
  proto.set_producer_version(DTRAIN_VERSION);
  proto.set_model_version(1);
  auto* opset = proto.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOnnxOpset);

  onnx::GraphProto& graph = *proto.mutable_graph();
  graph.set_name("dtrain_" + config.model);
  set_tensor_type(graph.add_input(), "input", features);

  std::string weights;
  std::string current = "input";
  int64_t width = features;
  const auto children = model.module->named_children();
  if (children.is_empty()) {
    throw ConfigError("ONNX export: model '" + config.model + "' has no layers to export");
  }
  for (const auto& child : children) {
    const std::string& name = child.key();
    const std::string out = name + "_out";
    if (const auto* linear = child.value()->as<torch::nn::Linear>()) {
      if (linear->options.in_features() != width) {
        throw ConfigError("ONNX export: layer '" + name + "' expects " +
                          std::to_string(linear->options.in_features()) +
                          " inputs but follows a layer of width " + std::to_string(width));
      }
      add_initializer(graph, name + ".weight", linear->weight, weights);
      std::vector<std::string> inputs = {current, name + ".weight"};
      if (linear->options.bias()) {
        add_initializer(graph, name + ".bias", linear->bias, weights);
        inputs.push_back(name + ".bias");
      }
      auto* node = add_node(graph, "Gemm", name, inputs, out);
      auto* trans_b = node->add_attribute();  // y = x W^T + b
      trans_b->set_name("transB");
      trans_b->set_type(onnx::AttributeProto::INT);
      trans_b->set_i(1);
      width = linear->options.out_features();
    } else if (child.value()->as<torch::nn::ReLU>() != nullptr) {
      add_node(graph, "Relu", name, {current}, out);
    } else if (child.value()->as<torch::nn::Tanh>() != nullptr) {
      add_node(graph, "Tanh", name, {current}, out);
    } else if (child.value()->as<torch::nn::Sigmoid>() != nullptr) {
      add_node(graph, "Sigmoid", name, {current}, out);
    } else {
      throw ConfigError("ONNX export: layer '" + name + "' (" + child.value()->name() +
                        ") has no ONNX mapping in dtrain; supported: Linear, ReLU, Tanh, Sigmoid");
    }
    current = out;
  }
  if (width != classes) {
    throw ConfigError("ONNX export: the last layer has width " + std::to_string(width) +
                      " but the model has " + std::to_string(classes) + " classes");
  }
  add_node(graph, "Identity", "logits", {current}, "logits");
  auto* softmax = add_node(graph, "Softmax", "probabilities", {"logits"}, "probabilities");
  auto* axis = softmax->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(1);
  set_tensor_type(graph.add_output(), "logits", classes);
  set_tensor_type(graph.add_output(), "probabilities", classes);

  add_metadata(proto, "producer", "dtrain");
  add_metadata(proto, "dtrain_version", DTRAIN_VERSION);
  add_metadata(proto, "training_config", config.to_json().dump());
  add_metadata(proto, "architecture", model.spec.dump());
  add_metadata(proto, "final_validation_accuracy",
               metrics.contains("final_acc") ? metrics["final_acc"].dump() : "null");
  add_metadata(proto, "weights_sha256", sha256_hex(weights));
  add_metadata(proto, "input_scaling", "pixel / 255 (float32 in [0, 1])");

  try {
    onnx::checker::check_model(proto);
    onnx::ShapeInferenceOptions options{/*check_type=*/true, /*error_mode=*/1};
    onnx::ModelProto inferred = proto;
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    throw Error("ONNX export: the built graph failed validation: " + std::string(e.what()));
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) throw IoError("ONNX export: serialization failed");
  write_file_atomic(path, bytes);
}

}  // namespace dtrain::models
