#include "core/sharded_step.h"

#include <torch/nn/module.h>

#include <algorithm>

namespace dtrain {

namespace {

/// A flat buffer for every parameter, and per-parameter views into it.
std::vector<torch::Tensor> views_into(const torch::Tensor& flat,
                                      const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> views;
  int64_t offset = 0;
  for (const auto& p : params) {
    views.push_back(flat.narrow(0, offset, p.numel()).view(p.sizes()));
    offset += p.numel();
  }
  return views;
}

}  // namespace

ShardedStep::ShardedStep(const Model& model, int shards)
    : model_(model), shards_(std::max(1, shards)), params_(model.module->parameters()) {
  if (params_.empty()) return;
  if (shards_ == 1) {
    // A team of one for Model::team_step, which writes into gradients that exist.
    if (!model_.team_step) return;
    team_ = std::make_unique<ThreadTeam>(1);
    for (auto& p : params_) {
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p).requires_grad_(false);
    }
    return;
  }
  team_ = std::make_unique<ThreadTeam>(shards_);
  int64_t total = 0;
  for (const auto& p : params_) total += p.numel();
  // The views keep the flat buffers alive.
  const torch::Tensor flat_grad =
      torch::zeros({total}, params_.front().options().requires_grad(false));
  const std::vector<torch::Tensor> grads = views_into(flat_grad, params_);
  for (size_t i = 0; i < params_.size(); ++i) params_[i].mutable_grad() = grads[i];
  if (model_.team_step) return;  // the members split the layers, not the batch
  for (int k = 1; k < shards_; ++k) {
    shard_grads_.push_back(views_into(torch::zeros_like(flat_grad), params_));
  }
}

std::pair<torch::Tensor, torch::Tensor> ShardedStep::run(const Batch& batch, double loss_scale,
                                                         bool accumulate, const MemberStep& then) {
  const int64_t rows = batch.size();
  const int64_t n = std::min<int64_t>(shards_, rows);
  if (model_.team_step && team_ && rows > 0 && batch.inputs.device().is_cpu()) {
    return model_.team_step(batch, loss_scale, accumulate, *team_, then);
  }
  const torch::Tensor inputs = batch.float_inputs();
  if (n <= 1) {
    auto [loss, logits] = model_.train_step(inputs, batch.targets, loss_scale, accumulate, {});
    if (then) then(0, 1);
    torch::NoGradGuard no_grad;
    return {loss, logits.argmax(1).eq(batch.targets).sum()};
  }
  std::vector<torch::Tensor> loss_sums(n), corrects(n);
  team_->run([&](int k) {
    if (k < n) {
      const auto [lo, hi] = block_of(rows, k, static_cast<int>(n));
      const torch::Tensor x = inputs.narrow(0, lo, hi - lo);
      const torch::Tensor y = batch.targets.narrow(0, lo, hi - lo);
      // Each shard's mean loss, weighted by its share of the batch, sums to the batch mean.
      const double share = static_cast<double>(hi - lo) / static_cast<double>(rows);
      auto [loss, logits] =
          k == 0 ? model_.train_step(x, y, loss_scale * share, accumulate, {})
                 : model_.train_step(x, y, loss_scale * share, false, shard_grads_[k - 1]);
      loss_sums[k] = loss * static_cast<double>(hi - lo);
      corrects[k] = logits.argmax(1).eq(y).sum();
    }
  });
  // Shard 0 wrote into the parameters' grads; add the others in shard order, each member the
  // element ranges the optimizer gives it too (an element's sum is the same whichever member
  // computes it).
  team_->run([&](int k) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto [begin, end] = member_rows(params_[i], k, team_->size());
      torch::Tensor into = params_[i].grad().view(-1).narrow(0, begin, end - begin);
      for (int64_t s = 1; s < n; ++s) {
        into.add_(shard_grads_[s - 1][i].view(-1).narrow(0, begin, end - begin));
      }
    }
    if (then) then(k, team_->size());  // on the blocks this member has just summed
  });
  torch::NoGradGuard no_grad;
  return {torch::stack(loss_sums).sum() / static_cast<double>(rows), torch::stack(corrects).sum()};
}

torch::Tensor ShardedStep::forward(const torch::Tensor& inputs) {
  const int64_t rows = inputs.size(0);
  const int64_t n = std::min<int64_t>(shards_, rows);
  if (n <= 1) {
    torch::NoGradGuard no_grad;  // as the members run
    return model_.forward(inputs);
  }
  std::vector<torch::Tensor> logits(n);
  team_->run([&](int k) {
    if (k < n) {
      const auto [lo, hi] = block_of(rows, k, static_cast<int>(n));
      logits[k] = model_.forward(inputs.narrow(0, lo, hi - lo));
    }
  });
  return torch::cat(logits);
}

}  // namespace dtrain
