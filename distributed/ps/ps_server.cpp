#include "distributed/ps/ps_server.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <set>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/optimizers.h"
#include "core/stop_signal.h"
#include "core/thread_team.h"
#include "distributed/detail.h"
#include "distributed/ps/ps_common.h"
#include "distributed/ps/ps_wire.h"

namespace dtrain::distributed::ps {

namespace {

using Clock = std::chrono::steady_clock;
using grpc::ServerContext;
using grpc::Status;
using grpc::StatusCode;

class Service final : public PsService {
 public:
  explicit Service(ServerOptions o) : o_(std::move(o)), started_(Clock::now()) {
    // Push on byte buffers, in place of the generated method (which the base class removes).
    AddMethod(new grpc::internal::RpcServiceMethod(
        push_method(), grpc::internal::RpcMethod::NORMAL_RPC,
        new grpc::internal::RpcMethodHandler<Service, grpc::ByteBuffer, grpc::ByteBuffer>(
            [](Service* s, ServerContext* ctx, const grpc::ByteBuffer* req, grpc::ByteBuffer* rep) {
              return s->push(ctx, *req, rep);
            },
            this)));
  }

  static constexpr int64_t kMinQuotaBytes = int64_t{64} << 20;
  static constexpr int64_t kMaxQuotaBytes = int64_t{64} << 30;

  /// The server's memory quota for message buffers: sized here once Init says how large a
  /// legitimate message is.
  void set_quota(grpc::ResourceQuota* quota) { quota_ = quota; }

  // --- RPCs -------------------------------------------------------------------------------------

  Status Init(ServerContext* ctx, const InitRequest* req, InitReply*) override {
    if (auto s = admit(ctx, "chief", /*named_task=*/false); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    if (initialized_) {
      if (req->total() == total_ && req->begin() == begin_ && req->end() == end_) return Status::OK;
      return {StatusCode::FAILED_PRECONDITION,
              o_.task + " is already initialised with another layout"};
    }
    if (req->total() <= 0 || req->begin() < 0 || req->end() < req->begin() ||
        req->end() > req->total() || req->training_tasks() <= 0 || req->training_tasks() > 100000) {
      return {StatusCode::INVALID_ARGUMENT, o_.task + ": Init with an impossible layout"};
    }
    if (req->end() - req->begin() > o_.max_message_bytes / 4) {
      return {StatusCode::INVALID_ARGUMENT, o_.task + ": a range of " +
                                                std::to_string(req->end() - req->begin()) +
                                                " values does not fit in one message of at most " +
                                                std::to_string(o_.max_message_bytes) + " bytes"};
    }
    size_quota(req->end() - req->begin(), req->training_tasks());
    if (req->announce()) return Status::OK;  // the values follow, now that they fit
    try {
      total_ = req->total();
      begin_ = req->begin();
      end_ = req->end();
      shard_ = from_bytes(req->values(), end_ - begin_, "Init values");
      opt_ = make_optimizer(
          OptimizerSettings::from_json(nlohmann::json::parse(req->optimizer_config())), {shard_});
      if (!req->optimizer_slots().empty()) {
        FlatOptimizerState st;
        st.step = req->optimizer_step();
        for (const auto& [name, bytes] : req->optimizer_slots()) {
          st.slots[name] = from_bytes(bytes, end_ - begin_, "Init optimizer slot " + name);
        }
        opt_->unflatten(st);
      }
    } catch (const std::exception& e) {
      return {StatusCode::INVALID_ARGUMENT, o_.task + ": bad Init: " + e.what()};
    }
    run_config_ = req->run_config();
    training_tasks_ = req->training_tasks();
    version_ = sync_step_ = req->step();
    initialized_ = true;
    spdlog::info("holds values [{}, {}) of {}, {} training task(s), {} mode, from step {}", begin_,
                 end_, total_, training_tasks_, o_.sync ? "sync" : "async", sync_step_);
    cv_.notify_all();
    return Status::OK;
  }

  Status Register(ServerContext* ctx, const RegisterRequest* req, RegisterReply* rep) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    if (auto s = wait(
            lock, [&] { return initialized_; }, "waiting for the chief's Init");
        !s.ok())
      return s;
    if (req->run_config() != run_config_) {
      const auto mine = nlohmann::json::parse(req->run_config(), nullptr, false);
      const auto ref = nlohmann::json::parse(run_config_, nullptr, false);
      return {StatusCode::FAILED_PRECONDITION,
              req->task() + " disagrees with the chief (" + req->task() +
                  "'s value vs the chief's): " + detail::diff_json(mine, ref, "")};
    }
    registered_.insert(req->task());
    rep->set_total(total_);
    rep->set_begin(begin_);
    rep->set_end(end_);
    return Status::OK;
  }

  Status Pull(ServerContext* ctx, const PullRequest* req, PullReply* rep) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    if (auto s = wait(
            lock, [&] { return initialized_; }, "waiting for the chief's Init");
        !s.ok())
      return s;
    to_slice(shard_, begin_, rep->mutable_slice());
    rep->set_version(version_);
    return Status::OK;
  }

  Status push(grpc::ServerContextBase* ctx, const grpc::ByteBuffer& request,
              grpc::ByteBuffer* reply) override {
    PushRequest req;  // every field but the gradient, which is read in place
    WireSlice gradient;
    if (const std::string e =
            parse_with_slice(request, PushRequest::kGradientFieldNumber, &req, &gradient);
        !e.empty()) {
      return {StatusCode::INVALID_ARGUMENT, o_.task + ": a Push with " + e};
    }
    if (auto s = admit(ctx, req.task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    if (!initialized_ || !registered_.count(req.task())) {
      return {StatusCode::FAILED_PRECONDITION,
              req.task() + " pushed before registering with " + o_.task};
    }
    try {  // float16 with --compression fp16
      gradient.check(begin_, end_ - begin_, /*allow_half=*/true,
                     req.task() + "'s gradient to " + o_.task);
    } catch (const std::exception& e) {
      spdlog::warn("rejected a push from {}: {}", req.task(), e.what());
      return {StatusCode::INVALID_ARGUMENT, e.what()};
    }
    if (req.stop_signal() < 0 || req.stop_signal() > 64) {
      return {StatusCode::INVALID_ARGUMENT, req.task() + ": stop_signal " +
                                                std::to_string(req.stop_signal()) +
                                                " is not a signal number"};
    }
    if (!grad_.defined()) grad_ = torch::empty_like(shard_);
    if (!o_.sync) {  // async: apply on arrival, record how stale the gradient was
      if (stop_ == 0) stop_ = req.stop_signal();
      ++staleness_[version_ - req.pulled_version()];
      const bool finite = gradient.decode(grad_.data_ptr<float>(), /*accumulate=*/false);
      if (finite) apply(grad_);
      ++version_;
      PushReply rep;
      rep.set_skipped(!finite);
      rep.set_stop_signal(stop_ != 0 ? stop_ : stop_signal());
      rep.set_version(version_);
      *reply = values_reply(rep);
      return Status::OK;
    }
    const int64_t step = req.step();
    if (step != sync_step_ + 1) {
      return {StatusCode::FAILED_PRECONDITION, req.task() + " pushed step " + std::to_string(step) +
                                                   " but " + o_.task + " is at step " +
                                                   std::to_string(sync_step_ + 1)};
    }
    if (!pushed_.insert(req.task()).second) {
      return {StatusCode::FAILED_PRECONDITION,
              req.task() + " pushed step " + std::to_string(step) + " twice"};
    }
    if (step_stop_ == 0) step_stop_ = req.stop_signal();
    step_checkpoint_ = step_checkpoint_ || req.checkpoint();
    // The step's sum; the last push makes it the average, in the same pass.
    const bool last = static_cast<int>(pushed_.size()) == training_tasks_;
    const bool finite = gradient.decode(grad_.data_ptr<float>(), /*accumulate=*/pushed_.size() > 1,
                                        last ? training_tasks_ : 1);
    if (last) {
      // The last step's reply: every task has taken it (none could push this step before).
      step_reply_ = grpc::ByteBuffer();
      const bool skipped = !finite;
      if (skipped) {
        spdlog::warn("step {}: NaN/Inf in the averaged gradient; every worker skips it", step);
      } else {
        apply(grad_);
      }
      pushed_.clear();
      sync_step_ = version_ = step;
      PushReply rep;  // the same for every task: the step's decisions and values
      rep.set_skipped(skipped);
      rep.set_stop_signal(step_stop_ != 0 ? step_stop_ : stop_signal());
      rep.set_checkpoint(step_checkpoint_);
      rep.set_version(version_);
      step_reply_ = values_reply(rep);
      step_stop_ = 0;
      step_checkpoint_ = false;
      cv_.notify_all();
    } else if (auto s = wait(
                   lock, [&] { return sync_step_ >= step; },
                   "step " + std::to_string(step) + " waiting for " + names(missing(pushed_)));
               !s.ok()) {
      return s;
    }
    // The next step cannot complete before this task pushes it: this is still this step's.
    *reply = step_reply_;  // (another reference to the same slices)
    return Status::OK;
  }

  Status Reduce(ServerContext* ctx, const ReduceRequest* req, ReduceReply* rep) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    if (!initialized_) return {StatusCode::FAILED_PRECONDITION, "Reduce before Init"};
    if (req->values_size() > 1024 || req->key().size() > 256) {
      return {StatusCode::INVALID_ARGUMENT,
              req->task() + ": Reduce with more than 1024 values or a key over 256 bytes"};
    }
    if (!reduce_.count(req->key()) && reduce_.size() >= kMaxPendingReduces) {
      return {StatusCode::RESOURCE_EXHAUSTED, req->task() + ": too many Reduce keys pending (" +
                                                  std::to_string(kMaxPendingReduces) + ")"};
    }
    auto& r = reduce_[req->key()];
    if (r.sums.empty()) r.sums.assign(static_cast<size_t>(req->values_size()), 0.0);
    if (r.sums.size() != static_cast<size_t>(req->values_size())) {
      return {StatusCode::INVALID_ARGUMENT,
              req->task() + ": Reduce '" + req->key() + "' with another length"};
    }
    if (!r.from.insert(req->task()).second) {
      return {StatusCode::ALREADY_EXISTS,
              req->task() + " contributed to Reduce '" + req->key() + "' twice"};
    }
    for (int i = 0; i < req->values_size(); ++i) r.sums[static_cast<size_t>(i)] += req->values(i);
    if (++r.count == training_tasks_) cv_.notify_all();
    // Complete when every task has contributed, or has finished without (async mode, after a
    // stop that reached the others later: the sum of those still training).
    const auto complete = [&] {
      if (r.count >= training_tasks_) return true;
      if (static_cast<int>(registered_.size()) < training_tasks_) return false;
      for (const auto& t : registered_)
        if (!r.from.count(t) && !done_.count(t)) return false;
      return true;
    };
    if (auto s = wait(lock, complete, "reduce '" + req->key() + "'"); !s.ok()) return s;
    for (double v : r.sums) rep->add_sums(v);
    if (++r.readers == r.count) reduce_.erase(req->key());
    return Status::OK;
  }

  Status GetState(ServerContext* ctx, const StateRequest* req, StateReply* rep) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    if (!initialized_) return {StatusCode::FAILED_PRECONDITION, "GetState before Init"};
    if (req->wait_for_workers()) {
      if (auto s = wait_for_others(lock, req->task(), "waiting for workers to finish"); !s.ok())
        return s;
    }
    to_slice(shard_, begin_, rep->mutable_slice());
    const FlatOptimizerState st = opt_->flatten();
    for (const auto& [name, t] : st.slots) (*rep->mutable_optimizer_slots())[name] = to_bytes(t);
    rep->set_optimizer_step(st.step);
    rep->set_version(version_);
    for (const auto& [k, v] : staleness_) (*rep->mutable_staleness_histogram())[k] = v;
    return Status::OK;
  }

  Status Done(ServerContext* ctx, const DoneRequest* req, DoneReply*) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::lock_guard<std::mutex> lock(mu_);
    done_.insert(req->task());
    cv_.notify_all();
    return Status::OK;
  }

  Status Heartbeat(ServerContext* ctx, const HeartbeatRequest* req, HeartbeatReply*) override {
    return admit(ctx, req->task());
  }

  Status Shutdown(ServerContext* ctx, const ShutdownRequest* req, ShutdownReply*) override {
    if (auto s = admit(ctx, req->task()); !s.ok()) return s;
    std::unique_lock<std::mutex> lock(mu_);
    // After a stop the others may still be saying Done (or, async, pushing their last step):
    // they are let finish first. A failure or the wait's bound ends it anyway.
    if (auto s = wait_for_others(lock, req->task(),
                                 "waiting for the other tasks to finish before shutting down");
        !s.ok()) {
      spdlog::warn("shutting down without them: {}", s.error_message());
    }
    spdlog::info("shutdown requested by {}", req->task());
    shutdown_ = true;
    cv_.notify_all();
    return Status::OK;
  }

  // --- lifecycle (main thread)
  // --------------------------------------------------------------------

  /// Returns "" on shutdown, else why the server must fail.
  std::string watch() {
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<Clock::time_point> signalled;
    while (!shutdown_ && failure_.empty()) {
      cv_.wait_for(lock, std::chrono::milliseconds(500));
      const auto now = Clock::now();
      if (const int sig = stop_signal(); sig != 0 && !signalled) {
        signalled = now;
        if (registered_.empty()) {
          spdlog::warn("{}: no training task has registered; stopping", signal_name(sig));
          shutdown_ = true;
          break;
        }
        // The tasks learn of it from their next push's reply, stop after the same step, and the
        // chief checkpoints (pulling from here) and shuts this ps down.
        spdlog::warn(
            "{}: the training tasks stop after their next step; serving until the chief "
            "shuts this ps down (at most {} s)",
            signal_name(sig), static_cast<int>(stop_grace_seconds()));
      }
      if (signalled && now - *signalled > seconds(stop_grace_seconds())) {
        failure_ = o_.task + ": no shutdown from the chief within " +
                   std::to_string(static_cast<int>(stop_grace_seconds())) + " s of " +
                   signal_name(stop_signal());
      }
      if (!initialized_ && now - started_ > seconds(o_.init_timeout_seconds)) {
        failure_ = o_.task + ": no Init from the chief within " +
                   std::to_string(static_cast<int>(o_.init_timeout_seconds)) + " s";
      }
      for (const auto& t : registered_) {
        if (done_.count(t)) continue;
        const double silent = std::chrono::duration<double>(now - last_seen_[t]).count();
        if (silent > o_.peer_timeout_seconds) {
          failure_ = t + " has not been heard from for " +
                     std::to_string(static_cast<int>(silent)) + " s (died or hung); " + o_.task +
                     " gives up";
          break;
        }
      }
    }
    cv_.notify_all();  // wake blocked calls: they fail with failure_
    return failure_;
  }

 private:
  /// How long a signalled ps waits for the chief: the tasks' next step, the chief's checkpoint
  /// and everyone's Done.
  double stop_grace_seconds() const { return o_.peer_timeout_seconds * 2 + 30; }

  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  // Authenticates the call (DTRAIN_CLUSTER_TOKEN), checks that `task` (when `named_task`; else
  // a role such as "chief") is a training task of the cluster, and records that it is alive.
  Status admit(grpc::ServerContextBase* ctx, const std::string& task, bool named_task = true) {
    if (!o_.token.empty()) {
      const auto& md = ctx->client_metadata();
      auto it = md.find(kTokenKey);
      const bool ok =
          it != md.end() &&
          secrets_equal(std::string_view(it->second.data(), it->second.size()), o_.token);
      if (!ok) {
        spdlog::warn("rejected a call from {} ({}): missing or wrong cluster token", ctx->peer(),
                     task.empty() ? "?" : task);
        return {StatusCode::UNAUTHENTICATED, o_.task + ": missing or wrong DTRAIN_CLUSTER_TOKEN"};
      }
    }
    if (named_task && !o_.known_tasks.empty() && !o_.known_tasks.count(task)) {
      spdlog::warn(
          "rejected a call from {} naming itself '{}', which is not a training task of "
          "the cluster",
          ctx->peer(), task.substr(0, 64));
      return {StatusCode::PERMISSION_DENIED,
              o_.task + ": '" + task.substr(0, 64) + "' is not a training task of this cluster"};
    }
    std::lock_guard<std::mutex> lock(mu_);
    last_seen_[task] = Clock::now();
    return Status::OK;
  }

  /// A PushReply with the shard's current values, sent from the shard's own memory: the reply
  /// holds a reference to it, and apply() leaves memory that a reply still holds alone.
  grpc::ByteBuffer values_reply(const PushReply& header) const {
    OutgoingValues values;
    values.begin = begin_;
    values.add(shard_.alias());
    return serialize_with_slice(header, PushReply::kSliceFieldNumber, values);
  }

  template <typename Pred>
  Status wait(std::unique_lock<std::mutex>& lock, Pred ready, const std::string& what) {
    const auto deadline =
        Clock::now() + seconds(std::max(o_.peer_timeout_seconds * 2, o_.min_wait_seconds));
    while (!ready()) {
      if (!failure_.empty()) return {StatusCode::ABORTED, failure_};
      if (shutdown_) return {StatusCode::ABORTED, o_.task + " is shutting down"};
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && !ready()) {
        return {StatusCode::DEADLINE_EXCEEDED, o_.task + ": timed out " + what};
      }
    }
    return Status::OK;
  }

  /// Sizes the memory quota for a range of `values` and `tasks` training tasks: every task's
  /// push in flight at once and an Init (values and two optimizer slots), each with framing.
  /// Enough for the cluster's own traffic, and all that anyone can make the ps hold.
  void size_quota(int64_t values, int tasks) {
    if (quota_ == nullptr) return;
    const int64_t per_push = values * 4 + (int64_t{1} << 20);
    const int64_t bytes = (tasks + 1) * per_push + 3 * values * 4;
    quota_->Resize(static_cast<size_t>(std::clamp(bytes, kMinQuotaBytes, kMaxQuotaBytes)));
  }

  /// Every training task other than `task` has registered and said Done. One that has not
  /// registered yet (still starting) is waited for too: it is told to stop at its first push.
  bool others_done(const std::string& task) const { return missing(done_, task).empty(); }

  /// Waits until others_done(task); a timeout names who is missing.
  Status wait_for_others(std::unique_lock<std::mutex>& lock, const std::string& task,
                         const std::string& what) {
    Status s = wait(
        lock, [&] { return others_done(task); }, what);
    if (s.error_code() != StatusCode::DEADLINE_EXCEEDED) return s;
    return {s.error_code(),
            s.error_message() + " (not finished: " + names(missing(done_, task)) + ")"};
  }

  /// The training tasks other than `task` that are not in `tasks`: the registered ones by name,
  /// then, if some have not registered yet, how many.
  std::vector<std::string> missing(const std::set<std::string>& tasks,
                                   const std::string& task = "") const {
    std::vector<std::string> out;
    for (const auto& t : registered_) {
      if (t != task && !tasks.count(t)) out.push_back(t);
    }
    if (const int unregistered = training_tasks_ - static_cast<int>(registered_.size());
        unregistered > 0) {
      out.push_back(std::to_string(unregistered) + " task(s) not registered yet");
    }
    return out;
  }

  static std::string names(const std::vector<std::string>& tasks) {
    return tasks.empty() ? "other workers" : fmt::format("{}", fmt::join(tasks, ", "));
  }

  void apply(const torch::Tensor& grad) {
    // Copy on write: while a reply gRPC has not finished sending still references the values'
    // memory (it is sent as it is), the update goes to a copy and that reply keeps the old one.
    // In sync mode it does not happen in practice: the next step needs every task's push, which
    // a task sends only after it has received its whole reply.
    if (shard_.storage().use_count() > 1) shard_.set_(shard_.clone());
    shard_.mutable_grad() = grad;
    flush_denormals_on_this_thread();  // (gRPC's threads) as the workers' compute threads do
    opt_->step();
    shard_.mutable_grad() = torch::Tensor();  // (grad_ is the next push's)
  }

  ServerOptions o_;
  Clock::time_point started_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool initialized_ = false, shutdown_ = false;
  int step_stop_ = 0, stop_ = 0;  // stop signals: this sync step's, async
  bool step_checkpoint_ = false;
  std::string failure_, run_config_;
  int64_t total_ = 0, begin_ = 0, end_ = 0, version_ = 0, sync_step_ = 0;
  int training_tasks_ = 0;
  torch::Tensor shard_, grad_;   // values; a push's gradient (async) or the step's sum (sync)
  grpc::ByteBuffer step_reply_;  // the last sync step's PushReply, given to each of its pushes
  std::unique_ptr<Optimizer> opt_;
  std::set<std::string> registered_, done_, pushed_;
  std::map<std::string, Clock::time_point> last_seen_;
  std::map<int64_t, int64_t> staleness_;
  struct Pending {
    std::vector<double> sums;
    std::set<std::string> from;  // who contributed: each training task once
    int count = 0, readers = 0;
  };
  static constexpr size_t kMaxPendingReduces = 64;
  grpc::ResourceQuota* quota_ = nullptr;
  std::map<std::string, Pending> reduce_;
};

}  // namespace

std::unique_ptr<PsService> make_service(const ServerOptions& options) {
  return std::make_unique<Service>(options);
}

int serve(const ServerOptions& options) {
  const TlsMaterial tls = TlsMaterial::load(options.tls_cert, options.tls_key, options.tls_ca);
  retain_freed_memory();
  install_stop_signals();  // a preempted ps hands over to the chief instead of vanishing
  Service service(options);
  grpc::ServerBuilder builder;
  // Bodies are read before a handler can check the token: the memory quota bounds what callers
  // (authenticated or not) can make the ps hold at once. Small until the chief's authenticated
  // announcement of the layout (a small Init) sizes it for the cluster's messages.
  grpc::ResourceQuota quota("dtrain-ps");
  quota.Resize(static_cast<size_t>(Service::kMinQuotaBytes));
  builder.SetResourceQuota(quota);
  service.set_quota(&quota);
  int port = 0;
  // gRPC turns SO_REUSEPORT on by default: a second ps on the same address would bind silently
  // and take half the calls.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.address, server_credentials(tls), &port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(&service);
  // The service's Push is its own method on byte buffers, and gRPC wants a generic service for
  // the generated one it takes the place of: this one answers any method no service has with
  // UNIMPLEMENTED, as a server without it does.
  grpc::CallbackGenericService unimplemented;
  builder.RegisterCallbackGenericService(&unimplemented);
  // gRPC's sync server runs each call (all but Push, a callback method) on one of its polling
  // threads. Every training task's Reduce (once an epoch) and the final GetState/Shutdown wait
  // there for the others, so fewer threads poll, and gRPC starts a thread for a call that finds
  // none polling and ends one when more than MAX_POLLERS poll (defaults 1 and 2). Enough for
  // every task blocked at once plus heartbeats.
  const int tasks = std::max(1, static_cast<int>(options.known_tasks.size()));
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, tasks + 2);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2 * tasks + 4);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    throw CommError(options.task + ": cannot listen on " + options.address +
                    " (address in use, or not an address of this host)");
  }
  spdlog::info("serving on {}{}{}", options.address,
               options.token.empty() ? "" : " (cluster token required)",
               !tls.enabled()   ? ""
               : tls.ca.empty() ? " over TLS"
                                : " over mutual TLS");
  const std::string failure = service.watch();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!failure.empty()) throw CommError(failure);
  if (const int sig = stop_signal(); sig != 0) return Interrupted(sig).exit_code();
  return 0;
}

}  // namespace dtrain::distributed::ps
