#include "support/test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace ferry::test {
namespace fs = std::filesystem;
namespace {
// A child that exits early must not kill the test through SIGPIPE on its stdin.
const bool sigpipe_ignored = [] {
  ::signal(SIGPIPE, SIG_IGN);
  return true;
}();
}  // namespace

temp_dir::temp_dir(const std::string& prefix) {
  std::string pattern = (fs::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

temp_dir::~temp_dir() {
  std::error_code ec;
  fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
  fs::remove_all(path_, ec);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("bind() failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string free_tcp_endpoint() {
  return "tcp://127.0.0.1:" + std::to_string(free_port());
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= deadline) return condition();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string built_program(const std::string& relative) {
  return std::string(FERRY_BINARY_DIR) + "/" + relative;
}

child_process::child_process(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe2 failed");
  (void)sigpipe_ignored;
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  // Build the environment before fork: the child may only call async-signal-safe functions.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const auto eq = entry.find('=');
    if (eq != std::string::npos && env.count(entry.substr(0, eq))) continue;
    env_strings.push_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    ::dup2(in[0], 0);
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execve(args[0], args.data(), envp.data());
    const char msg[] = "exec failed\n";
    (void)!::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  stdin_ = in[1];
  stdout_ = out[0];
  stderr_ = err[0];
  ::fcntl(stdout_, F_SETFL, O_NONBLOCK);
  ::fcntl(stderr_, F_SETFL, O_NONBLOCK);
}

child_process::~child_process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(std::chrono::seconds(10));
  }
  for (int fd : {stdin_, stdout_, stderr_})
    if (fd >= 0) ::close(fd);
}

void child_process::write_stdin(const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(stdin_, data.data() + done, data.size() - done);
    if (n <= 0) throw std::runtime_error("write to child stdin failed");
    done += static_cast<std::size_t>(n);
  }
}

void child_process::close_stdin() {
  if (stdin_ >= 0) ::close(stdin_);
  stdin_ = -1;
}

void child_process::kill(int signal) {
  if (!status_) ::kill(pid_, signal);
}

void child_process::pump() {
  char buf[65536];
  for (auto [fd, sink] : {std::pair{stdout_, &out_}, std::pair{stderr_, &err_}}) {
    if (fd < 0) continue;
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) break;
      sink->append(buf, static_cast<std::size_t>(n));
    }
  }
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!status_) {
    pump();
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    pollfd fds[2] = {{stdout_, POLLIN, 0}, {stderr_, POLLIN, 0}};
    ::poll(fds, 2, 5);
  }
  pump();
  return status_;
}

bool child_process::running() {
  if (status_) return false;
  return !wait(std::chrono::milliseconds(0)).has_value();
}

const std::string& child_process::out() {
  pump();
  return out_;
}

const std::string& child_process::err() {
  pump();
  return err_;
}

bool child_process::wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pump();
    if (out_.find(text) != std::string::npos || err_.find(text) != std::string::npos) return true;
    if (!running() || std::chrono::steady_clock::now() >= deadline) {
      pump();
      return out_.find(text) != std::string::npos || err_.find(text) != std::string::npos;
    }
    pollfd fds[2] = {{stdout_, POLLIN, 0}, {stderr_, POLLIN, 0}};
    ::poll(fds, 2, 10);
  }
}

run_result run(std::vector<std::string> argv, const std::string& input, std::chrono::milliseconds timeout,
               std::map<std::string, std::string> env) {
  child_process child(std::move(argv), std::move(env));
  std::thread feeder([&] {
    try {
      child.write_stdin(input);
    } catch (...) {
    }
    child.close_stdin();
  });
  const auto code = child.wait(timeout);
  feeder.join();
  run_result r;
  r.code = code.value_or(-1);
  if (!code) child.kill(SIGKILL);
  r.out = child.out();
  r.err = child.err();
  return r;
}

}  // namespace ferry::test
