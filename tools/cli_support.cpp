#include "tools/cli_support.h"

#include <cstdio>
#include <optional>
#include <string>

#include "engine/check.h"
#include "engine/parse_number.h"

namespace psgd::tools {
namespace {

CLI::Validator number_from(double lowest, bool lowest_allowed, const char* rule) {
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const std::optional<double> v = parse_finite_number(text);
        const bool ok = v && (lowest_allowed ? *v >= lowest : *v > lowest);
        return ok ? std::string() : std::string("must be ") + rule + ", got '" + text + "'";
      },
      lowest_allowed ? "NUMBER >= 0" : "NUMBER > 0");
}

}  // namespace

void one_line_errors(CLI::App& app, const char* tool) {
  app.failure_message([tool](const CLI::App*, const CLI::Error& e) {
    return std::string(tool) + ": " + e.what() + " (see --help)\n";
  });
}

CLI::Validator positive() {
  return number_from(0.0, false, "a positive number");
}

CLI::Validator non_negative() {
  return number_from(0.0, true, "a number from 0 up");
}

CLI::Validator in_range(double lowest, double highest) {
  const std::string rule =
      CLI::detail::to_string(lowest) + " to " + CLI::detail::to_string(highest);
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        const std::optional<double> v = parse_finite_number(text);
        const bool ok = v && *v >= lowest && *v <= highest;
        return ok ? std::string() : "must be a number from " + rule + ", got '" + text + "'";
      },
      "NUMBER in " + rule);
}

CLI::Validator bit_width() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<int64_t> b = parse_whole_number(text);
        const bool ok = b && ((*b >= 2 && *b <= 8) || *b == 32);
        return ok ? std::string() : "bits must be 2..8 or 32, got '" + text + "'";
      },
      "2..8|32");
}

CLI::Validator thread_count() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<int64_t> n = parse_whole_number(text);
        const bool ok = n && *n >= 0 && *n <= 1024;
        return ok ? std::string() : "must be 0 (every core) to 1024, got '" + text + "'";
      },
      "0..1024");
}

int run_tool(const char* tool, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", tool, user_message(e).c_str());
    return 1;
  }
}

}  // namespace psgd::tools
