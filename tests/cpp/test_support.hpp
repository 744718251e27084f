// hakobu tests — helpers shared by the test programs.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "platform/os.hpp"

extern char** environ;  // NOLINT

namespace hakobu::test {

/// The domain this test run uses.
inline std::string domain() {
  const char* env = std::getenv("HAKOBU_DOMAIN");  // NOLINT(concurrency-mt-unsafe)
  return env != nullptr ? env : "";
}

/// Files of `domain` in /dev/shm and on hugetlbfs mounts.
inline std::vector<std::string> files_of_domain(const std::string& domain) {
  std::vector<std::string> out;
  const std::string prefix = "hakobu:" + domain + ":";
  std::vector<std::string> directories = hakobu::platform::hugetlbfs_mounts();
  directories.emplace_back("/dev/shm");
  for (const auto& directory : directories) {
    for (const auto& entry : std::filesystem::directory_iterator(directory)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix, 0) == 0) out.push_back(directory + "/" + name);
    }
  }
  return out;
}

/// True once `pid` has exited (a zombie waiting for waitpid) or is gone.
inline bool has_exited(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] == 'Z' || line[paren + 2] == 'X';
}

/// A unique queue name for the current test.
inline std::string unique_name(const std::string& stem) {
  static int counter = 0;
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}

/// A separately started process (posix_spawn of an executable), killed on
/// destruction if still running.
class Process {
 public:
  Process(const std::string& path, const std::vector<std::string>& args) {
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(path.c_str()));                          // NOLINT
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));  // NOLINT
    argv.push_back(nullptr);
    if (::posix_spawn(&pid_, path.c_str(), nullptr, nullptr, argv.data(), environ) != 0) pid_ = -1;
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid_ > 0 && !done_) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  void kill(int signal) const { ::kill(pid_, signal); }

  /// Waits for exit; kills the process and reports -1 if the watchdog expires
  /// first (a deadlock, not a slow machine: the watchdog is generous).
  int wait(std::chrono::seconds watchdog = std::chrono::seconds(120)) {
    const auto deadline = std::chrono::steady_clock::now() + watchdog;
    for (;;) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        done_ = true;
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
        return -1;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        done_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }

 private:
  pid_t pid_ = -1;
  bool done_ = false;
};

}  // namespace hakobu::test
