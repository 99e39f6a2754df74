#include "models/mlp.h"

#include <torch/nn/modules/activation.h>

#include <algorithm>
#include <cmath>

#include "core/blas.h"
#include "core/errors.h"
#include "core/thread_team.h"

namespace dtrain::models {

namespace {

enum class Activation { kRelu, kTanh, kSigmoid };

/// --activation's value (checked by reset()).
Activation activation_kind(const std::string& act) {
  if (act == "relu") return Activation::kRelu;
  return act == "tanh" ? Activation::kTanh : Activation::kSigmoid;
}

/// x = activation(x), in place.
void activate(torch::Tensor& x, Activation act) {
  if (act == Activation::kRelu) {
    x.relu_();
  } else if (act == Activation::kTanh) {
    x.tanh_();
  } else {
    x.sigmoid_();
  }
}

/// g *= activation'(a), from the activation's output a.
void times_activation_derivative(torch::Tensor& g, const torch::Tensor& a, Activation act) {
  if (act == Activation::kRelu) {
    g.masked_fill_(a.le(0), 0);  // as autograd's threshold_backward
  } else if (act == Activation::kTanh) {
    g.mul_(1 - a * a);
  } else {
    g.mul_(a * (1 - a));
  }
}

// The loops below are written so that GCC vectorises them (no branches, __restrict): as scalar
// code with a branch on the sign, the relu derivative alone took ~25 us a step.

/// Rows [0, rows) of a transposed layer output ([outputs x batch]) at out: adds each row's bias,
/// then applies the activation (NaN stays NaN, as LibTorch's relu keeps it).
void add_bias_and_activate(float* __restrict out, const float* __restrict bias, int64_t rows,
                           int64_t batch, Activation act) {
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict row = out + r * batch;
    const float b = bias[r];
    if (act == Activation::kRelu) {
      for (int64_t i = 0; i < batch; ++i) {
        const float v = row[i] + b;
        row[i] = v < 0.0f ? 0.0f : v;
      }
    } else {
      for (int64_t i = 0; i < batch; ++i) row[i] += b;
    }
  }
  if (act != Activation::kRelu) {  // LibTorch's vectorised tanh and sigmoid, on the whole block
    torch::Tensor block = torch::from_blob(out, {rows * batch}, torch::kFloat32);
    activate(block, act);
  }
}

/// g[i] *= activation'(a[i]) for i < n, from the activation's output a. For relu a select, as
/// LibTorch's autograd does it (threshold_backward): 0 where a <= 0, else the gradient (so a NaN
/// output passes its gradient on).
void times_activation_derivative(float* __restrict g, const float* __restrict a, int64_t n,
                                 Activation act) {
  if (act == Activation::kRelu) {
    for (int64_t i = 0; i < n; ++i) g[i] = a[i] <= 0.0f ? 0.0f : g[i];
  } else if (act == Activation::kTanh) {
    for (int64_t i = 0; i < n; ++i) g[i] *= 1.0f - a[i] * a[i];
  } else {
    for (int64_t i = 0; i < n; ++i) g[i] *= a[i] * (1.0f - a[i]);
  }
}

/// dst row b = source row rows[b] (b itself without `rows`) * scale, for `count` rows of
/// `features`. Gathered rows are prefetched a few ahead: random rows of a data set larger than
/// the cache otherwise wait on memory one after another (~0.3 us a row here).
template <typename T>
void convert_rows(const T* from, const int64_t* rows, int64_t count, int64_t features, float scale,
                  float* to) {
  constexpr int64_t kAhead = 4;
  const auto prefetch = [&](int64_t b) {
    const char* row = reinterpret_cast<const char*>(from + rows[b] * features);
    for (size_t o = 0; o < static_cast<size_t>(features) * sizeof(T); o += 64) {
      __builtin_prefetch(row + o);
    }
  };
  if (rows != nullptr) {
    for (int64_t b = 0; b < std::min(kAhead, count); ++b) prefetch(b);
  }
  for (int64_t b = 0; b < count; ++b) {
    if (rows != nullptr && b + kAhead < count) prefetch(b + kAhead);
    const T* __restrict src = from + (rows != nullptr ? rows[b] : b) * features;
    float* __restrict dst = to + b * features;
    for (int64_t i = 0; i < features; ++i) dst[i] = static_cast<float>(src[i]) * scale;
  }
}

}  // namespace

MlpImpl::MlpImpl(MlpOptions options_) : options(std::move(options_)) { reset(); }

void MlpImpl::reset() {
  const auto& act = options.activation();
  if (act != "relu" && act != "tanh" && act != "sigmoid") {
    throw ConfigError("--activation: expected relu, tanh or sigmoid, got " + act);
  }
  linears_.clear();
  activations_.clear();
  int64_t in = options.in_features();
  for (size_t i = 0; i <= options.hidden().size(); ++i) {
    const bool last = i == options.hidden().size();
    const int64_t out = last ? options.classes() : options.hidden()[i];
    linears_.push_back(register_module("fc" + std::to_string(i + 1), torch::nn::Linear(in, out)));
    if (!last) {
      const std::string name = "act" + std::to_string(i + 1);
      if (act == "relu") {
        activations_.push_back(
            register_module(name, torch::nn::ReLU(torch::nn::ReLUOptions(true))));
      } else if (act == "tanh") {
        activations_.push_back(register_module(name, torch::nn::Tanh()));
      } else {
        activations_.push_back(register_module(name, torch::nn::Sigmoid()));
      }
    }
    in = out;
  }
}

torch::Tensor MlpImpl::forward(const torch::Tensor& input) {
  torch::Tensor x = input;
  const Activation act = activation_kind(options.activation());
  for (size_t i = 0; i < linears_.size(); ++i) {
    x = linears_[i]->forward(x);
    if (i + 1 < linears_.size()) activate(x, act);  // in place: Linear's backward keeps no output
  }
  return x;
}

std::pair<torch::Tensor, torch::Tensor> MlpImpl::train_step(
    const torch::Tensor& input, const torch::Tensor& targets, double loss_scale, bool accumulate,
    const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  TORCH_CHECK(grads.empty() || grads.size() == 2 * linears_.size(),
              "train_step: expected one gradient tensor per parameter");
  const Activation act = activation_kind(options.activation());
  // Forward, keeping each layer's input (post-activation) for the backward pass.
  std::vector<torch::Tensor> inputs;
  inputs.reserve(linears_.size());
  torch::Tensor x = input;
  for (size_t i = 0; i < linears_.size(); ++i) {
    inputs.push_back(x);
    x = torch::addmm(linears_[i]->bias, x, linears_[i]->weight.t());
    if (i + 1 < linears_.size()) activate(x, act);
  }
  const torch::Tensor logits = x;
  const torch::Tensor log_probs = torch::log_softmax(logits, 1);
  const torch::Tensor loss = torch::nll_loss(log_probs, targets);

  // d(mean CE)/d(logits) = (softmax - onehot) / batch.
  torch::Tensor g = log_probs.exp();
  g.scatter_add_(1, targets.unsqueeze(1), torch::full({targets.size(0), 1}, -1.0, g.options()));
  g.mul_(loss_scale / static_cast<double>(targets.size(0)));

  auto write = [&](size_t index, torch::Tensor& param, const auto& compute_into,
                   const auto& add_into) {
    torch::Tensor own = grads.empty() ? torch::Tensor() : grads[index];
    torch::Tensor& grad = grads.empty() ? param.mutable_grad() : own;
    if (!grad.defined()) {
      grad = torch::zeros_like(param);
      add_into(grad);
    } else if (accumulate) {
      add_into(grad);
    } else {
      compute_into(grad);
    }
  };
  for (size_t i = linears_.size(); i-- > 0;) {
    auto& lin = linears_[i];
    const torch::Tensor& a = inputs[i];
    write(
        2 * i, lin->weight, [&](torch::Tensor& w) { at::mm_out(w, g.t(), a); },
        [&](torch::Tensor& w) { w.addmm_(g.t(), a); });
    write(
        2 * i + 1, lin->bias, [&](torch::Tensor& b) { at::sum_out(b, g, {0}); },
        [&](torch::Tensor& b) { b.add_(g.sum(0)); });
    if (i == 0) break;
    g = g.mm(lin->weight);
    times_activation_derivative(g, a, act);  // from its output a = inputs[i]
  }
  return {loss, logits};
}

std::pair<torch::Tensor, torch::Tensor> MlpImpl::train_step_team(
    const torch::Tensor& stored, const torch::Tensor& rows, double input_scale,
    const torch::Tensor& targets, double loss_scale, bool accumulate, ThreadTeam& team,
    const MemberStep& then) {
  torch::NoGradGuard no_grad;
  const size_t layers = linears_.size();
  const size_t last = layers - 1;
  const int members = team.size();
  const int64_t classes = linears_[last]->weight.size(0);
  const auto in_of = [&](size_t l) { return linears_[l]->weight.size(1); };
  const auto out_of = [&](size_t l) { return linears_[l]->weight.size(0); };
  // Rows of pixels or floats are gathered by the members; other types here, once.
  const bool gather = rows.defined() && (stored.scalar_type() == torch::kUInt8 ||
                                         stored.scalar_type() == torch::kFloat32);
  const torch::Tensor input = rows.defined() && !gather ? stored.index_select(0, rows) : stored;
  const bool pixels = input.scalar_type() == torch::kUInt8;
  const torch::Tensor x = pixels ? input.contiguous() : input.to(torch::kFloat32).contiguous();
  TORCH_CHECK(x.dim() == 2 && x.device().is_cpu() && x.size(1) == in_of(0),
              "train_step_team: expected CPU inputs of [batch, ", in_of(0), "], got ", x.sizes(),
              " on ", x.device());
  const torch::Tensor row_index = gather ? rows.contiguous() : torch::Tensor();
  if (gather) {
    TORCH_CHECK(row_index.dim() == 1 && row_index.scalar_type() == torch::kLong &&
                    row_index.device().is_cpu(),
                "train_step_team: expected rows as a 1-D int64 CPU tensor, got ", rows.sizes(), " ",
                rows.dtype());
    const int64_t* r = row_index.data_ptr<int64_t>();
    for (int64_t b = 0; b < row_index.size(0); ++b) {
      TORCH_CHECK(r[b] >= 0 && r[b] < x.size(0), "train_step_team: row ", r[b], " of sample ", b,
                  " is outside the inputs' 0..", x.size(0) - 1);
    }
  }
  const int64_t* gathered = gather ? row_index.data_ptr<int64_t>() : nullptr;
  // Members scale (and convert, and gather) the inputs into buffers of their own unless they can
  // be used as they are.
  const bool own_inputs = pixels || input_scale != 1.0 || gather;
  const int64_t batch = gather ? row_index.size(0) : x.size(0);
  const torch::Tensor y = targets.contiguous();
  TORCH_CHECK(y.dim() == 1 && y.size(0) == batch && y.scalar_type() == torch::kLong,
              "train_step_team: expected ", batch, " int64 targets, got ", y.sizes(), " ",
              y.dtype());
  const int64_t* labels = y.data_ptr<int64_t>();
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(labels[b] >= 0 && labels[b] < classes, "train_step_team: target ", labels[b],
                " of sample ", b, " is outside 0..", classes - 1);
  }
  std::vector<const float*> w(layers), bias(layers);
  std::vector<float*> gw(layers), gb(layers);
  for (size_t l = 0; l < layers; ++l) {
    auto& lin = linears_[l];
    for (const torch::Tensor& t : {lin->weight, lin->bias, lin->weight.grad(), lin->bias.grad()}) {
      TORCH_CHECK(t.defined() && t.scalar_type() == torch::kFloat32 && t.device().is_cpu() &&
                      t.is_contiguous(),
                  "train_step_team: fc", l + 1,
                  "'s parameters and their gradients must exist as contiguous float32 CPU tensors");
    }
    w[l] = lin->weight.data_ptr<float>();
    bias[l] = lin->bias.data_ptr<float>();
    gw[l] = lin->weight.mutable_grad().data_ptr<float>();
    gb[l] = lin->bias.mutable_grad().data_ptr<float>();
  }

  // Buffers grow to the largest batch seen and stay (allocated here, before the team runs).
  TeamBuffers& buf = team_buffers_;
  const auto room = [](std::vector<float>& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  buf.inputs.resize(own_inputs ? static_cast<size_t>(members) : 0);
  for (auto& copy : buf.inputs) room(copy, batch * in_of(0));
  buf.outputs.resize(last);
  buf.parts.resize(last);
  buf.logits.resize(static_cast<size_t>(members));
  buf.grad.resize(static_cast<size_t>(members));
  int64_t widest = 0;
  for (size_t l = 0; l < last; ++l) {
    room(buf.outputs[l], out_of(l) * batch);
    widest = std::max(widest, out_of(l));
    buf.parts[l].resize(l == 0 ? 0 : static_cast<size_t>(members));
    for (auto& part : buf.parts[l]) room(part, in_of(l) * batch);
  }
  for (int k = 0; k < members; ++k) {
    room(buf.logits[static_cast<size_t>(k)], batch * classes);
    room(buf.grad[static_cast<size_t>(k)], widest * batch);
  }
  // Layer l's input as a GEMM operand for member k: the inputs ([batch x in]) for layer 0,
  // otherwise the previous layer's output, stored transposed ([in x batch]).
  const auto input_of = [&](size_t l, int k) -> const float* {
    if (l > 0) return buf.outputs[l - 1].data();
    return own_inputs ? buf.inputs[static_cast<size_t>(k)].data() : x.data_ptr<float>();
  };
  const auto input_ld = [&](size_t l) { return l == 0 ? in_of(0) : batch; };
  const Activation act = activation_kind(options.activation());
  const float scale = static_cast<float>(loss_scale / static_cast<double>(batch));
  double loss = 0.0;
  int64_t correct = 0;

  const auto member_work = [&](int k) {
    if (own_inputs) {
      float* to = buf.inputs[static_cast<size_t>(k)].data();
      const float s = static_cast<float>(input_scale);
      const int64_t features = in_of(0);
      if (pixels) {
        convert_rows(x.data_ptr<uint8_t>(), gathered, batch, features, s, to);
      } else {
        convert_rows(x.data_ptr<float>(), gathered, batch, features, s, to);
      }
    }
    // Forward through the hidden layers: this member's rows of each output (pre-activation rows
    // [r0, r1) = W[r0:r1] input^T), then wait for the others'.
    for (size_t l = 0; l < last; ++l) {
      const auto [r0, r1] = block_of(out_of(l), k, members);
      float* out = buf.outputs[l].data() + r0 * batch;
      if (r1 > r0) {
        sgemm(false, l == 0, r1 - r0, batch, in_of(l), w[l] + r0 * in_of(l), in_of(l),
              input_of(l, k), input_ld(l), 0.0f, out, batch);
        add_bias_and_activate(out, bias[l] + r0, r1 - r0, batch, act);
      }
      team.barrier();
    }
    // The last layer whole, on every member: logits, log-softmax, and
    // d(mean CE)/d(logits) = (softmax - onehot) * loss_scale / batch, in place.
    float* z = buf.logits[static_cast<size_t>(k)].data();
    sgemm(last > 0, true, batch, classes, in_of(last), input_of(last, k), input_ld(last), w[last],
          in_of(last), 0.0f, z, classes);
    double loss_sum = 0.0;
    for (int64_t b = 0; b < batch; ++b) {
      float* row = z + b * classes;
      float top = row[0] + bias[last][0];
      for (int64_t c = 0; c < classes; ++c) {
        row[c] += bias[last][c];
        if (!(row[c] <= top)) top = row[c];  // NaN wins, so it reaches the loss and gradients
      }
      if (k == 0) {
        loss_sum -= static_cast<double>(row[labels[b]] - top);
        // The prediction as argmax gives it: the first of the largest, or the first NaN.
        int64_t best = 0;
        for (int64_t c = 1; c < classes; ++c) {
          if (!std::isnan(row[best]) && (std::isnan(row[c]) || row[c] > row[best])) best = c;
        }
        correct += best == labels[b] ? 1 : 0;
      }
      double sum = 0.0;
      for (int64_t c = 0; c < classes; ++c) {
        row[c] = std::exp(row[c] - top);  // in (0, 1]: the softmax times sum
        sum += row[c];
      }
      if (k == 0) loss_sum += std::log(sum);
      for (int64_t c = 0; c < classes; ++c) {
        const float p = static_cast<float>(row[c] / sum);
        row[c] = (c == labels[b] ? p - 1.0f : p) * scale;
      }
    }
    if (k == 0) loss = loss_sum / static_cast<double>(batch);
    const float beta = accumulate ? 1.0f : 0.0f;
    // This member's rows of the last layer's gradients: dW[r0:r1] = dz[:, r0:r1]^T input.
    const auto [c0, c1] = block_of(classes, k, members);
    sgemm(true, last > 0, c1 - c0, in_of(last), batch, z + c0, classes, input_of(last, k),
          input_ld(last), beta, gw[last] + c0 * in_of(last), in_of(last));
    for (int64_t c = c0; c < c1; ++c) {
      float sum = 0.0f;
      for (int64_t b = 0; b < batch; ++b) sum += z[b * classes + c];
      gb[last][c] = accumulate ? gb[last][c] + sum : sum;
    }
    if (last == 0) return;
    // d/d(this member's rows of the previous layer's output) = W[:, p0:p1]^T dz^T, needing no
    // other member's work: dz is whole here.
    float* g = buf.grad[static_cast<size_t>(k)].data();
    {
      const auto [p0, p1] = block_of(in_of(last), k, members);
      sgemm(true, true, p1 - p0, batch, classes, w[last] + p0, in_of(last), z, classes, 0.0f, g,
            batch);
      times_activation_derivative(g, buf.outputs[last - 1].data() + p0 * batch, (p1 - p0) * batch,
                                  act);
    }
    // The hidden layers backwards; g holds d/d(this member's rows r0..r1 of layer l's output).
    for (size_t l = last; l-- > 0;) {
      const auto [r0, r1] = block_of(out_of(l), k, members);
      const int64_t n = r1 - r0;
      const int64_t in = in_of(l);
      if (n > 0) {
        sgemm(false, l > 0, n, in, batch, g, batch, input_of(l, k), input_ld(l), beta,
              gw[l] + r0 * in, in);
        for (int64_t r = 0; r < n; ++r) {
          float sum = 0.0f;
          for (int64_t b = 0; b < batch; ++b) sum += g[r * batch + b];
          gb[l][r0 + r] = accumulate ? gb[l][r0 + r] + sum : sum;
        }
      }
      if (l == 0) break;
      // This member's part of d/d(input)^T = W[r0:r1]^T g; the others' parts are added below.
      float* part = buf.parts[l][static_cast<size_t>(k)].data();
      if (n > 0) {
        sgemm(true, false, in, batch, n, w[l] + r0 * in, in, g, batch, 0.0f, part, batch);
      } else {
        std::fill(part, part + in * batch, 0.0f);
      }
      team.barrier();
      // This member's rows of the previous layer's output gradient: the parts summed in member
      // order (g is free again: its last reader was the GEMM above).
      const auto [p0, p1] = block_of(in, k, members);
      const int64_t count = (p1 - p0) * batch;
      float* __restrict sum = g;
      std::copy_n(buf.parts[l][0].data() + p0 * batch, count, sum);
      for (int j = 1; j < members; ++j) {
        const float* __restrict part_j = buf.parts[l][static_cast<size_t>(j)].data() + p0 * batch;
        for (int64_t i = 0; i < count; ++i) sum[i] += part_j[i];
      }
      times_activation_derivative(g, buf.outputs[l - 1].data() + p0 * batch, (p1 - p0) * batch,
                                  act);
    }
  };
  team.run([&](int k) {
    member_work(k);
    if (!then) return;
    // Member k has written its rows of every gradient. Every member reads all of the last
    // layer's weights, the others only its own rows: the backward pass's first barrier (after
    // layer last - 1's input gradient) ends the shared reads; with fewer than two hidden layers
    // there is no such barrier.
    if (last < 2) team.barrier();
    then(k, members);
  });
  return {torch::scalar_tensor(loss, torch::kFloat32), torch::scalar_tensor(correct, torch::kLong)};
}

void MlpImpl::pretty_print(std::ostream& stream) const {
  stream << "dtrain::Mlp(" << options.in_features();
  for (int64_t h : options.hidden()) stream << "-" << h;
  stream << "-" << options.classes() << ", " << options.activation() << ")";
}

}  // namespace dtrain::models
