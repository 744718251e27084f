// hakobu tests — shared main.
//
// Every run works in its own domain (HAKOBU_DOMAIN=t<pid>, inherited by the
// peer processes tests start), and fails if any file of that domain is left in
// /dev/shm when all tests are done.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "test_support.hpp"

namespace {

class ShmLeakCheck : public ::testing::Environment {
 public:
  void TearDown() override {
    const auto left = hakobu::test::files_of_domain(hakobu::test::domain());
    EXPECT_TRUE(left.empty()) << "files left in /dev/shm: " << ::testing::PrintToString(left);
  }
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (std::getenv("HAKOBU_DOMAIN") == nullptr) {  // NOLINT(concurrency-mt-unsafe): before any thread
    const std::string domain = "t" + std::to_string(::getpid());
    ::setenv("HAKOBU_DOMAIN", domain.c_str(), 1);  // NOLINT(concurrency-mt-unsafe)
  }
  ::testing::AddGlobalTestEnvironment(new ShmLeakCheck);  // NOLINT(cppcoreguidelines-owning-memory): gtest owns it
  return RUN_ALL_TESTS();
}
