#include <gtest/gtest.h>

#include "core/errors.h"
#include "core/file_util.h"
#include "data/fetch.h"
#include "data/idx.h"
#include "test_util.h"

namespace dtrain::data {
namespace {

using testing::TempDir;

TEST(Fetch, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Fetch, RefusesFilesWhoseChecksumIsWrong) {
  TempDir src, into;
  testing::write_bytes(src / "sub" / "train-images-idx3-ubyte", "not mnist");
  testing::write_bytes(src / "t10k-labels-idx1-ubyte.gz", gzip_compress("also not mnist"));
  testing::write_bytes(into / "train-labels-idx1-ubyte", "stale and wrong");
  FetchOptions o;
  o.into = into.path();
  o.from = src.path();
  o.use_npm = false;
  o.use_mirrors = false;
  try {
    fetch_mnist(o);
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("SHA-256"), std::string::npos) << e.what();
  }
  for (const char* name :
       {"train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-labels-idx1-ubyte"}) {
    EXPECT_FALSE(std::filesystem::exists(into / name)) << name << " must not be left behind";
  }
  // Nothing else left behind either (no temp files).
  EXPECT_TRUE(std::filesystem::is_empty(into.path()));
}

TEST(Fetch, NoSourceIsAnIoError) {
  TempDir into;
  FetchOptions o;
  o.into = into.path();
  o.use_npm = false;
  o.use_mirrors = false;
  EXPECT_THROW(fetch_mnist(o), IoError);
}

TEST(Fetch, FromLocalGzipFolderVerifiesAndDecompresses) {
  DTRAIN_REQUIRE_MNIST(mnist);
  TempDir src, into;
  for (const char* name : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    testing::write_bytes(src / "nested" / (std::string(name) + ".gz"),
                         gzip_compress(read_file(std::filesystem::path(mnist) / name)));
  }
  FetchOptions o;
  o.into = into.path();
  o.from = src.path();
  o.use_npm = false;
  o.use_mirrors = false;
  fetch_mnist(o);
  EXPECT_EQ(sha256_hex(read_file(into / "t10k-labels-idx1-ubyte")),
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2");
  EXPECT_EQ(std::filesystem::file_size(into / "train-images-idx3-ubyte"), 47040016u);
}

}  // namespace
}  // namespace dtrain::data
