#include "config_errors.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <optional>

namespace ferry::ferryd {
namespace {

std::string trimmed(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\r");
  if (first == std::string::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r") - first + 1);
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The key `key` was probably meant as: the same with dashes for underscores, or one a typo or two away.
std::optional<std::string> resembling(const std::string& key, const std::vector<std::string>& keys) {
  std::string dashed = key;
  std::transform(dashed.begin(), dashed.end(), dashed.begin(),
                 [](char c) { return c == '_' ? '-' : static_cast<char>(std::tolower(c)); });
  std::optional<std::string> best;
  std::size_t best_distance = 3;
  for (const auto& k : keys) {
    const std::size_t d = edit_distance(dashed, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace

std::string explain_config_error(const std::string& path, const CLI::App& app,
                                 const std::vector<std::string>& command_line,
                                 const std::string& cli11_message) {
  std::vector<std::string> keys;  // the long flag names, in --help order
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_lnames().empty() || opt == app.get_config_ptr() || opt == app.get_help_ptr() ||
        opt->get_lnames().front() == "check-config")
      continue;
    if (opt->get_lnames().front() == "version") continue;
    keys.push_back(opt->get_lnames().front());
  }
  std::ifstream in(path);
  if (!in) return {};
  const std::string where = "--config " + path + " line ";
  std::string line;
  int number = 0;
  bool in_list = false;  // inside a list that goes on over several lines
  while (std::getline(in, line)) {
    ++number;
    const std::string text = trimmed(line);
    if (in_list) {
      in_list = text.find(']') == std::string::npos;
      continue;
    }
    if (text.empty() || text[0] == '#' || text[0] == ';') continue;
    if (text[0] == '[')
      return fmt::format(
          "{}{}: section {} is not accepted: ferryd's config file has no sections; write every key at the "
          "top level as key = value",
          where, number, text);
    const auto eq = text.find('=');
    if (eq == std::string::npos)
      return fmt::format("{}{}: '{}' is not key = value (keys: {})", where, number, text,
                         fmt::join(keys, ", "));
    std::string key = trimmed(text.substr(0, eq));
    if (key.size() >= 2 && (key.front() == '"' || key.front() == '\'') && key.back() == key.front())
      key = key.substr(1, key.size() - 2);
    const std::string value = trimmed(text.substr(eq + 1));
    in_list = !value.empty() && value[0] == '[' && value.find(']') == std::string::npos;
    if (std::find(keys.begin(), keys.end(), key) == keys.end()) {
      const auto like = resembling(key, keys);
      return fmt::format("{}{}: unknown key '{}'{}; the keys are the flag names without '--': {}", where,
                         number, key, like ? " (did you mean '" + *like + "'?)" : std::string(),
                         fmt::join(keys, ", "));
    }
    // A value CLI11 refused: its message names the flag ("--lease-ms: Value 5 not in range 100 to
    // 86400000"), unless the command line gave that flag and the file's value was never read.
    const std::string flag = "--" + key;
    const bool on_command_line =
        std::any_of(command_line.begin(), command_line.end(),
                    [&](const std::string& a) { return a == flag || a.rfind(flag + "=", 0) == 0; });
    if (!on_command_line && cli11_message.rfind(flag + ":", 0) == 0)
      return fmt::format("{}{}: {} = {}: {}", where, number, key, value,
                         trimmed(cli11_message.substr(flag.size() + 1)));
  }
  return {};
}

}  // namespace ferry::ferryd
