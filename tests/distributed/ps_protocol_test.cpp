// The parameter server's RPCs driven directly: malformed or mismatched requests are rejected
// with an error and never applied; the token is enforced.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "core/subprocess.h"
#include "distributed/ports.h"
#include "distributed/ps/ps.grpc.pb.h"
#include "distributed/ps/ps_server.h"
#include "distributed/ps/ps_wire.h"
#include "test_util.h"

namespace dtrain::distributed::ps {
namespace {

std::string floats(std::initializer_list<float> v) {
  return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * sizeof(float));
}

/// TF_CONFIG of a ps at `address` with two (absent) workers.
std::string ps_tf_config(const std::string& address) {
  return "{\"cluster\": {\"ps\": [\"" + address +
         "\"], \"worker\": [\"127.0.0.1:1\", \"127.0.0.1:2\"]}, \"task\": {\"type\": "
         "\"ps\", \"index\": 0}}";
}

/// The chief's Init of a 4-value model with SGD, for one training task.
InitRequest small_init() {
  InitRequest init;
  init.set_total(4);
  init.set_begin(0);
  init.set_end(4);
  init.set_values(floats({1, 2, 3, 4}));
  init.set_optimizer_config(
      R"({"optimizer": "sgd", "learning_rate": 0.5, "momentum": 0, "weight_decay": 0})");
  init.set_training_tasks(1);
  return init;
}

class PsProtocol : public ::testing::Test {
 protected:
  void SetUp() override {
    address_ = "127.0.0.1:" + std::to_string(free_loopback_ports(1)[0]);
    const std::string tf = ps_tf_config(address_);
    server_ = std::thread([this, tf] {
      result_ = testing::run_command(
          "env TF_CONFIG='" + tf + "' DTRAIN_CLUSTER_TOKEN=secret-token-0123456789 " +
              testing::dtrain_binary() + " train --distributed ps --data-dir " +
              dir_.path().string() + " --peer-timeout 20",
          120);
    });
    channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
    ASSERT_TRUE(
        channel_->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)));
    stub_ = ParameterServer::NewStub(channel_);
  }
  void TearDown() override {
    grpc::ClientContext ctx;
    ctx.AddMetadata("dtrain-token", "secret-token-0123456789");
    ShutdownRequest req;
    req.set_task("worker:0");
    ShutdownReply rep;
    stub_->Shutdown(&ctx, req, &rep);
    server_.join();
    EXPECT_EQ(result_.exit_code, 0) << result_.output;
  }
  std::unique_ptr<grpc::ClientContext> ctx(const std::string& token = "secret-token-0123456789") {
    auto c = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) c->AddMetadata("dtrain-token", token);
    c->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return c;
  }

  testing::TempDir dir_;
  std::string address_;
  std::thread server_;
  testing::CommandResult result_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<ParameterServer::Stub> stub_;
};

TEST_F(PsProtocol, BadRequestsAreRejectedAndNeverApplied) {
  InitRequest init = small_init();
  init.set_run_config(R"({"hidden_sizes": [3]})");
  InitReply init_rep;
  // Without or with a wrong token: rejected.
  EXPECT_EQ(stub_->Init(ctx("").get(), init, &init_rep).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(stub_->Init(ctx("nope").get(), init, &init_rep).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // An optimizer, or optimizer state, that the ps does not know is refused, never dropped.
  InitRequest bad = init;
  bad.set_optimizer_config(
      R"({"optimizer": "rmsprop", "learning_rate": 0.5, "momentum": 0, "weight_decay": 0})");
  grpc::Status refused = stub_->Init(ctx().get(), bad, &init_rep);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("rmsprop"), std::string::npos) << refused.error_message();
  bad = init;
  (*bad.mutable_optimizer_slots())["exp_avg"] = floats({0, 0, 0, 0});
  bad.set_optimizer_step(1);
  refused = stub_->Init(ctx().get(), bad, &init_rep);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(refused.error_message().find("exp_avg"), std::string::npos) << refused.error_message();
  ASSERT_TRUE(stub_->Init(ctx().get(), init, &init_rep).ok());

  RegisterRequest reg;
  reg.set_task("worker:0");
  reg.set_run_config(R"({"hidden_sizes": [4]})");
  RegisterReply reg_rep;
  grpc::Status s = stub_->Register(ctx().get(), reg, &reg_rep);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(s.error_message().find("hidden_sizes"), std::string::npos) << s.error_message();
  reg.set_run_config(R"({"hidden_sizes": [3]})");
  ASSERT_TRUE(stub_->Register(ctx().get(), reg, &reg_rep).ok());

  PushRequest push;
  push.set_task("worker:0");
  push.set_step(1);
  PushReply push_rep;
  push.mutable_gradient()->set_begin(0);
  push.mutable_gradient()->set_values(floats({1, 1, 1}));  // wrong size
  s = stub_->Push(ctx().get(), push, &push_rep);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("16 bytes"), std::string::npos) << s.error_message();
  push.mutable_gradient()->set_begin(1);  // wrong range
  push.mutable_gradient()->set_values(floats({1, 1, 1, 1}));
  EXPECT_EQ(stub_->Push(ctx().get(), push, &push_rep).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  push.mutable_gradient()->set_begin(0);
  push.set_step(7);  // not the next step
  EXPECT_EQ(stub_->Push(ctx().get(), push, &push_rep).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  push.set_task("worker:9");  // not a task of the cluster
  push.set_step(1);
  EXPECT_EQ(stub_->Push(ctx().get(), push, &push_rep).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  // Push reads its bytes itself (not the generated code): bytes that are no PushRequest are
  // refused saying so; a method the ps does not have is UNIMPLEMENTED, as from any gRPC server.
  grpc::GenericStub raw(channel_);
  const auto raw_call = [&](const std::string& method, const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), reply;
    std::promise<grpc::Status> status;
    auto c = ctx();
    raw.UnaryCall(c.get(), method, grpc::StubOptions(), &request, &reply,
                  [&](grpc::Status st) { status.set_value(std::move(st)); });
    return status.get_future().get();
  };
  s = raw_call("/dtrain.distributed.ps.ParameterServer/Push", "\x22\x05\x12\x7f");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("a Push with"), std::string::npos) << s.error_message();
  EXPECT_EQ(raw_call("/dtrain.distributed.ps.ParameterServer/Pop", "").error_code(),
            grpc::StatusCode::UNIMPLEMENTED);

  PullRequest pull;
  pull.set_task("worker:0");
  PullReply pull_rep;
  ASSERT_TRUE(stub_->Pull(ctx().get(), pull, &pull_rep).ok());
  EXPECT_EQ(pull_rep.slice().values(), floats({1, 2, 3, 4})) << "nothing may have been applied";
  EXPECT_EQ(pull_rep.version(), 0);

  // A good push is applied: w -= 0.5 * g.
  push.set_task("worker:0");
  push.set_step(1);
  push.mutable_gradient()->set_values(floats({2, 2, 2, 2}));
  ASSERT_TRUE(stub_->Push(ctx().get(), push, &push_rep).ok());
  EXPECT_EQ(push_rep.slice().values(), floats({0, 1, 2, 3}));

  // Reduce: each task contributes once per key; keys and sizes are bounded.
  ReduceRequest reduce;
  reduce.set_task("worker:0");
  reduce.set_key("metrics-1");
  reduce.add_values(1.0);
  ReduceReply reduce_rep;
  ASSERT_TRUE(stub_->Reduce(ctx().get(), reduce, &reduce_rep).ok());  // one training task
  reduce.set_key("metrics-2");
  for (int i = 0; i < 1100; ++i) reduce.add_values(1.0);
  EXPECT_EQ(stub_->Reduce(ctx().get(), reduce, &reduce_rep).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  DoneRequest done;
  done.set_task("worker:0");
  DoneReply done_rep;
  ASSERT_TRUE(stub_->Done(ctx().get(), done, &done_rep).ok());
}

// The chief's Shutdown waits for every training task the Init announced, also one that has not
// registered yet (a worker still starting when the ps was told to stop): it is let register,
// learn of the stop and say Done, instead of finding the ps gone.
TEST_F(PsProtocol, ShutdownWaitsForATaskThatHasNotRegisteredYet) {
  InitRequest init = small_init();
  init.set_training_tasks(2);
  InitReply init_rep;
  ASSERT_TRUE(stub_->Init(ctx().get(), init, &init_rep).ok());
  RegisterRequest reg;
  reg.set_task("worker:0");
  RegisterReply reg_rep;
  ASSERT_TRUE(stub_->Register(ctx().get(), reg, &reg_rep).ok());
  std::atomic<bool> returned{false};
  grpc::Status shutdown;
  std::thread chief([&] {
    ShutdownRequest req;
    req.set_task("worker:0");
    ShutdownReply rep;
    shutdown = stub_->Shutdown(ctx().get(), req, &rep);
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  EXPECT_FALSE(returned) << "shut down before worker:1 registered";
  reg.set_task("worker:1");
  const grpc::Status late = stub_->Register(ctx().get(), reg, &reg_rep);
  EXPECT_TRUE(late.ok()) << late.error_message();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(returned) << "shut down before worker:1 said Done";
  DoneRequest done;
  done.set_task("worker:1");
  DoneReply done_rep;
  EXPECT_TRUE(stub_->Done(ctx().get(), done, &done_rep).ok());
  chief.join();
  EXPECT_TRUE(shutdown.ok()) << shutdown.error_message();
}

TEST_F(PsProtocol, ASecondPsOnTheSameAddressFailsNamingIt) {
  const std::string tf = ps_tf_config(address_);
  const testing::CommandResult second = testing::run_command(
      "env TF_CONFIG='" + tf + "' DTRAIN_CLUSTER_TOKEN=secret-token-0123456789 " +
          testing::dtrain_binary() + " train --distributed ps --data-dir " + dir_.path().string(),
      60);
  EXPECT_NE(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("cannot listen on " + address_), std::string::npos) << second.output;
}

// A push's reply is sent from the shard's own memory. A reply that is not sent yet (here: one
// kept) must keep the values of its step while later pushes update the shard, in sync and async
// mode: the update goes to a copy then.
TEST(PsService, ARepliesValuesStayThoseOfItsStepWhileLaterPushesApply) {
  for (const bool sync : {true, false}) {
    SCOPED_TRACE(sync ? "sync" : "async");
    ServerOptions o;
    o.sync = sync;
    o.known_tasks = {"chief:0", "worker:0"};
    o.peer_timeout_seconds = 0;
    o.min_wait_seconds = 0;
    const std::unique_ptr<PsService> service = make_service(o);
    grpc::ServerContext ctx;
    const InitRequest init = small_init();  // values 1, 2, 3, 4; SGD at rate 0.5; one task
    InitReply init_rep;
    ASSERT_TRUE(service->Init(&ctx, &init, &init_rep).ok());
    RegisterRequest reg;
    reg.set_task("worker:0");
    RegisterReply reg_rep;
    ASSERT_TRUE(service->Register(&ctx, &reg, &reg_rep).ok());
    std::vector<grpc::ByteBuffer> replies;
    for (int step = 1; step <= 3; ++step) {
      PushRequest push;
      push.set_task("worker:0");
      push.set_step(step);
      push.set_pulled_version(step - 1);
      push.mutable_gradient()->set_begin(0);
      push.mutable_gradient()->set_values(floats({1, 1, 1, 1}));
      const std::string bytes = push.SerializeAsString();
      grpc::Slice slice(bytes.data(), bytes.size());
      grpc::ByteBuffer reply;
      ASSERT_TRUE(service->push(&ctx, grpc::ByteBuffer(&slice, 1), &reply).ok()) << step;
      replies.push_back(reply);
    }
    for (size_t k = 0; k < replies.size(); ++k) {
      PushReply head;
      WireSlice values;
      ASSERT_EQ(parse_with_slice(replies[k], PushReply::kSliceFieldNumber, &head, &values), "");
      EXPECT_EQ(head.version(), static_cast<int64_t>(k + 1));
      std::vector<float> got(4);
      values.decode(got.data(), false);
      const float moved = 0.5f * static_cast<float>(k + 1);
      EXPECT_EQ(got, std::vector<float>({1 - moved, 2 - moved, 3 - moved, 4 - moved}))
          << "the reply of step " << k + 1;
    }
  }
}

TEST(PsSecurity, NoTokenRefusesToStartUnlessInsecure) {
  testing::TempDir dir;
  const std::string address = "127.0.0.1:" + std::to_string(free_loopback_ports(1)[0]);
  const std::string tf = ps_tf_config(address);
  const std::string cmd = "env -u DTRAIN_CLUSTER_TOKEN TF_CONFIG='" + tf + "' " +
                          testing::dtrain_binary() + " train --distributed ps --data-dir " +
                          dir.path().string();
  testing::CommandResult r = testing::run_command(cmd, 60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("DTRAIN_CLUSTER_TOKEN is not set"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--insecure"), std::string::npos) << r.output;
  r = testing::run_command("env DTRAIN_CLUSTER_TOKEN=short TF_CONFIG='" + tf + "' " +
                               testing::dtrain_binary() + " train --distributed ps --data-dir " +
                               dir.path().string(),
                           60);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("16 to 4096"), std::string::npos) << r.output;
  // With --insecure it serves (and says so); a Shutdown without a token then stops it.
  std::thread server([&] { r = testing::run_command(cmd + " --insecure --peer-timeout 5", 60); });
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  ASSERT_TRUE(
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)));
  grpc::ClientContext ctx;
  ShutdownRequest req;
  req.set_task("worker:0");
  ShutdownReply rep;
  ParameterServer::NewStub(channel)->Shutdown(&ctx, req, &rep);
  server.join();
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("--insecure: no DTRAIN_CLUSTER_TOKEN"), std::string::npos) << r.output;
}

/// The process's peak resident memory in MiB (VmHWM).
int64_t peak_rss_mib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) / 1024;
  }
  return -1;
}

/// Four concurrent 250 MiB pushes without the token, each on a connection of its own; returns
/// their status codes.
std::vector<grpc::StatusCode> intrude(const std::string& address) {
  PushRequest push;
  push.set_task("worker:0");
  push.set_step(1);
  push.mutable_gradient()->mutable_values()->assign(size_t{250} << 20, '\x01');
  std::vector<std::thread> intruders;
  std::vector<grpc::StatusCode> codes(4);
  for (int i = 0; i < 4; ++i) {
    intruders.emplace_back([&, i] {
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(-1);
      args.SetInt("dtrain.intruder", i);  // distinct arguments: a connection of its own
      auto ch = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      PushReply rep;
      codes[static_cast<size_t>(i)] =
          ParameterServer::NewStub(ch)->Push(&ctx, push, &rep).error_code();
    });
  }
  for (auto& t : intruders) t.join();
  return codes;
}

// Bodies arrive before a handler can check the token, so the ps bounds the memory all calls
// together may hold (gRPC's resource quota): 64 MiB until the chief's small authenticated
// announcement of the layout, then what the cluster's own traffic needs (a 4-value model here:
// the 64 MiB floor). Four concurrent unauthenticated 250 MiB pushes are refused, before Init and
// after, without the ps holding them.
TEST(PsSecurity, UnauthenticatedLargePushesDoNotGrowTheServer) {
  for (const bool initialised : {true, false}) {
    testing::TempDir dir;
    const std::string address = "127.0.0.1:" + std::to_string(free_loopback_ports(1)[0]);
    const std::string tf = ps_tf_config(address);
    ProcessOptions p;
    p.argv = {testing::dtrain_binary(), "train", "--distributed", "ps", "--data-dir",
              dir.path().string()};
    p.env = {{"TF_CONFIG", tf}, {"DTRAIN_CLUSTER_TOKEN", "secret-token-0123456789"}};
    Subprocess ps(std::move(p));
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    ASSERT_TRUE(
        channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(30)));
    if (initialised) {
      const InitRequest init = small_init();
      grpc::ClientContext ctx;
      ctx.AddMetadata("dtrain-token", "secret-token-0123456789");
      InitReply rep;
      ASSERT_TRUE(ParameterServer::NewStub(channel)->Init(&ctx, init, &rep).ok());
    }
    const int64_t before = peak_rss_mib(ps.pid());
    // Refused by the token check, by the quota, or by the connection the quota closed.
    for (auto code : intrude(address)) {
      EXPECT_TRUE(code == grpc::StatusCode::UNAUTHENTICATED ||
                  code == grpc::StatusCode::RESOURCE_EXHAUSTED ||
                  code == grpc::StatusCode::UNAVAILABLE)
          << "status " << code;
    }
    const int64_t after = peak_rss_mib(ps.pid());
    std::cerr << (initialised ? "after Init" : "before Init") << ": ps peak RSS " << before
              << " MiB, " << after << " MiB after four 250 MiB pushes\n";
    EXPECT_LT(after - before, 200)
        << "the ps held the bodies (" << before << " -> " << after << " MiB)";
    ps.stop(std::chrono::seconds(5));
  }
}

}  // namespace
}  // namespace dtrain::distributed::ps
