// Free TCP ports on the loopback interface (local clusters, tests).
#pragma once

#include <vector>

namespace dtrain::distributed {

/// `n` distinct ports the kernel picks on 127.0.0.1. The sockets stay open until all are chosen,
/// so no two are equal; another process may still take one before the caller binds it.
/// Throws IoError if no port can be had.
std::vector<int> free_loopback_ports(int n);

}  // namespace dtrain::distributed
