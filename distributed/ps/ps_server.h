// The parameter server task: holds one range of the model's flat parameter vector, runs the
// optimizer on it, and serves workers over gRPC.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "distributed/ps/ps.grpc.pb.h"

namespace dtrain::distributed::ps {

struct ServerOptions {
  std::string task = "ps:0";              ///< this task's name, for messages
  std::string address;                    ///< host:port from TF_CONFIG; bound exactly (not 0.0.0.0)
  std::string token;                      ///< DTRAIN_CLUSTER_TOKEN; empty: no authentication
  std::set<std::string> known_tasks;      ///< "chief:0", "worker:1", ...; calls from others refused
  std::string tls_cert, tls_key, tls_ca;  ///< PEM files (--tls-*); none: plain TCP
  bool sync = true;                       ///< --ps-mode sync (average one push per task) or async
  double peer_timeout_seconds = 30;       ///< a registered task silent this long is declared dead
  double init_timeout_seconds = 300;      ///< how long to wait for the chief's Init
  double min_wait_seconds = 10;  ///< a blocked call waits max(2 x peer timeout, this) at most
  int64_t max_message_bytes = int64_t{256} << 20;
};

/// Serves until the chief sends Shutdown (returns 0, or 128 + signal after a stop signal). Throws
/// CommError if the address cannot be bound, the chief never initialises the server, or a
/// training task falls silent (its peers' pending calls fail with a message naming it).
int serve(const ServerOptions& options);

/// The service serve() runs. Push, the step's call, is a method on byte buffers (ps_wire.h): a
/// push's gradient is read from the receive buffers, and the replies are sent from one copy of
/// the updated values.
class PsService : public ParameterServer::WithGenericMethod_Push<ParameterServer::Service> {
 public:
  /// Push: `request` is a serialized PushRequest, `reply` gets the serialized PushReply.
  virtual grpc::Status push(grpc::ServerContextBase* ctx, const grpc::ByteBuffer& request,
                            grpc::ByteBuffer* reply) = 0;
};

/// The service serve() runs, to drive its handlers in process (the fuzz target): every request
/// is validated there, whatever the transport.
std::unique_ptr<PsService> make_service(const ServerOptions& options);

}  // namespace dtrain::distributed::ps
