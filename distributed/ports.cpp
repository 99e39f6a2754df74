#include "distributed/ports.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/errors.h"

namespace dtrain::distributed {

std::vector<int> free_loopback_ports(int n) {
  std::vector<int> fds, ports;
  auto close_all = [&] {
    for (int fd : fds) ::close(fd);
  };
  for (int i = 0; i < n; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const int e = errno;
      close_all();
      throw IoError(std::string("cannot open a socket to pick a free port: ") + std::strerror(e));
    }
    fds.push_back(fd);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      const int e = errno;
      close_all();
      throw IoError(std::string("cannot pick a free port on 127.0.0.1: ") + std::strerror(e));
    }
    ports.push_back(ntohs(addr.sin_port));
  }
  close_all();
  return ports;
}

}  // namespace dtrain::distributed
