#include "distributed/allreduce_sync.h"

#include <spdlog/spdlog.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <chrono>
#include <csignal>
#include <iterator>
#include <limits>
#include <thread>

#include "core/checkpoint.h"
#include "core/errors.h"
#include "core/optimizers.h"
#include "core/tensor_text.h"
#include "distributed/detail.h"

namespace dtrain::distributed {

AllreduceSync::AllreduceSync(std::unique_ptr<Communicator> comm, AllreduceSyncOptions options)
    : comm_(std::move(comm)), options_(std::move(options)) {}

AllreduceSync::~AllreduceSync() {
  if (!flat_.defined()) return;
  const char* begin = static_cast<const char*>(flat_.data_ptr());
  const char* end = begin + flat_.numel() * static_cast<int64_t>(flat_.element_size());
  for (const auto& [name, p] : placed_) {
    torch::Tensor& g = p.mutable_grad();
    const char* at = g.defined() ? static_cast<const char*>(g.data_ptr()) : nullptr;
    if (at >= begin && at < end) g = g.detach().clone();
  }
}

void AllreduceSync::check_consistent(const nlohmann::json& shared_config) {
  const std::string text = shared_config.dump();
  const std::string mismatch = comm_->agree(
      fnv1a(text), [&] { return text; }, "start-up check");
  if (!mismatch.empty()) throw ConfigError(mismatch);
}

void AllreduceSync::broadcast_state(const NamedTensors& params, Optimizer& optimizer) {
  if (comm_->size() == 1) return;
  torch::NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    torch::Tensor t = p.device() == comm_->device() ? p.detach() : p.detach().to(comm_->device());
    comm_->broadcast(t, 0);
    if (!t.is_same(p)) p.detach().copy_(t);
  }
  // Optimizer state (momentum buffers, Adam moments) as a serialized archive from rank 0.
  std::string bytes;
  if (comm_->rank() == 0) {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    bytes = archive_bytes(archive);
  }
  torch::Tensor size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kLong);
  size = size.to(comm_->device());
  comm_->broadcast(size, 0);
  const int64_t n = size.cpu().item<int64_t>();
  torch::Tensor payload = comm_->rank() == 0
                              ? torch::from_blob(bytes.data(), {n}, torch::kByte).clone()
                              : torch::empty({n}, torch::kByte);
  payload = payload.to(comm_->device());
  comm_->broadcast(payload, 0);
  if (comm_->rank() != 0) {
    payload = payload.cpu();
    torch::serialize::InputArchive archive;
    archive.load_from(static_cast<const char*>(payload.data_ptr()), static_cast<size_t>(n));
    optimizer.load(archive);
  }
}

void AllreduceSync::place_gradients(const NamedTensors& params) {
  if (params.empty() || options_.fp16_compression) return;
  NamedTensors grads;
  for (const auto& [name, p] : params) grads.emplace_back(name, p.grad());
  if (in_place(grads)) return;  // placed by an earlier fit()
  // The same decision on every rank (reduce_buffer() is collective): the parameters' dtypes and
  // devices were checked to agree.
  for (const auto& named : params) {
    const torch::Tensor& p = named.second;
    if (p.scalar_type() != torch::kFloat || p.device() != comm_->device()) return;
  }
  int64_t total = 0;
  for (const auto& named : params) total += named.second.numel();
  flat_ = comm_->reduce_buffer(total + kControlSlots, torch::kFloat);
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& [name, p] : params) {
    // A tensor of its own over the buffer's memory (not an autograd view, which may not be
    // detached in place), keeping the buffer alive.
    torch::Tensor grad = torch::from_blob(
        static_cast<float*>(flat_.data_ptr()) + offset, p.sizes(), [keep = flat_](void*) {},
        flat_.options());
    if (p.grad().defined()) grad.copy_(p.grad());
    p.mutable_grad() = grad;
    offset += p.numel();
  }
  placed_ = params;
  buckets_.clear();
}

bool AllreduceSync::in_place(const NamedTensors& grads) const {
  if (!flat_.defined() || grads.size() != placed_.size()) return false;
  const auto* at = static_cast<const float*>(flat_.data_ptr());
  for (const auto& named : grads) {
    const torch::Tensor& g = named.second;
    if (!g.defined() || g.scalar_type() != torch::kFloat || !g.is_contiguous() ||
        g.data_ptr() != at) {
      return false;
    }
    at += g.numel();
  }
  return true;
}

void AllreduceSync::plan_buckets(const NamedTensors& grads, bool in_place) {
  nlohmann::json layout = nlohmann::json::object();
  for (const auto& [name, g] : grads) layout[name] = describe_tensor(g);
  // Part of the signature: ranks that differ here would run different collectives.
  layout["(gradients in the fusion buffers)"] = in_place;
  buckets_in_place_ = in_place;
  layout_ = layout.dump();
  planned_tensors_ = grads.size();
  layout_hash_ = fnv1a(layout_);
  buckets_.clear();
  const double threshold = options_.fusion_threshold_mb * 1024 * 1024;
  int64_t bucket_bytes = 0;
  torch::ScalarType bucket_type = torch::kFloat;
  for (size_t i = 0; i < grads.size(); ++i) {
    const torch::Tensor& g = grads[i].second;
    const torch::ScalarType type =
        options_.fp16_compression && g.is_floating_point() ? torch::kHalf : g.scalar_type();
    const int64_t bytes = g.numel() * static_cast<int64_t>(c10::elementSize(type));
    if (buckets_.empty() || type != bucket_type ||
        static_cast<double>(bucket_bytes + bytes) > threshold) {
      buckets_.emplace_back();
      bucket_bytes = 0;
      bucket_type = type;
    }
    buckets_.back().members.push_back(i);
    bucket_bytes += bytes;
  }
  int64_t start = 0;  // of the bucket in flat_, in place
  for (auto& b : buckets_) {
    int64_t numel = 0;
    for (size_t i : b.members) numel += grads[i].second.numel();
    const auto type = options_.fp16_compression && grads[b.members[0]].second.is_floating_point()
                          ? torch::kHalf
                          : grads[b.members[0]].second.scalar_type();
    b.grad_numel = numel;
    const int64_t slots = &b == &buckets_.back() ? kControlSlots : 0;
    b.buffer = in_place ? flat_.narrow(0, start, numel + slots)
                        : torch::empty({numel + slots},
                                       torch::TensorOptions().dtype(type).device(comm_->device()));
    start += numel;
  }
  if (comm_->rank() == 0) {
    spdlog::info("gradient fusion: {} tensors in {} buffer(s) (threshold {} MiB{})", grads.size(),
                 buckets_.size(), options_.fusion_threshold_mb,
                 options_.fp16_compression ? ", fp16 compression"
                 : in_place                ? ", gradients reduced in place"
                                           : "");
  }
}

void AllreduceSync::inject_fault(const NamedTensors& grads) {
  if (!options_.fault.fires(comm_->rank(), step_)) return;
  switch (options_.fault.kind) {
    case FaultInjection::Kind::kKill:
      spdlog::error("DTRAIN_FAULT_INJECT: rank {} kills itself at step {}", comm_->rank(), step_);
      std::raise(SIGKILL);
      break;
    case FaultInjection::Kind::kStall:
      spdlog::error("DTRAIN_FAULT_INJECT: rank {} stalls at step {}", comm_->rank(), step_);
      std::this_thread::sleep_for(std::chrono::hours(1));
      break;
    case FaultInjection::Kind::kNan:
      spdlog::warn("DTRAIN_FAULT_INJECT: rank {} puts a NaN into {} at step {}", comm_->rank(),
                   grads.front().first, step_);
      grads.front().second.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
      break;
    case FaultInjection::Kind::kNone:
      break;
  }
}

namespace {
// The stop signals a rank can ask for, one control slot each (a vote count after the sum).
constexpr int kStopSignals[] = {SIGTERM, SIGINT, SIGUSR1};
}  // namespace

void AllreduceSync::write_control(Bucket& b) const {
  int64_t slot = b.grad_numel;
  for (int sig : kStopSignals) {
    b.buffer.narrow(0, slot++, 1).fill_(control_.stop_signal == sig ? 1 : 0);
  }
  b.buffer.narrow(0, slot, 1).fill_(control_.checkpoint ? 1 : 0);
}

void AllreduceSync::read_control(const Bucket& b) {
  const torch::Tensor c = b.buffer.narrow(0, b.grad_numel, kControlSlots).to(torch::kDouble).cpu();
  // Stop if any rank asked; report the signal most ranks got (mpirun passes one on to all).
  control_.stop_signal = 0;
  double most = 0;
  for (size_t k = 0; k < std::size(kStopSignals); ++k) {
    const double votes = c[static_cast<int64_t>(k)].item<double>();
    if (votes > most) {
      most = votes;
      control_.stop_signal = kStopSignals[k];
    }
  }
  control_.checkpoint = c[kControlSlots - 1].item<double>() > 0;
}

GradientSync::Outcome AllreduceSync::synchronize(const NamedTensors& grads) {
  ++step_;
  inject_fault(grads);
  if (grads.empty()) return Outcome::kApply;
  const bool direct = in_place(grads);
  if (buckets_.empty() || planned_tensors_ != grads.size() || direct != buckets_in_place_) {
    plan_buckets(grads, direct);
  }
  const uint64_t signature = layout_hash_ ^ (static_cast<uint64_t>(step_) * 0x9E3779B97F4A7C15ull);
  const std::string mismatch = comm_->agree(
      signature,
      [&] {
        nlohmann::json j = nlohmann::json::parse(layout_);
        j["step"] = step_;
        return j.dump();
      },
      "gradient allreduce at step " + std::to_string(step_));
  if (!mismatch.empty()) throw CommError(mismatch);

  torch::NoGradGuard no_grad;
  bool finite = true;
  if (comm_->size() == 1) {  // nothing to reduce; still refuse non-finite gradients
    for (const auto& named : grads) finite = finite && detail::all_finite(named.second);
    if (!finite) spdlog::warn("step {}: NaN/Inf in the gradients; skipping this step", step_);
    return finite ? Outcome::kApply : Outcome::kSkip;
  }
  const torch::Scalar scale = 1.0 / comm_->size();
  for (auto& b : buckets_) {
    int64_t offset = 0;
    if (!direct) {
      for (size_t i : b.members) {
        const torch::Tensor& g = grads[i].second;
        detail::copy_converting(b.buffer.narrow(0, offset, g.numel()), g.reshape(-1));
        offset += g.numel();
      }
    }
    const bool last = &b == &buckets_.back();
    if (last) write_control(b);
    // In place the buffer is the gradients: averaged by the communicator (the control slots'
    // votes too, which keeps their order and sign). Packed: summed, averaged when unpacked.
    // The result is bitwise identical on every rank, so every rank takes the same decision.
    // Keep reducing the other buckets even if this one is bad: the ranks' collectives must match.
    const bool ok =
        comm_->allreduce_all_finite(b.buffer, direct ? ReduceOp::kAverage : ReduceOp::kSum);
    finite = finite && ok;
    if (last) read_control(b);
    if (!finite || direct) continue;
    offset = 0;
    for (size_t i : b.members) {
      torch::Tensor g = grads[i].second.view(-1);
      torch::Tensor part = b.buffer.narrow(0, offset, g.numel());
      if (part.scalar_type() == g.scalar_type() && part.device() == g.device()) {
        at::mul_out(g, part, scale);  // unpack and average in one pass
      } else {
        detail::copy_converting(g, part);
        g.mul_(scale);
      }
      offset += g.numel();
    }
  }
  if (!finite && comm_->rank() == 0) {
    spdlog::warn("step {}: NaN/Inf in the allreduced gradients; every rank skips this step", step_);
  }
  return finite ? Outcome::kApply : Outcome::kSkip;
}

std::vector<double> AllreduceSync::sum(std::vector<double> values) {
  if (comm_->size() == 1 || values.empty()) return values;
  torch::Tensor t = torch::tensor(values, torch::kDouble).to(comm_->device());
  comm_->allreduce(t, ReduceOp::kSum);
  t = t.cpu();
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[static_cast<int64_t>(i)].item<double>();
  return values;
}

nlohmann::json AllreduceSync::describe() const {
  return {{"strategy", "allreduce"},
          {"algorithm", options_.algorithm},
          {"backend", comm_->backend()},
          {"world_size", comm_->size()},
          {"local_size", comm_->local_size()},
          {"fusion_threshold_mb", options_.fusion_threshold_mb},
          {"fusion_buffers", buckets_.size()},
          {"compression", options_.fp16_compression ? "fp16" : "none"},
          {"backward_passes_per_step", options_.backward_passes_per_step}};
}

}  // namespace dtrain::distributed
