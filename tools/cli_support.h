// What every psgd tool's command line shares: parse errors on one line, validators that state
// their rule in words, and the guard that turns a tool's exceptions into one-line errors.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace psgd::tools {

// CLI11's parse errors as one line: "psgd-train: --lr: must be a positive number, got 'abc'
// (see --help)", where CLI11 would add a second line and print validators' internals.
void one_line_errors(CLI::App& app, const char* tool);

// Finite numbers above zero, or from zero up (NaN and infinities are refused).
CLI::Validator positive();
CLI::Validator non_negative();
// Finite numbers from `lowest` to `highest`, both included.
CLI::Validator in_range(double lowest, double highest);
// Weight or activation bits: 2..8, or 32 for float.
CLI::Validator bit_width();
// CPU threads: 0 for every core, else 1..1024.
CLI::Validator thread_count();

// A tool's work after parsing: body()'s exit code, or 1 after a one-line error "tool: ...".
int run_tool(const char* tool, const std::function<int()>& body);

}  // namespace psgd::tools
