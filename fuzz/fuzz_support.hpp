#pragma once
// What the fuzz targets share: a failed invariant aborts with a message (libFuzzer then keeps the input),
// fuzz input cut into frames, and a temporary directory.

#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::fuzz {

/// Aborts (a crash libFuzzer reports and saves the input of) when `ok` is false.
inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "ferry fuzz: invariant violated: %s\n", what);
  std::abort();
}

/// The fuzz input as text.
inline std::string_view bytes_of(const std::uint8_t* data, std::size_t size) noexcept {
  return {reinterpret_cast<const char*>(data), size};
}

/// Cuts `input` into frames, each a length prefix and that many bytes: one byte 0..254, or 255 and then
/// two bytes big-endian. The last frame takes what is left when the input ends inside it.
inline std::vector<std::string_view> split_frames(std::string_view input, std::size_t max_frames) {
  std::vector<std::string_view> frames;
  std::size_t at = 0;
  while (at < input.size() && frames.size() < max_frames) {
    std::size_t n = static_cast<unsigned char>(input[at++]);
    if (n == 255) {
      n = 0;
      for (int i = 0; i < 2 && at < input.size(); ++i) n = (n << 8) | static_cast<unsigned char>(input[at++]);
    }
    n = std::min(n, input.size() - at);
    frames.push_back(input.substr(at, n));
    at += n;
  }
  return frames;
}

/// The inverse of split_frames(), for writing seeds.
inline std::string join_frames(const std::vector<std::string>& frames) {
  std::string out;
  for (const auto& f : frames) {
    if (f.size() < 255) {
      out += static_cast<char>(f.size());
    } else {
      out += static_cast<char>(255);
      out += static_cast<char>(f.size() >> 8);
      out += static_cast<char>(f.size() & 0xff);
    }
    out += f.substr(0, 0xffff);
  }
  return out;
}

/// A directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class temp_dir {
 public:
  explicit temp_dir(const char* prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string pattern =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
    require(::mkdtemp(pattern.data()) != nullptr, "mkdtemp failed (is $TMPDIR writable?)");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace ferry::fuzz
