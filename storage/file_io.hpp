#pragma once
// The system calls through which storage writes and syncs, in one place: every fdatasync and directory
// fsync goes through sync_data() / sync_directory(), so a test can make them fail (set_sync_hook) and
// every caller must handle the result.
//
// Error style of the storage layer: set-up and recovery (opening, creating, scanning, renaming) throw
// ferry::error with a message that names the file; writes and syncs on the commit path return 0 or an
// errno value and never throw.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ferry::storage {

/// Replaces fdatasync/fsync for tests: called with the descriptor about to be synced; returns 0 to let the
/// real sync run, or an errno value to report instead (the real sync is then skipped).
using sync_hook = int (*)(int fd);
/// Installs `hook` (nullptr removes it). Thread safety: safe from any thread; tests only.
void set_sync_hook(sync_hook hook) noexcept;

/// fdatasync(fd). Returns 0 or an errno value.
[[nodiscard]] int sync_data(int fd) noexcept;

/// fsync of a directory, so a new, renamed or removed entry in it is durable. Throws ferry::error.
void sync_directory(const std::filesystem::path& dir);
/// Same, returning 0 or an errno value instead of throwing.
[[nodiscard]] int try_sync_directory(const std::filesystem::path& dir) noexcept;

/// Creates `dir` and every missing parent, then fsyncs the parent of each directory it created (and of
/// `dir`), so a power loss cannot drop an entry on the path. Throws ferry::error.
void create_directories_durably(const std::filesystem::path& dir);

/// pwrite of all `size` bytes at `offset`. Returns 0 or an errno value (ENOSPC for a zero-length write).
[[nodiscard]] int write_all(int fd, const char* data, std::size_t size, std::uint64_t offset) noexcept;
/// write() of all `size` bytes at the file position. Returns 0 or an errno value; `written` says how many
/// bytes made it.
[[nodiscard]] int append_all(int fd, const char* data, std::size_t size, std::size_t& written) noexcept;
/// pread of up to `size` bytes at `offset`; returns the bytes read (fewer at the end of the file) or -1
/// with errno set.
[[nodiscard]] long read_at(int fd, char* data, std::size_t size, std::uint64_t offset) noexcept;

/// strerror(err), thread-safe.
[[nodiscard]] std::string errno_text(int err);

}  // namespace ferry::storage
