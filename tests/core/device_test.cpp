#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>

#include "core/device.h"
#include "core/errors.h"

namespace dtrain {
namespace {

/// Sets (or, with nullopt, unsets) a variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, std::optional<std::string> value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value->c_str(), 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_, old_->c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ChooseDevice, CpuWhenAskedOrWhenNoGpuIsVisible) {
  EXPECT_EQ(choose_device("cpu", 4, {1, 2, ""}), torch::Device(torch::kCPU));
  EXPECT_EQ(choose_device("auto", 0, {1, 2, ""}), torch::Device(torch::kCPU));
}

TEST(ChooseDevice, TheGpuOfTheLocalRank) {
  EXPECT_EQ(choose_device("auto", 4, {3, 4, ""}), torch::Device(torch::kCUDA, 3));
  EXPECT_EQ(choose_device("cuda", 2, {0, 1, ""}), torch::Device(torch::kCUDA, 0));
}

TEST(ChooseDevice, MoreLocalRanksThanGpusNamesBothCounts) {
  try {
    choose_device("auto", 2, {0, 3, "OMPI_COMM_WORLD_LOCAL_RANK/OMPI_COMM_WORLD_LOCAL_SIZE"});
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("3 processes on this host"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("2 visible GPUs"), std::string::npos);
    EXPECT_EQ(e.exit_code(), 2);
  }
  EXPECT_THROW(choose_device("cuda", 0, {0, 1, ""}), ConfigError);
  EXPECT_THROW(choose_device("gpu", 1, {0, 1, ""}), ConfigError);
}

TEST(LocalPlacement, FromEachLaunchersVariables) {
  ScopedEnv a("OMPI_COMM_WORLD_LOCAL_RANK", std::nullopt),
      b("OMPI_COMM_WORLD_LOCAL_SIZE", std::nullopt), c("MPI_LOCALRANKID", std::nullopt),
      d("MPI_LOCALNRANKS", std::nullopt), e("LOCAL_RANK", std::nullopt),
      f("LOCAL_WORLD_SIZE", std::nullopt);
  LocalPlacement none = local_placement_from_environment();
  EXPECT_EQ(none.rank, 0);
  EXPECT_EQ(none.size, 1);
  {
    ScopedEnv r("LOCAL_RANK", "1"), s("LOCAL_WORLD_SIZE", "4");
    const LocalPlacement p = local_placement_from_environment();
    EXPECT_EQ(p.rank, 1);
    EXPECT_EQ(p.size, 4);
  }
  {
    ScopedEnv r("OMPI_COMM_WORLD_LOCAL_RANK", "2"), s("OMPI_COMM_WORLD_LOCAL_SIZE", "3");
    EXPECT_EQ(local_placement_from_environment().rank, 2);
  }
  for (const auto& [rank, size] : std::vector<std::pair<std::string, std::string>>{
           {"x", "2"}, {"-1", "2"}, {"2", "2"}, {"0", "0"}, {"1", ""}, {"99999999999", "2"}}) {
    ScopedEnv r("MPI_LOCALRANKID", rank), s("MPI_LOCALNRANKS", size);
    EXPECT_THROW(local_placement_from_environment(), ConfigError) << rank << "/" << size;
  }
  ScopedEnv only("LOCAL_RANK", "0");
  EXPECT_THROW(local_placement_from_environment(), ConfigError);
}

}  // namespace
}  // namespace dtrain
