#pragma once
// ferryd's --config file, explained when CLI11 refuses it: CLI11 says "INI was not able to parse lease_ms"
// for a misspelt key and "INI was not able to parse extra.++" for a section, naming neither the line nor
// what is accepted. This reads the file only after CLI11 failed, so it adds no rule of its own.

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace ferry::ferryd {

/// The error CLI11 reported (`cli11_message`), said with the file, the line and what is accepted: a
/// [section] (ferryd's file has none), an unknown key (with the key it resembles and the list of keys), a
/// line that is not `key = value`, or a value CLI11 refused (its message, which names the accepted range or
/// set, with the line). Empty when the file does not explain the error: it was on the command line
/// (`command_line`: the arguments after the program name, whose flags win over the file's keys).
std::string explain_config_error(const std::string& path, const CLI::App& app,
                                 const std::vector<std::string>& command_line,
                                 const std::string& cli11_message);

}  // namespace ferry::ferryd
