#pragma once
// Flag parsing shared by the test helper programs: "--name value" and "--name" switches. An unknown or
// malformed flag ends the program with exit code 2, so a typo in a test shows up as a failure, not as a
// silently different run.

#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

namespace ferry::test_helpers {

class args {
 public:
  /// `values` are the flags that take a value, `switches` those that do not.
  args(int argc, char** argv, const std::set<std::string>& values, const std::set<std::string>& switches) {
    for (int i = 1; i < argc; ++i) {
      const std::string flag = argv[i];
      if (switches.count(flag) != 0) {
        given_[flag] = "1";
      } else if (values.count(flag) != 0 && i + 1 < argc) {
        given_[flag] = argv[++i];
      } else {
        std::fprintf(stderr, "%s: unknown flag or missing value: %s\n", argv[0], flag.c_str());
        std::exit(2);
      }
    }
  }

  [[nodiscard]] bool has(const std::string& flag) const { return given_.count(flag) != 0; }

  [[nodiscard]] std::string text(const std::string& flag, const std::string& fallback = {}) const {
    const auto it = given_.find(flag);
    return it == given_.end() ? fallback : it->second;
  }

  [[nodiscard]] std::uint64_t number(const std::string& flag, std::uint64_t fallback) const {
    const auto it = given_.find(flag);
    if (it == given_.end()) return fallback;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0') {
      std::fprintf(stderr, "%s needs a number, not '%s'\n", flag.c_str(), it->second.c_str());
      std::exit(2);
    }
    return v;
  }

  /// Exits with code 2 unless `flag` was given.
  [[nodiscard]] std::string required(const std::string& flag) const {
    if (!has(flag)) {
      std::fprintf(stderr, "%s is required\n", flag.c_str());
      std::exit(2);
    }
    return text(flag);
  }

 private:
  std::map<std::string, std::string> given_;
};

}  // namespace ferry::test_helpers
