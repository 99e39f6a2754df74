#include "distributed/ps/ps_common.h"

#include "core/errors.h"
#include "core/file_util.h"

#include <malloc.h>

#include <algorithm>
#include <stdexcept>

namespace dtrain::distributed::ps {

const char* push_method() {
  static const std::string name = "/" + std::string(ParameterServer::service_full_name()) + "/Push";
  return name.c_str();
}

void retain_freed_memory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest; bigger blocks are mapped anyway
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

std::vector<std::pair<int64_t, int64_t>> partition(int64_t total, int parts) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t begin = 0;
  for (int p = 0; p < parts; ++p) {
    const int64_t len = total / parts + (p < total % parts ? 1 : 0);
    ranges.emplace_back(begin, begin + len);
    begin += len;
  }
  return ranges;
}

void to_slice(const torch::Tensor& values, int64_t begin, Slice* slice) {
  slice->set_begin(begin);
  slice->set_values(to_bytes(values));
}

void check_slice(const std::string& what, bool float16, int64_t begin, size_t bytes,
                 int64_t expected_begin, int64_t count) {
  const int64_t width = float16 ? 2 : 4;
  if (begin != expected_begin || bytes != static_cast<size_t>(count * width)) {
    throw std::invalid_argument(what + ": expected " + (float16 ? "float16" : "float32") +
                                " values for [" + std::to_string(expected_begin) + ", " +
                                std::to_string(expected_begin + count) + ") (" +
                                std::to_string(count * width) + " bytes), got begin " +
                                std::to_string(begin) + " and " + std::to_string(bytes) + " bytes");
  }
}

torch::Tensor view_slice(const Slice& slice, int64_t begin, int64_t count,
                         const std::string& what) {
  check_slice(what, slice.float16(), slice.begin(), slice.values().size(), begin, count);
  return torch::from_blob(const_cast<char*>(slice.values().data()), {count},
                          slice.float16() ? torch::kHalf : torch::kFloat);
}

void copy_range(const NamedTensors& tensors, int64_t begin, int64_t end, Slice* slice) {
  slice->set_begin(begin);
  std::string* out = slice->mutable_values();
  out->clear();
  out->reserve(static_cast<size_t>(end - begin) * 4);
  for_each_part(
      tensors, begin, end, [&](const torch::Tensor& t, int64_t first, int64_t n, int64_t) {
        const torch::Tensor part =
            t.detach().reshape(-1).narrow(0, first, n).to(torch::kCPU, torch::kFloat).contiguous();
        out->append(static_cast<const char*>(part.data_ptr()), static_cast<size_t>(n) * 4);
      });
}

void write_range(const torch::Tensor& values, int64_t begin, const NamedTensors& tensors) {
  torch::NoGradGuard no_grad;
  for_each_part(tensors, begin, begin + values.numel(),
                [&](const torch::Tensor& t, int64_t first, int64_t n, int64_t at) {
                  t.view(-1).narrow(0, first, n).copy_(values.narrow(0, at, n));
                });
}

std::string to_bytes(const torch::Tensor& values) {
  torch::Tensor c = values.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * 4);
}

torch::Tensor from_bytes(const std::string& bytes, int64_t count, const std::string& what) {
  if (bytes.size() != static_cast<size_t>(count) * 4) {
    throw std::invalid_argument(what + ": expected " + std::to_string(count) +
                                " float32 values, got " + std::to_string(bytes.size()) + " bytes");
  }
  return torch::from_blob(const_cast<char*>(bytes.data()), {count}, torch::kFloat).clone();
}

namespace {

std::string read_pem(const std::string& flag, const std::string& file) {
  if (file.empty()) return "";
  std::string text;
  try {
    text = read_file(file, 1u << 20);
  } catch (const Error& e) {
    throw ConfigError(flag + " " + file + ": " + e.what());
  }
  if (text.find("-----BEGIN ") == std::string::npos) {
    throw ConfigError(flag + " " + file + ": not a PEM file (no -----BEGIN line)");
  }
  return text;
}

}  // namespace

TlsMaterial TlsMaterial::load(const std::string& cert_file, const std::string& key_file,
                              const std::string& ca_file) {
  if (cert_file.empty() != key_file.empty()) {
    throw ConfigError(cert_file.empty() ? "--tls-key needs --tls-cert"
                                        : "--tls-cert needs --tls-key");
  }
  return {read_pem("--tls-cert", cert_file), read_pem("--tls-key", key_file),
          read_pem("--tls-ca", ca_file)};
}

std::shared_ptr<grpc::ServerCredentials> server_credentials(const TlsMaterial& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.cert.empty()) {
    throw ConfigError("--tls-ca on a parameter server also needs --tls-cert and --tls-key");
  }
  grpc::SslServerCredentialsOptions o(
      tls.ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = tls.ca;
  o.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  return grpc::SslServerCredentials(o);
}

std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const TlsMaterial& tls) {
  if (!tls.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls.ca;
  o.pem_private_key = tls.key;
  o.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(o);
}

}  // namespace dtrain::distributed::ps
