#include "distributed/ps/ps_sync.h"

#include <grpcpp/impl/client_unary_call.h>
#include <grpcpp/support/client_callback.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <limits>
#include <mutex>

#include "core/errors.h"
#include "core/optimizers.h"
#include "distributed/ps/ps_common.h"
#include "distributed/ps/ps_wire.h"

namespace dtrain::distributed::ps {

namespace {

using Clock = std::chrono::steady_clock;

std::string state_text(grpc_connectivity_state s) {
  switch (s) {
    case GRPC_CHANNEL_IDLE:
      return "idle";
    case GRPC_CHANNEL_CONNECTING:
      return "connecting";
    case GRPC_CHANNEL_READY:
      return "ready";
    case GRPC_CHANNEL_TRANSIENT_FAILURE:
      return "connection refused or unreachable";
    case GRPC_CHANNEL_SHUTDOWN:
      return "shut down";
  }
  return "unknown";
}

std::string host_of(const TaskAddress& a) { return a.host; }

}  // namespace

struct PsSync::Peer {
  std::string name, address;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<ParameterServer::Stub> stub;
  std::unique_ptr<grpc::internal::RpcMethod> push;  // on byte buffers (ps_wire.h)
};

PsSync::PsSync(PsSyncOptions options) : options_(std::move(options)) {
  const TfConfig& c = options_.cluster;
  task_ = c.task_type + ":" + std::to_string(c.task_index);
  const bool has_chief = c.num_tasks("chief") > 0;
  world_ = c.num_tasks("worker") + (has_chief ? 1 : 0);
  if (c.task_type == "chief") {
    rank_ = 0;
  } else {
    rank_ = has_chief ? 1 : 0;
    for (const auto& [index, address] : c.cluster.at("worker")) {
      if (index == c.task_index) break;
      ++rank_;
    }
  }
  const std::string my_host = host_of(c.cluster.at(c.task_type).at(c.task_index));
  local_size_ = 0;
  for (const auto& [job, tasks] : c.cluster) {
    if (job == "ps" || job == "evaluator") continue;
    for (const auto& [i, a] : tasks) local_size_ += host_of(a) == my_host;
  }
  local_size_ = std::max(1, local_size_);
  retain_freed_memory();
  connect();
  heartbeat_ = std::thread([this] {
    while (!stop_) {
      for (auto& p : peers_) {
        grpc::ClientContext ctx;
        if (!options_.token.empty()) ctx.AddMetadata(kTokenKey, options_.token);
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
        HeartbeatRequest req;
        req.set_task(task_);
        HeartbeatReply rep;
        p->stub->Heartbeat(&ctx, req, &rep);  // failures surface on the training calls
      }
      for (int i = 0; i < 20 && !stop_; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

PsSync::~PsSync() {
  stop_ = true;
  if (heartbeat_.joinable()) heartbeat_.join();
}

void PsSync::connect() {
  const auto credentials =
      channel_credentials(TlsMaterial::load(options_.tls_cert, options_.tls_key, options_.tls_ca));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(options_.connect_timeout_seconds));
  for (const auto& [index, address] : options_.cluster.cluster.at("ps")) {
    auto peer = std::make_unique<Peer>();
    peer->name = "ps:" + std::to_string(index);
    peer->address = address.text();
    peer->channel = grpc::CreateCustomChannel(peer->address, credentials, args);
    auto next_log = Clock::now() + std::chrono::seconds(2);
    while (!peer->channel->WaitForConnected(std::chrono::system_clock::now() +
                                            std::chrono::milliseconds(500))) {
      const auto state = peer->channel->GetState(true);
      if (Clock::now() > deadline) {
        throw CommError(task_ + ": " + peer->name + " at " + peer->address + " — " +
                        state_text(state) + "; gave up after --connect-timeout " +
                        std::to_string(static_cast<int>(options_.connect_timeout_seconds)) + " s");
      }
      if (Clock::now() > next_log) {
        spdlog::warn("{} at {} — {}, retrying", peer->name, peer->address, state_text(state));
        next_log = Clock::now() + std::chrono::seconds(5);
      }
    }
    peer->stub = ParameterServer::NewStub(peer->channel);
    peer->push = std::make_unique<grpc::internal::RpcMethod>(
        push_method(), grpc::internal::RpcMethod::NORMAL_RPC, peer->channel);
    peers_.push_back(std::move(peer));
  }
}

namespace {

/// A call's context: the token and a deadline.
void prepare(grpc::ClientContext& ctx, const std::string& token, double timeout_seconds) {
  if (!token.empty()) ctx.AddMetadata(kTokenKey, token);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(timeout_seconds * 1000)));
}

/// A failed call as CommError (ConfigError when the ps rejects our configuration) naming the peer.
void check(const grpc::Status& s, const std::string& task, const std::string& peer,
           const std::string& address, const char* what) {
  if (s.ok()) return;
  const std::string msg = task + ": " + what + " on " + peer + " at " + address + " failed (" +
                          std::to_string(static_cast<int>(s.error_code())) +
                          "): " + s.error_message();
  if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION &&
      s.error_message().find("disagrees") != std::string::npos) {
    throw ConfigError(msg);
  }
  throw CommError(msg);
}

// Runs one RPC with the token and a deadline; failures throw as check() says.
template <typename Req, typename Rep, typename Method>
void call(const std::string& task, const std::string& token, double timeout_seconds,
          const std::string& peer, const std::string& address, const char* what, Method method,
          const Req& req, Rep* rep) {
  grpc::ClientContext ctx;
  prepare(ctx, token, timeout_seconds);
  check(method(&ctx, req, rep), task, peer, address, what);
}

}  // namespace

#define PS_CALL(peer, what, rpc, req, rep)                                                       \
  call(                                                                                          \
      task_, options_.token, call_timeout_seconds(), (peer).name, (peer).address, what,          \
      [&](grpc::ClientContext* c, const auto& q, auto* r) { return (peer).stub->rpc(c, q, r); }, \
      req, rep)

void PsSync::check_consistent(const nlohmann::json& shared_config) {
  shared_config_ = shared_config.dump();
}

void PsSync::take_values(size_t peer, const Slice& slice) {
  const auto [b, e] = ranges_[peer];
  try {
    write_range(view_slice(slice, b, e - b, peers_[peer]->name + " values"), b, params_);
  } catch (const std::invalid_argument& ex) {
    throw CommError(task_ + ": " + ex.what());
  }
}

void PsSync::take_values(size_t peer, const WireSlice& values) {
  const auto [b, e] = ranges_[peer];
  try {
    values.check(b, e - b, /*allow_half=*/false, peers_[peer]->name + " values");
  } catch (const std::invalid_argument& ex) {
    throw CommError(task_ + ": " + ex.what());
  }
  write_range(values, b, params_);
}

void PsSync::broadcast_state(const NamedTensors& params, Optimizer& optimizer) {
  params_ = params;
  total_ = 0;
  for (const auto& [name, p] : params) total_ += p.numel();
  ranges_ = partition(total_, static_cast<int>(peers_.size()));
  versions_.assign(peers_.size(), 0);
  if (options_.cluster.is_chief()) {
    const FlatOptimizerState state = optimizer.flatten();
    const nlohmann::json opt = options_.optimizer.to_json();
    for (size_t i = 0; i < peers_.size(); ++i) {
      const auto [b, e] = ranges_[i];
      InitRequest req;
      req.set_total(total_);
      req.set_begin(b);
      req.set_end(e);
      req.set_training_tasks(world_);
      req.set_announce(true);  // the layout first: the ps then makes room for the values
      InitReply announced;
      PS_CALL(*peers_[i], "Init", Init, req, &announced);
      req.set_announce(false);
      Slice values;
      copy_range(params_, b, e, &values);
      req.set_values(std::move(*values.mutable_values()));
      req.set_optimizer_config(opt.dump());
      for (const auto& [slot, t] : state.slots)
        (*req.mutable_optimizer_slots())[slot] = to_bytes(t.narrow(0, b, e - b));
      req.set_optimizer_step(state.step);
      req.set_training_tasks(world_);
      req.set_run_config(shared_config_);
      InitReply rep;
      PS_CALL(*peers_[i], "Init", Init, req, &rep);
    }
  }
  for (size_t i = 0; i < peers_.size(); ++i) {
    RegisterRequest reg;
    reg.set_task(task_);
    reg.set_rank(rank_);
    reg.set_run_config(shared_config_);
    RegisterReply reg_rep;
    PS_CALL(*peers_[i], "Register", Register, reg, &reg_rep);
    if (reg_rep.total() != total_ || reg_rep.begin() != ranges_[i].first ||
        reg_rep.end() != ranges_[i].second) {
      throw ConfigError(
          task_ + ": " + peers_[i]->name + " holds [" + std::to_string(reg_rep.begin()) + ", " +
          std::to_string(reg_rep.end()) + ") of " + std::to_string(reg_rep.total()) +
          " values but this model partitions to [" + std::to_string(ranges_[i].first) + ", " +
          std::to_string(ranges_[i].second) + ") of " + std::to_string(total_));
    }
    PullRequest pull;
    pull.set_task(task_);
    PullReply rep;
    PS_CALL(*peers_[i], "Pull", Pull, pull, &rep);
    take_values(i, rep.slice());
    versions_[i] = rep.version();
  }
  if (options_.cluster.is_chief()) {
    spdlog::info("parameter servers: {} holding {} values, {} training task(s), {} mode",
                 peers_.size(), total_, world_, options_.sync ? "sync" : "async");
  }
}

GradientSync::Outcome PsSync::synchronize(const NamedTensors& grads) {
  ++step_;
  if (options_.fault.fires(rank_, step_)) {
    if (options_.fault.kind == FaultInjection::Kind::kKill) {
      spdlog::error("DTRAIN_FAULT_INJECT: {} kills itself at step {}", task_, step_);
      std::raise(SIGKILL);
    }
    if (options_.fault.kind == FaultInjection::Kind::kNan) {
      grads.front().second.view(-1)[0] = std::numeric_limits<float>::quiet_NaN();
    }
  }
  const size_t n = peers_.size();
  // Each ps's request points at the gradients' memory, which stays as it is until the calls end.
  std::vector<grpc::ByteBuffer> reqs(n), reps(n);
  for (size_t i = 0; i < n; ++i) {
    PushRequest head;
    head.set_task(task_);
    head.set_step(step_);
    head.set_pulled_version(versions_[i]);
    head.set_stop_signal(control_.stop_signal);
    head.set_checkpoint(control_.checkpoint);
    reqs[i] = serialize_with_slice(
        head, PushRequest::kGradientFieldNumber,
        outgoing_range(grads, ranges_[i].first, ranges_[i].second, options_.fp16_compression));
  }
  if (n == 1) {  // on this thread: no hand-over to gRPC's
    grpc::ClientContext ctx;
    prepare(ctx, options_.token, call_timeout_seconds());
    check(grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
              peers_[0]->channel.get(), *peers_[0]->push, &ctx, reqs[0], &reps[0]),
          task_, peers_[0]->name, peers_[0]->address, "Push");
  } else {  // every ps at once, as their shards are independent
    std::vector<grpc::ClientContext> contexts(n);
    std::vector<grpc::Status> statuses(n);
    std::mutex mu;
    std::condition_variable done;
    size_t pending = n;
    for (size_t i = 0; i < n; ++i) {
      prepare(contexts[i], options_.token, call_timeout_seconds());
      grpc::internal::CallbackUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
          peers_[i]->channel.get(), *peers_[i]->push, &contexts[i], &reqs[i], &reps[i],
          [&, i](grpc::Status st) {
            std::lock_guard<std::mutex> lock(mu);
            statuses[i] = std::move(st);
            if (--pending == 0) done.notify_one();
          });
    }
    std::unique_lock<std::mutex> lock(mu);
    done.wait(lock, [&] { return pending == 0; });  // each call ends by its deadline
    for (size_t i = 0; i < n; ++i)
      check(statuses[i], task_, peers_[i]->name, peers_[i]->address, "Push");
  }
  bool skipped = false;
  // Sync: every task gets the same replies, so the same decision (each ps combined the same
  // pushes; a signalled ps adds its own stop). Async: another's stop spreads; checkpoints are the
  // chief's own.
  StepControl decided;
  decided.stop_signal = options_.sync ? 0 : control_.stop_signal;
  decided.checkpoint = options_.sync ? false : control_.checkpoint;
  for (size_t i = 0; i < n; ++i) {
    PushReply rep;  // every field but the values, which are read in place
    WireSlice values;
    if (const std::string e =
            parse_with_slice(reps[i], PushReply::kSliceFieldNumber, &rep, &values);
        !e.empty()) {
      throw CommError(task_ + ": " + peers_[i]->name + " replied to Push with " + e);
    }
    take_values(i, values);
    versions_[i] = rep.version();
    skipped = skipped || rep.skipped();
    if (rep.stop_signal() < 0 || rep.stop_signal() > 64) {
      throw CommError(task_ + ": " + peers_[i]->name + " replied with stop_signal " +
                      std::to_string(rep.stop_signal()));
    }
    if (decided.stop_signal == 0) decided.stop_signal = rep.stop_signal();
    if (options_.sync) decided.checkpoint = decided.checkpoint || rep.checkpoint();
  }
  control_ = decided;
  if (skipped && rank_ == 0)
    spdlog::warn("step {}: NaN/Inf in the averaged gradient; the step was skipped", step_);
  return skipped ? Outcome::kSkip : Outcome::kUpdated;
}

std::vector<double> PsSync::sum(std::vector<double> values) {
  ReduceRequest req;
  req.set_task(task_);
  req.set_key("reduce-" + std::to_string(++reduce_count_));
  for (double v : values) req.add_values(v);
  ReduceReply rep;
  PS_CALL(*peers_[0], "Reduce", Reduce, req, &rep);
  if (rep.sums_size() != static_cast<int>(values.size()))
    throw CommError(task_ + ": Reduce returned the wrong length");
  for (size_t i = 0; i < values.size(); ++i) values[i] = rep.sums(static_cast<int>(i));
  return values;
}

void PsSync::gather_state(const NamedTensors& params, Optimizer& optimizer, bool final) {
  params_ = params;
  FlatOptimizerState state;
  std::map<std::string, std::vector<torch::Tensor>> slots;
  for (size_t i = 0; i < peers_.size(); ++i) {
    StateRequest req;
    req.set_task(task_);
    req.set_wait_for_workers(final);
    StateReply rep;
    PS_CALL(*peers_[i], "GetState", GetState, req, &rep);
    take_values(i, rep.slice());
    const auto [b, e] = ranges_[i];
    try {
      for (const auto& [slot, bytes] : rep.optimizer_slots()) {
        slots[slot].push_back(
            from_bytes(bytes, e - b, peers_[i]->name + " optimizer slot " + slot));
      }
    } catch (const std::invalid_argument& ex) {
      throw CommError(task_ + ": " + ex.what());
    }
    state.step = rep.optimizer_step();
    if (i == 0) {  // every push reaches every ps: one histogram counts each push once
      staleness_.clear();
      for (const auto& [k, v] : rep.staleness_histogram()) staleness_[k] = v;
    }
  }
  for (auto& [slot, parts] : slots) {
    if (parts.size() == peers_.size()) state.slots[slot] = torch::cat(parts);
  }
  try {
    optimizer.unflatten(state);
  } catch (const DataError& ex) {
    throw CommError(task_ + ": the parameter servers returned " + ex.what());
  }
}

void PsSync::finish() {
  for (auto& p : peers_) {
    if (options_.cluster.is_chief()) {
      ShutdownRequest req;
      req.set_task(task_);
      ShutdownReply rep;
      PS_CALL(*p, "Shutdown", Shutdown, req, &rep);
    } else {
      DoneRequest req;
      req.set_task(task_);
      DoneReply rep;
      PS_CALL(*p, "Done", Done, req, &rep);
    }
  }
}

nlohmann::json PsSync::describe() const {
  nlohmann::json hist = nlohmann::json::object();
  for (const auto& [k, v] : staleness_) hist[std::to_string(k)] = v;
  return {{"strategy", "parameter_server"},
          {"mode", options_.sync ? "sync" : "async"},
          {"num_ps", peers_.size()},
          {"world_size", world_},
          {"compression", options_.fp16_compression ? "fp16" : "none"},
          {"task", task_},
          {"staleness_histogram", hist}};
}

}  // namespace dtrain::distributed::ps
