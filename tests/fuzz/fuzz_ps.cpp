// The parameter server's request handlers, driven in process with a sequence of requests from
// arbitrary bytes: each record is one byte choosing the RPC, two bytes of length (little
// endian) and that many bytes of the serialized request, which the handler gets if it parses (as
// gRPC would hand it over; Push, a method on raw bytes, gets them as they are). A handler must
// answer every request with a status: an exception, a crash or a sanitizer report is a finding.
// Waits end at once (no other task will come).
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>

#include "distributed/ps/ps_server.h"

namespace ps = dtrain::distributed::ps;

namespace {

template <typename Req, typename Rep, typename Handler>
void handle(const uint8_t* data, size_t size, Handler handler) {
  Req req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return;
  Rep rep;
  grpc::ServerContext ctx;
  handler(&ctx, &req, &rep);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  for (const bool sync : {true, false}) {
    ps::ServerOptions o;
    o.sync = sync;
    o.known_tasks = {"chief:0", "worker:0", "worker:1"};
    o.peer_timeout_seconds = 0;
    o.min_wait_seconds = 0;
    const std::unique_ptr<ps::PsService> service = ps::make_service(o);
    auto* s = service.get();
    for (size_t at = 0, records = 0; at + 3 <= size && records < 32; ++records) {
      const uint8_t rpc = data[at];
      const size_t len = std::min<size_t>(data[at + 1] | (data[at + 2] << 8), size - at - 3);
      const uint8_t* body = data + at + 3;
      at += 3 + len;
      switch (rpc % 9) {
        case 0:
          handle<ps::InitRequest, ps::InitReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Init(c, q, r); });
          break;
        case 1:
          handle<ps::RegisterRequest, ps::RegisterReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Register(c, q, r); });
          break;
        case 2:
          handle<ps::PullRequest, ps::PullReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Pull(c, q, r); });
          break;
        case 3: {  // Push reads its request itself, as gRPC hands it over (raw bytes)
          grpc::Slice bytes(body, len);
          grpc::ServerContext ctx;
          grpc::ByteBuffer reply;
          s->push(&ctx, grpc::ByteBuffer(&bytes, 1), &reply);
          break;
        }
        case 4:
          handle<ps::ReduceRequest, ps::ReduceReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Reduce(c, q, r); });
          break;
        case 5:
          handle<ps::StateRequest, ps::StateReply>(
              body, len, [&](auto c, auto q, auto r) { return s->GetState(c, q, r); });
          break;
        case 6:
          handle<ps::DoneRequest, ps::DoneReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Done(c, q, r); });
          break;
        case 7:
          handle<ps::HeartbeatRequest, ps::HeartbeatReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Heartbeat(c, q, r); });
          break;
        default:
          handle<ps::ShutdownRequest, ps::ShutdownReply>(
              body, len, [&](auto c, auto q, auto r) { return s->Shutdown(c, q, r); });
          break;
      }
    }
  }
  return 0;
}
