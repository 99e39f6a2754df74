#include "core/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>

#include <chrono>
#include <tuple>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/stop_signal.h"

namespace dtrain {

namespace {

using Clock = std::chrono::steady_clock;

NamedTensors named_parameters(torch::nn::Module& module) {
  NamedTensors out;
  for (auto& p : module.named_parameters(true)) out.emplace_back(p.key(), p.value());
  return out;
}

}  // namespace

Trainer::Trainer(RunConfig config, Model model, torch::Device device, GradientSync* sync)
    : config_(std::move(config)),
      model_(std::move(model)),
      device_(device),
      sync_(sync != nullptr ? sync : &default_sync_) {
  config_.validate();
  model_.module->to(device_);
  optimizer_ = make_optimizer(OptimizerSettings::from(config_), model_.module->parameters());
}

Trainer::~Trainer() = default;

void Trainer::add_sink(std::unique_ptr<MetricsSink> sink) { sinks_.push_back(std::move(sink)); }

CheckpointMeta Trainer::resume(const std::filesystem::path& checkpoint) {
  const auto path = resolve_checkpoint(checkpoint);
  const CheckpointMeta meta = read_checkpoint_meta(path);
  if (meta.model != model_.spec) {
    throw CheckpointError(path.string() + ": checkpoint is of model " + meta.model.dump() +
                          " but this run builds " + model_.spec.dump());
  }
  if (meta.optimizer != config_.optimizer) {
    throw CheckpointError(path.string() + ": checkpoint holds '" + meta.optimizer +
                          "' optimizer state but this run uses --optimizer " + config_.optimizer);
  }
  load_checkpoint(path, *model_.module, optimizer_.get(), /*restore_rng=*/true);
  epochs_done_ = meta.epoch;
  history_ = meta.history;
  if (static_cast<int64_t>(history_.size()) > epochs_done_) history_.resize(epochs_done_);
  if (is_writer()) {
    spdlog::info("resumed from {} after epoch {}", path.string(), epochs_done_);
  }
  return meta;
}

std::filesystem::path Trainer::save_checkpoint() const {
  CheckpointMeta meta;
  meta.epoch = epochs_done_;
  meta.config = config_.to_json();
  meta.model = model_.spec;
  meta.optimizer = config_.optimizer;
  meta.history = history_;
  meta.extra = checkpoint_extra_;
  const auto path = std::filesystem::path(config_.output_dir) / "checkpoints" /
                    checkpoint_file_name(epochs_done_);
  dtrain::save_checkpoint(path, *model_.module, optimizer_.get(), meta);
  return path;
}

void Trainer::report_step(const torch::Tensor& batch_loss, const torch::Tensor& loss_sum,
                          int64_t samples, int64_t epoch, int64_t step, int64_t steps_in_epoch,
                          int64_t global_step, double elapsed) {
  std::vector<MetricsSink*> wanting;
  for (auto& sink : sinks_) {
    if (sink->wants_step(global_step)) wanting.push_back(sink.get());
  }
  if (wanting.empty()) return;
  StepProgress p;
  p.epoch = epoch;
  p.step = step;
  p.steps_in_epoch = steps_in_epoch;
  p.global_step = global_step;
  p.samples = samples;
  p.batch_loss = batch_loss.detach().item<double>();
  p.running_loss = samples > 0 ? loss_sum.item<double>() / static_cast<double>(samples) : 0;
  p.elapsed_seconds = elapsed;
  for (auto* sink : wanting) sink->on_step(p);
}

EvalResult Trainer::evaluate(const BatchSource& data, const Sampler& sampler) {
  torch::NoGradGuard no_grad;
  model_.module->eval();
  torch::Tensor loss_sum =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  torch::Tensor correct =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device_));
  int64_t samples = 0;
  for (const auto& indices : sampler.batches(0)) {
    Batch b = data.get(indices, device_);
    auto logits = model_.forward(b.inputs);
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, b.targets,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kDouble);
    correct += logits.argmax(1).eq(b.targets).sum();
    samples += b.targets.size(0);
  }
  auto totals = sync_->sum({loss_sum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                            static_cast<double>(samples)});
  EvalResult r;
  r.samples = static_cast<int64_t>(totals[2]);
  if (r.samples > 0) {
    r.loss = totals[0] / totals[2];
    r.accuracy = totals[1] / totals[2];
  }
  return r;
}

std::vector<EpochMetrics> Trainer::fit(const BatchSource& train, const Sampler& train_sampler,
                                       const BatchSource& validation,
                                       const Sampler& validation_sampler) {
  const NamedTensors params = named_parameters(*model_.module);
  nlohmann::json shared = config_.shared_json();
  shared["model"] = model_.spec;
  shared["resumed_after_epoch"] = epochs_done_;
  for (const auto& [name, p] : params) shared["parameters"][name] = p.sizes().vec();
  sync_->check_consistent(shared);
  sync_->broadcast_state(params, *optimizer_);
  NamedTensors grads(params.size());
  const int64_t accumulate = sync_->backward_passes_per_step();
  int64_t global_step = 0;
  for (const auto& m : history_) global_step += m.steps;
  const bool observed = is_writer() && !sinks_.empty();

  for (int64_t epoch = epochs_done_ + 1; epoch <= config_.epochs; ++epoch) {
    const auto start = Clock::now();
    model_.module->train();
    auto opts = torch::TensorOptions().device(device_);
    torch::Tensor loss_sum = torch::zeros({}, opts.dtype(torch::kDouble));
    torch::Tensor correct = torch::zeros({}, opts.dtype(torch::kLong));
    int64_t samples = 0, steps = 0, skipped = 0;
    double sync_seconds = 0;

    const std::vector<torch::Tensor> batches = train_sampler.batches(epoch);
    const auto steps_in_epoch = static_cast<int64_t>(
        (batches.size() + static_cast<size_t>(accumulate) - 1) / static_cast<size_t>(accumulate));
    if (observed) {
      for (auto& sink : sinks_) sink->on_epoch_begin(epoch, steps_in_epoch);
    }
    for (size_t i = 0; i < batches.size(); ++i) {
      // With K backward passes per step, gradients of K batches accumulate (each loss / K, so
      // the step sees their average) before one synchronize() and optimizer step.
      const bool group_start = i % static_cast<size_t>(accumulate) == 0;
      const bool group_end =
          (i + 1) % static_cast<size_t>(accumulate) == 0 || i + 1 == batches.size();
      Batch b = train.get(batches[i], device_);
      torch::Tensor logits, loss;
      if (model_.train_step) {
        // Hand-written backward: no autograd graph, gradients overwritten at a group's start.
        std::tie(loss, logits) = model_.train_step(
            b.inputs, b.targets, 1.0 / static_cast<double>(accumulate), !group_start);
      } else {
        if (group_start) optimizer_->zero_grad();
        logits = model_.forward(b.inputs);
        loss = torch::nn::functional::cross_entropy(logits, b.targets);
        (accumulate > 1 ? loss / static_cast<double>(accumulate) : loss).backward();
      }
      {
        torch::NoGradGuard no_grad;
        const int64_t n = b.targets.size(0);
        loss_sum += loss.detach().to(torch::kDouble) * static_cast<double>(n);
        correct += logits.argmax(1).eq(b.targets).sum();
        samples += n;
      }
      if (group_end) {
        for (size_t k = 0; k < params.size(); ++k) {
          grads[k] = {params[k].first, params[k].second.mutable_grad()};
        }
        const auto sync_start = Clock::now();
        const GradientSync::Outcome outcome = sync_->synchronize(grads);
        sync_seconds += std::chrono::duration<double>(Clock::now() - sync_start).count();
        if (outcome == GradientSync::Outcome::kApply) {
          optimizer_->step();
        } else if (outcome == GradientSync::Outcome::kSkip) {
          ++skipped;
        }
        ++steps;
        ++global_step;
        if (const int sig = stop_signal()) throw Interrupted(sig);
        if (observed)
          report_step(loss, loss_sum, samples, epoch, steps, steps_in_epoch, global_step,
                      std::chrono::duration<double>(Clock::now() - start).count());
      }
    }

    auto totals = sync_->sum({loss_sum.item<double>(), static_cast<double>(correct.item<int64_t>()),
                              static_cast<double>(samples)});
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    EvalResult val = evaluate(validation, validation_sampler);

    EpochMetrics m;
    m.epoch = epoch;
    m.train_loss = totals[2] > 0 ? totals[0] / totals[2] : 0;
    m.train_acc = totals[2] > 0 ? totals[1] / totals[2] : 0;
    m.validation_loss = val.loss;
    m.validation_acc = val.accuracy;
    m.epoch_seconds = seconds;
    m.samples_per_second = seconds > 0 ? totals[2] / seconds : 0;
    m.steps = steps;
    m.skipped_steps = skipped;
    m.sync_seconds = sync_seconds;
    m.learning_rate = config_.learning_rate;
    m.global_step = global_step;
    history_.push_back(m);
    epochs_done_ = epoch;

    if (is_writer()) {
      for (auto& sink : sinks_) sink->on_epoch(m, history_);
      const bool last = epoch == config_.epochs;
      const bool due =
          config_.checkpoint_every > 0 && (epoch % config_.checkpoint_every == 0 || last);
      if (due || last) sync_->gather_state(params, *optimizer_, last);
      if (due) spdlog::info("checkpoint written: {}", save_checkpoint().string());
    }
  }
  return history_;
}

}  // namespace dtrain
