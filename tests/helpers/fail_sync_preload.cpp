// LD_PRELOAD shim for fault tests: fdatasync() and fsync() fail with EIO while the file named by
// $FERRY_TEST_FAIL_SYNC_IF exists, and behave normally otherwise. Lets a test make a running ferryd's disk
// "fail" at a moment it picks, without code for it in ferryd.
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace {

bool failing() {
  const char* flag = std::getenv("FERRY_TEST_FAIL_SYNC_IF");
  return flag != nullptr && ::access(flag, F_OK) == 0;
}

using sync_fn = int (*)(int);

sync_fn next(const char* name) {
  return reinterpret_cast<sync_fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int fdatasync(int fd) {
  if (failing()) {
    errno = EIO;
    return -1;
  }
  static const sync_fn real = next("fdatasync");
  return real(fd);
}

extern "C" int fsync(int fd) {
  if (failing()) {
    errno = EIO;
    return -1;
  }
  static const sync_fn real = next("fsync");
  return real(fd);
}
